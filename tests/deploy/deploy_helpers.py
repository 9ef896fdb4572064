"""Shared helpers of the deploy tests (kept out of conftest.py so test modules can import
them by a name no other test directory uses)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "csi-linstor"
FULL_VALUES = Path(__file__).resolve().parent / "values-full.yaml"
ENDPOINT = "http://linstor-controller.linstor.svc:3370"
# helm built with `go install` has no default cluster version (it would assume 1.20)
KUBE_VERSION = "1.34.0"


def find_helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    for d in (os.environ.get("HELM_BIN_DIR"), str(Path.home() / "go" / "bin")):
        if d and (Path(d) / "helm").is_file():
            return str(Path(d) / "helm")
    return None


class HelmResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.objects: list[dict] = (
            [d for d in yaml.safe_load_all(proc.stdout) if d] if proc.returncode == 0 else []
        )

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str, component: str | None = None) -> dict:
        objs = self.of_kind(kind)
        if component is not None:
            objs = [
                o
                for o in objs
                if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
            ]
        assert len(objs) == 1, f"expected one {kind} ({component}), got {len(objs)}"
        return objs[0]


RenderFn = Callable[..., HelmResult]

"""Fixtures for the deploy tests: find helm and render the chart with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.prerequisites import require

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_helpers import (  # noqa: E402
    CHART,
    ENDPOINT,
    FULL_VALUES,
    KUBE_VERSION,
    HelmResult,
    RenderFn,
    find_helm,
)


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    require(path is not None,
            "helm not found on PATH or in ~/go/bin: run .ci/deploy-checks.sh, which installs it")
    return path


@pytest.fixture(scope="session")
def render(helm: str) -> RenderFn:
    cache: dict[tuple, HelmResult] = {}

    def _render(
        *args: str, endpoint: bool = True, values_files: tuple[Path, ...] = ()
    ) -> HelmResult:
        cmd = [
            helm,
            "template",
            "csi-linstor",
            str(CHART),
            "-n",
            "linstor",
            "--kube-version",
            KUBE_VERSION,
        ]
        for f in values_files:
            cmd += ["-f", str(f)]
        if endpoint:
            cmd += ["--set", f"linstor.endpoint={ENDPOINT}"]
        cmd += list(args)
        key = tuple(cmd)
        if key not in cache:
            cache[key] = HelmResult(
                subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            )
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def default_render(render: RenderFn) -> HelmResult:
    r = render()
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="session")
def full_render(render: RenderFn) -> HelmResult:
    r = render(endpoint=False, values_files=(FULL_VALUES,))
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="session", params=["default", "full"])
def any_render(
    request: pytest.FixtureRequest, default_render: HelmResult, full_render: HelmResult
) -> HelmResult:
    return default_render if request.param == "default" else full_render

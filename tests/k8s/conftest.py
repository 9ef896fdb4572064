"""Fixtures: the Kubernetes tools (built by tests/k8s/build-tools.sh, which scripts/test.sh runs
before pytest so that a cold build is not inside a test's timeout), and one control plane with
the chart's CSI deployment per LINSTOR backend: the simulator (3 nodes) and, for what needs no
DRBD, the real LINSTOR 1.33.3 of ../shared/linstor-server (1 node, storage layer only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.k8s.cluster import (
    REPO,
    CsiDeployment,
    KubeCluster,
    Processes,
    node_infos,
)
from tests.prerequisites import require

require(os.geteuid() == 0, "the Kubernetes suite needs root (the simulator's loop devices)")
require(shutil.which("openssl") is not None, "the Kubernetes suite needs openssl (its PKI)")
require(Path(os.environ.get("HELM", str(Path.home() / "go" / "bin" / "helm"))).exists()
        or shutil.which("helm") is not None, "the Kubernetes suite needs helm")


def _tools() -> tuple[Path, Path] | None:
    out = subprocess.run(["bash", str(REPO / "tests" / "k8s" / "build-tools.sh"), "--no-build"],
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        return None
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    return bin_dir, bin_dir.parent / "crds"


@pytest.fixture(scope="session")
def k8s_tools() -> tuple[Path, Path]:
    tools = _tools()
    require(tools is not None, "the Kubernetes tools are not built: run tests/k8s/build-tools.sh "
                               "(scripts/test.sh does)")
    assert tools is not None
    return tools


@dataclass
class Kube:
    """One control plane + the chart's CSI deployment against one LINSTOR."""

    backend: str
    cluster: KubeCluster
    csi: CsiDeployment
    linstor_url: str
    nodes: list[str]

    def linstor(self, path: str, **params: Any) -> Any:
        r = requests.get(self.linstor_url + path, params=params or None, timeout=30)
        r.raise_for_status()
        return r.json()

    def rds(self) -> list[str]:
        return sorted(rd["name"] for rd in self.linstor("/v1/resource-definitions"))

    def diskful(self, rd: str) -> dict[str, str]:
        """node -> storage pool of the volume's diskful replicas."""
        return {r["node_name"]: r["volumes"][0].get("storage_pool_name", "")
                for r in self.linstor("/v1/view/resources", resources=rd)
                if "DISKLESS" not in (r.get("flags") or [])}

    def resources(self, rd: str) -> dict[str, list[str]]:
        return {r["node_name"]: list(r.get("flags") or [])
                for r in self.linstor("/v1/view/resources", resources=rd)}


def _start(backend: str, work: Path, tools: tuple[Path, Path], linstor_url: str,
           nodes: list[str]) -> tuple[KubeCluster, CsiDeployment]:
    bin_dir, crds = tools
    infos = node_infos(linstor_url, nodes, work)
    cluster = KubeCluster(work / "kube", bin_dir)
    (work / "kube").mkdir()
    try:
        cluster.start()
        csi = CsiDeployment(cluster, linstor_url, infos, crds,
                            values=["groupSnapshots.enabled=true", "consistencyGroups=true"]).start()
    except BaseException:
        cluster.stop()
        raise
    return cluster, csi


@pytest.fixture(scope="module")
def sim_kube(k8s_tools: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Kube]:
    work = tmp_path_factory.mktemp("k8ssim")
    procs = Processes(work)
    sim = subprocess.Popen(
        [sys.executable, "-m", "csi_linstor.cli", "sim", "--listen", "127.0.0.1:0",
         "--nodes", "3", "--device-dir", str(work / "dev"), "--state-dir", str(work / "state")],
        stdout=subprocess.PIPE, stderr=open(work / "sim.log", "wb"), cwd=REPO)
    assert sim.stdout is not None
    url = sim.stdout.readline().decode().strip()
    assert url.startswith("http://"), f"simulator did not print its URL: {url!r}"
    nodes = ["node-1", "node-2", "node-3"]
    cluster, csi = _start("sim", work, k8s_tools, url, nodes)
    try:
        yield Kube("sim", cluster, csi, url, nodes)
    finally:
        csi.stop()
        cluster.stop()
        sim.terminate()
        sim.wait(30)
        procs.stop()


@pytest.fixture(scope="module")
def real_kube(k8s_tools: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
              real_linstor_session: Any) -> Iterator[Kube]:
    """On the session's one real LINSTOR (tests/conftest.py): two satellites on one host
    would share /var/lib/linstor.d/loop_device_mapping."""
    from tests.real_linstor import NODE

    real = real_linstor_session
    real.reset()
    work = tmp_path_factory.mktemp("k8sreal")
    cluster, csi = _start("real", work, k8s_tools, real.url, [NODE])
    try:
        yield Kube("real", cluster, csi, real.url, [NODE])
    finally:
        csi.stop()
        cluster.stop()
        real.reset()  # the stories leave a Retained volume and pending claims behind

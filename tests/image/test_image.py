"""The container image, built from the unchanged Dockerfile (tests/image/build.sh, with buildah),
checked for what a cluster relies on, and run: csi-sanity with the controller service from the
image and the node service on the host.

buildah runs containers here with `--isolation chroot` (podman/crun cannot: the sandbox refuses
their setrlimit calls). That isolation has no PID namespace, so "PID 1 is tini" is checked on the
image's entrypoint, and the container shares the host's network (the simulator on 127.0.0.1 is
reachable). The node service stays on the host: it formats and mounts, which a chroot-isolated
container cannot do to the host's mount table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prerequisites import require
from tests.sanity import run_csi_sanity

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

require(os.geteuid() == 0, "building and running the image needs root")
require(shutil.which("buildah") is not None and shutil.which("debootstrap") is not None,
        "the image tests need buildah and debootstrap (scripts/install-deps.sh --test)")


def _buildah(*args: str, timeout: float = 120) -> str:
    out = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout,
                         check=False)
    assert out.returncode == 0, f"buildah {' '.join(args)}: {out.stderr.strip()}"
    return out.stdout


@pytest.fixture(scope="module")
def image() -> str:
    out = subprocess.run(["bash", str(HERE / "build.sh")], capture_output=True, text=True,
                         timeout=1200, check=False)
    assert out.returncode == 0, f"image build failed:\n{out.stderr[-4000:]}"
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def container(image: str) -> Iterator[str]:
    ctr = _buildah("from", image).strip()
    try:
        yield ctr
    finally:
        _buildah("rm", ctr)


def test_image_contents(image: str, container: str) -> None:
    cfg = json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    assert cfg["Entrypoint"] == ["/usr/bin/tini", "--", "csi-linstor"], cfg["Entrypoint"]
    user = cfg.get("User", "")
    assert user and user.split(":")[0] not in ("", "0", "root"), f"default user {user!r}"
    script = (
        "id -u; "
        "for t in tini mkfs.ext4 mkfs.xfs xfs_growfs resize2fs blkid findmnt drbdsetup; do "
        "  command -v $t >/dev/null || echo MISSING $t; done; "
        "for t in gcc cc c++ g++ make; do command -v $t >/dev/null && echo COMPILER $t; done; "
        "python3 -c 'import kubernetes' || echo MISSING kubernetes-client; "
        "csi-linstor doctor --help >/dev/null || echo MISSING csi-linstor-doctor; "
        "/usr/bin/tini -- csi-linstor --version")
    out = _buildah("run", "--isolation", "chroot", container, "--", "sh", "-c", script)
    lines = out.split()
    assert lines[0] == "1000", f"runs as uid {lines[0]}"
    assert "MISSING" not in out, out
    assert "COMPILER" not in out, out
    assert re.search(r"\d+\.\d+\.\d+", out), f"csi-linstor --version under tini: {out!r}"
    size = next(line.split(" ", 1)[1] for line in _buildah(
        "images", "--format", "{{.Name}}:{{.Tag}} {{.Size}}").splitlines()
        if line.startswith(image))
    print(f"image {image}: {size}")


def test_csi_sanity_with_the_controller_from_the_image(container: str, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdout=open(tmp_path / f"{name}.log", "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                             start_new_session=True)
        procs.append(p)
        return p

    try:
        sim = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.cli", "sim", "--listen", "127.0.0.1:0",
             "--nodes", "3", "--device-dir", str(tmp_path / "dev"),
             "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=open(tmp_path / "sim.log", "wb"), cwd=REPO,
            start_new_session=True)
        procs.append(sim)
        assert sim.stdout is not None
        url = sim.stdout.readline().decode().strip()
        assert url.startswith("http://"), url
        sockdir = tmp_path / "ctrl"
        sockdir.mkdir()
        os.chown(sockdir, 1000, 1000)  # the image's user creates its socket there
        spawn("controller", [
            "buildah", "run", "--isolation", "chroot", "-v", f"{sockdir}:/csi", container, "--",
            "/usr/bin/tini", "--", "csi-linstor", "serve", "--mode", "controller",
            "--linstor-endpoint", url, "--csi-endpoint", "unix:///csi/csi.sock"])
        node_sock = tmp_path / "node.sock"
        drbdsetup = f"{sys.executable} -m csi_linstor.sim.drbdsetup --sim-url {url} --node node-1"
        # The node half on the host. csi-sanity reads the plugin capabilities from the node
        # endpoint's Identity service, and a node-mode plugin rightly does not advertise the
        # controller service; so that csi-sanity calls ControllerExpandVolume (on the image's
        # controller) before NodeExpandVolume, the host process serves mode "all". Every
        # controller RPC still goes to the image (--csi.controllerendpoint).
        spawn("node", [sys.executable, "-m", "csi_linstor.cli", "serve", "--mode", "all",
                       "--node", "node-1", "--linstor-endpoint", url,
                       "--csi-endpoint", f"unix://{node_sock}", "--kubelet-dir", str(tmp_path),
                       "--drbdsetup", drbdsetup])
        deadline = time.monotonic() + 60
        while not ((sockdir / "csi.sock").exists() and node_sock.exists()):
            dead = [p.args for p in procs if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, (
                f"services did not start ({dead}):\n"
                + (tmp_path / "controller.log").read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        r = run_csi_sanity(
            tmp_path / "sanity", node_sock, "--csi.testvolumesize=1073741824",
            f"--csi.testvolumeparameters={HERE / 'params.yaml'}",
            f"--csi.testvolumemutableparameters={REPO / 'tests/conformance/mutable-params.yaml'}",
            controller_endpoint=sockdir / "csi.sock")
        print(f"csi-sanity, controller from the image: {r.passed} passed, {r.failed} failed, "
              f"{r.skipped} skipped in {r.seconds:.0f}s")
        assert r.passed > 80
        log = (tmp_path / "controller.log").read_text(errors="replace")
        assert "serving CSI on unix:///csi/csi.sock" in log, log[-2000:]
        # the controller RPCs really went to the image, not to the host's process
        host = (tmp_path / "node.log").read_text(errors="replace")
        assert " CreateVolume OK" in log and " CreateVolume OK" not in host
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)

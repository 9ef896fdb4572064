"""csi-sanity against the driver on the real LINSTOR 1.33.3 of ../shared/linstor-server.

The simulator run (test_csi_sanity.py) shows the driver against every DRBD behaviour we model;
this run shows it against the real controller's REST API: one satellite, storage layer only (no
DRBD kernel module here), FILE_THIN on a reflink XFS pool, the classes in real/params.yaml.
Afterwards LINSTOR must hold no resource definition and no snapshot: csi-sanity deletes what it
creates, and the driver must have deleted everything in LINSTOR.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_linstor import NODE, RealLinstor, require_real_linstor

HERE = Path(__file__).resolve().parent
CSI_SANITY_DEFAULT = Path.home() / "go" / "bin" / "csi-sanity"
SUMMARY = re.compile(r"(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Specs we skip on real LINSTOR, each with its reason. Empty: the whole suite runs.
SKIPS: dict[str, str] = {}

require_real_linstor()


@pytest.fixture(scope="module")
def linstor(real_linstor_session: RealLinstor) -> Iterator[RealLinstor]:
    """The session's real LINSTOR (tests/conftest.py), empty for csi-sanity and left empty."""
    real_linstor_session.reset()
    yield real_linstor_session
    left = real_linstor_session.leftovers()
    real_linstor_session.reset()
    assert not left, f"csi-sanity left in real LINSTOR: {left}"


@pytest.fixture(scope="module")
def driver(linstor: RealLinstor, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("sanityreal")
    sock = base / "csi.sock"
    log = open(base / "driver.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "csi_linstor.cli", "serve", "--linstor-endpoint", linstor.url,
         "--node", NODE, "--csi-endpoint", f"unix://{sock}",
         "--kubelet-dir", str(base), "--log-level", "info"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("driver did not start:\n" + (base / "driver.log").read_text()[-3000:])
        time.sleep(0.1)
    yield base, sock
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(60) == 0, "driver did not exit cleanly on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.mark.sanity
def test_csi_sanity_on_real_linstor(driver: tuple[Path, Path], linstor: RealLinstor) -> None:
    import shutil

    csi_sanity = shutil.which("csi-sanity") or str(CSI_SANITY_DEFAULT)
    base, sock = driver
    work = base / "sanity"
    work.mkdir()
    argv = [
        csi_sanity,
        f"--csi.endpoint={sock}",
        f"--csi.stagingdir={work}/staging",
        f"--csi.mountdir={work}/mount",
        "--csi.testvolumesize=67108864",
        f"--csi.testvolumeparameters={HERE / 'real' / 'params.yaml'}",
        f"--csi.testvolumemutableparameters={HERE / 'real' / 'mutable-params.yaml'}",
        "--ginkgo.no-color",
        "--ginkgo.timeout=20m",
    ]
    if SKIPS:
        argv.append("--ginkgo.skip=" + "|".join(SKIPS))
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    out = ANSI.sub("", proc.stdout + proc.stderr)
    (base / "csi-sanity-real.log").write_text(out)
    match = SUMMARY.search(out)
    assert match, f"no csi-sanity summary (exit {proc.returncode}):\n{out[-4000:]}"
    passed, failed, _pending, skipped = map(int, match.groups())
    print(f"csi-sanity on real LINSTOR 1.33.3: {passed} passed, {failed} failed, "
          f"{skipped} skipped in {time.monotonic() - started:.0f}s")
    failures = "\n".join(line for line in out.splitlines() if "[FAIL]" in line)
    assert failed == 0 and proc.returncode == 0, (
        f"csi-sanity on real LINSTOR: {failed} failed\n{failures}\n"
        f"driver log: {base / 'driver.log'}\n{out[-6000:]}"
    )
    assert passed > 0, "csi-sanity ran no spec"
    assert linstor.rds() == [] and linstor.snapshots() == [], (
        f"left in LINSTOR: {linstor.rds()} {linstor.snapshots()}")

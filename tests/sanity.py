"""Running csi-sanity and the driver process it tests: one place for the tests that do
(tests/conformance on the simulator and on real LINSTOR, tests/image with the image's
controller)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CSI_SANITY = shutil.which("csi-sanity") or str(Path.home() / "go" / "bin" / "csi-sanity")
SUMMARY = re.compile(r"(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class SanityResult:
    passed: int
    failed: int
    skipped: int
    seconds: float
    output: str


def run_csi_sanity(work: Path, endpoint: Path, *extra: str, log_name: str = "csi-sanity.log",
                   controller_endpoint: Path | None = None) -> SanityResult:
    """csi-sanity with staging and mount dirs under ``work`` (created here) and ``extra`` flags;
    fails the test on a missing binary, no summary, or any failed spec (listed)."""
    if not Path(CSI_SANITY).exists():
        pytest.fail(f"csi-sanity not installed at {CSI_SANITY}: run ./scripts/install-deps.sh "
                    "--test")
    work.mkdir(parents=True, exist_ok=True)
    argv = [CSI_SANITY, f"--csi.endpoint={endpoint}", f"--csi.stagingdir={work}/staging",
            f"--csi.mountdir={work}/mount", "--ginkgo.no-color", "--ginkgo.timeout=20m", *extra]
    if controller_endpoint is not None:
        argv.append(f"--csi.controllerendpoint={controller_endpoint}")
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    out = ANSI.sub("", proc.stdout + proc.stderr)
    (work / log_name).write_text(out)
    match = SUMMARY.search(out)
    assert match, f"no csi-sanity summary (exit {proc.returncode}):\n{out[-4000:]}"
    passed, failed, _pending, skipped = map(int, match.groups())
    result = SanityResult(passed, failed, skipped, time.monotonic() - started, out)
    failures = "\n".join(line for line in out.splitlines() if "[FAIL]" in line)
    assert failed == 0 and proc.returncode == 0, (
        f"csi-sanity: {failed} failed\n{failures}\nlog: {work / log_name}\n{out[-6000:]}")
    assert passed > 0, "csi-sanity ran no spec"
    return result


@dataclass
class Served:
    """A `csi-linstor serve` process: its socket, log and process."""

    sock: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def embedded_url(self, seconds: float = 30) -> str:
        """The URL of the embedded simulator, as the driver logs it at start."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            found = re.search(r"embedded LINSTOR simulator at (http://\S+)",
                              self.log.read_text(errors="replace"))
            if found:
                return found.group(1)
            time.sleep(0.05)
        raise AssertionError("the driver log does not name the embedded simulator's URL")


@contextmanager
def served(base: Path, *args: str) -> Iterator[Served]:
    """`csi-linstor serve ARGS --csi-endpoint unix://BASE/csi.sock`, its log in
    BASE/driver.log; yields once the socket is served; SIGTERM must end it cleanly."""
    sock = base / "csi.sock"
    log = base / "driver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.cli", "serve", *args,
             "--csi-endpoint", f"unix://{sock}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("driver did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    try:
        yield Served(sock, log, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(60) == 0, "driver did not exit cleanly on SIGTERM"
        finally:
            if proc.poll() is None:
                proc.kill()


@contextmanager
def driver_process(base: Path, *args: str) -> Iterator[Path]:
    """As ``served``, yielding the socket."""
    with served(base, *args) as s:
        yield s.sock

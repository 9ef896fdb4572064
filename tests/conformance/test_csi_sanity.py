"""csi-sanity (kubernetes-csi/csi-test) against the driver serving on the embedded simulator.

The driver runs as a separate process exactly as the README's run command starts it; csi-sanity
drives it over the unix socket. Each area is one test so a failure says which service broke.
Skipped specs are listed in SKIPS below, each with its reason (none may be skipped silently).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CSI_SANITY = shutil.which("csi-sanity") or str(Path.home() / "go" / "bin" / "csi-sanity")

# One run of the whole suite: Identity, Controller, Node, snapshots, ModifyVolume, GroupController.
AREAS = {
    "all": r".*",
}

# Specs we tell csi-sanity to skip, with the reason (regex → why). Empty: nothing is skipped by us.
# csi-sanity itself skips specs for capabilities the driver does not advertise; those are listed,
# each with its reason, in docs/conformance.md, and this test fails if that list changes unnoticed.
SKIPS: dict[str, str] = {}
EXPECTED_SELF_SKIPS = 9

SUMMARY = re.compile(r"(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory):
    if not os.path.exists(CSI_SANITY):
        pytest.fail(f"csi-sanity not installed at {CSI_SANITY}: run ./scripts/install-deps.sh --test")
    base = tmp_path_factory.mktemp("sanity")
    sock = base / "csi.sock"
    log = open(base / "driver.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "csi_linstor.cli", "serve", "--linstor-endpoint", "embedded",
         "--csi-endpoint", f"unix://{sock}", "--sim-device-dir", str(base / "dev"),
         "--sim-state-dir", str(base / "state"), "--log-level", "info",
         # csi-sanity's staging and mount dirs (under base) must be inside the kubelet dir
         "--kubelet-dir", str(base)],
        stdout=log, stderr=subprocess.STDOUT,
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
    leftovers = list((base / "dev").glob("drbd*")) if (base / "dev").exists() else []
    assert not leftovers, f"device nodes left behind: {leftovers}"


@pytest.mark.sanity
@pytest.mark.parametrize("area", sorted(AREAS))
def test_csi_sanity(area: str, driver) -> None:
    base, sock = driver
    work = base / area
    work.mkdir()
    argv = [
        CSI_SANITY,
        f"--csi.endpoint={sock}",
        f"--csi.stagingdir={work}/staging",
        f"--csi.mountdir={work}/mount",
        "--csi.testvolumesize=1073741824",
        f"--ginkgo.focus={AREAS[area]}",
        "--ginkgo.no-color",
        "--ginkgo.timeout=20m",
    ]
    if (HERE / "params.yaml").exists():
        argv.append(f"--csi.testvolumeparameters={HERE / 'params.yaml'}")
    if (HERE / "mutable-params.yaml").exists():
        argv.append(f"--csi.testvolumemutableparameters={HERE / 'mutable-params.yaml'}")
    if SKIPS:
        argv.append("--ginkgo.skip=" + "|".join(SKIPS))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    out = ANSI.sub("", proc.stdout + proc.stderr)
    (base / f"csi-sanity-{area}.log").write_text(out)
    match = SUMMARY.search(out)
    assert match, f"no csi-sanity summary (exit {proc.returncode}):\n{out[-4000:]}"
    passed, failed, _pending, _skipped = map(int, match.groups())
    failures = "\n".join(line for line in out.splitlines() if "[FAIL]" in line)
    assert failed == 0 and proc.returncode == 0, (
        f"csi-sanity {area}: {failed} failed\n{failures}\n"
        f"driver log: {base / 'driver.log'}\n{out[-6000:]}"
    )
    assert passed > 0, f"csi-sanity {area} ran no spec"
    assert _skipped == EXPECTED_SELF_SKIPS, (
        f"csi-sanity skipped {_skipped} specs, docs/conformance.md argues {EXPECTED_SELF_SKIPS}: "
        "a capability changed; update the document and this number"
    )


@pytest.mark.sanity
def test_every_request_and_reply_of_the_run_matches_linstors_openapi(driver) -> None:
    """After the sanity runs: the embedded simulator's record of request bodies (what the driver
    sent) and of its replies (what the driver had to parse) vs the REST spec, strictly."""
    import requests

    from tests.contract.replies import reply_violations
    from tests.contract.requests import request_violations
    from tests.contract.schema import require_spec

    require_spec()
    base, _sock = driver
    match = re.search(r"embedded LINSTOR simulator at (http://\S+)",
                      (base / "driver.log").read_text())
    assert match, "driver log does not name the embedded simulator's URL"
    recorded = requests.get(match.group(1) + "/sim/requests", timeout=10).json()
    checked, problems = request_violations(recorded)
    assert not problems, "\n".join(problems[:30])
    assert checked > 0, "the simulator recorded no request body: nothing was checked"
    replies = requests.get(match.group(1) + "/sim/replies", timeout=30).json()
    served = requests.get(match.group(1) + "/sim/stats", timeout=10).json()["total"]
    checked, problems = reply_violations(
        [(r["method"], r["route"], r["status"], r["body"]) for r in replies])
    assert not problems, "\n".join(problems[:30])
    assert len(replies) >= served > 100, f"{len(replies)} replies recorded of {served} served"
    assert checked == len([r for r in replies if r["body"] is not None])

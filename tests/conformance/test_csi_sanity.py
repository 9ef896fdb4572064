"""csi-sanity (kubernetes-csi/csi-test) against the driver serving on the embedded simulator.

The driver runs as a separate process exactly as the README's run command starts it; csi-sanity
drives it over the unix socket. Each area is one test so a failure says which service broke.
Skipped specs are listed in SKIPS below, each with its reason (none may be skipped silently).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sanity import driver_process, run_csi_sanity

HERE = Path(__file__).resolve().parent

# One run of the whole suite: Identity, Controller, Node, snapshots, ModifyVolume, GroupController.
AREAS = {
    "all": r".*",
}

# Specs we tell csi-sanity to skip, with the reason (regex → why). Empty: nothing is skipped by us.
# csi-sanity itself skips specs for capabilities the driver does not advertise; those are listed,
# each with its reason, in docs/conformance.md, and this test fails if that list changes unnoticed.
SKIPS: dict[str, str] = {}
# The 7 left are specs for RPCs and capabilities that are not in CSI 1.12 (docs/conformance.md).
EXPECTED_SELF_SKIPS = 7
# The attach limit the driver enforces (and NodeGetInfo reports) for the attach-limit spec: small,
# so csi-sanity can fill a node and see the next publish refused.
ATTACH_LIMIT = 4

@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("sanity")
    # csi-sanity's staging and mount dirs (under base) must be inside the kubelet dir
    with driver_process(base, "--linstor-endpoint", "embedded", "--sim-device-dir",
                        str(base / "dev"), "--sim-state-dir", str(base / "state"),
                        "--log-level", "info", "--kubelet-dir", str(base),
                        "--max-volumes-per-node", str(ATTACH_LIMIT)) as sock:
        yield base, sock
    leftovers = list((base / "dev").glob("drbd*")) if (base / "dev").exists() else []
    assert not leftovers, f"device nodes left behind: {leftovers}"


@pytest.mark.sanity
@pytest.mark.parametrize("area", sorted(AREAS))
def test_csi_sanity(area: str, driver: tuple[Path, Path]) -> None:
    base, sock = driver
    extra = ["--csi.testvolumesize=1073741824", f"--ginkgo.focus={AREAS[area]}",
             f"--csi.testvolumeparameters={HERE / 'params.yaml'}",
             f"--csi.testvolumemutableparameters={HERE / 'mutable-params.yaml'}",
             "--csi.testnodevolumeattachlimit"]
    if SKIPS:
        extra.append("--ginkgo.skip=" + "|".join(SKIPS))
    result = run_csi_sanity(base / area, sock, *extra, log_name=f"csi-sanity-{area}.log")
    # issue 17: with the attach limit, PUBLISH_READONLY and LIST_VOLUMES_PUBLISHED_NODES every
    # spec csi-sanity has for CSI 1.12 runs
    assert result.passed == 95, f"csi-sanity passed {result.passed} specs, expected 95"
    assert result.skipped == EXPECTED_SELF_SKIPS, (
        f"csi-sanity skipped {result.skipped} specs, docs/conformance.md argues "
        f"{EXPECTED_SELF_SKIPS}: a capability changed; update the document and this number"
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

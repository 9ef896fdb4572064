"""csi-sanity against the driver on the real LINSTOR 1.33.3 of ../shared/linstor-server.

The simulator run (test_csi_sanity.py) shows the driver against every DRBD behaviour we model;
this run shows it against the real controller's REST API: one satellite, storage layer only (no
DRBD kernel module here), FILE_THIN on a reflink XFS pool, the classes in real/params.yaml.
Afterwards LINSTOR must hold no resource definition and no snapshot: csi-sanity deletes what it
creates, and the driver must have deleted everything in LINSTOR.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_linstor import NODE, RealLinstor, require_real_linstor
from tests.sanity import driver_process, run_csi_sanity

HERE = Path(__file__).resolve().parent

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
    with driver_process(base, "--linstor-endpoint", linstor.url, "--node", NODE,
                        "--kubelet-dir", str(base), "--log-level", "info",
                        # issue 17: the attach-limit spec fills the node up to this limit
                        "--max-volumes-per-node", "4") as sock:
        yield base, sock


@pytest.mark.sanity
def test_csi_sanity_on_real_linstor(driver: tuple[Path, Path], linstor: RealLinstor) -> None:
    base, sock = driver
    extra = ["--csi.testvolumesize=67108864",
             f"--csi.testvolumeparameters={HERE / 'real' / 'params.yaml'}",
             f"--csi.testvolumemutableparameters={HERE / 'real' / 'mutable-params.yaml'}",
             "--csi.testnodevolumeattachlimit"]
    if SKIPS:
        extra.append("--ginkgo.skip=" + "|".join(SKIPS))
    r = run_csi_sanity(base / "sanity", sock, *extra, log_name="csi-sanity-real.log")
    print(f"csi-sanity on real LINSTOR 1.33.3: {r.passed} passed, {r.failed} failed, "
          f"{r.skipped} skipped in {r.seconds:.0f}s")
    # as on the simulator: every spec for CSI 1.12 runs (docs/conformance.md lists the 7 skips)
    assert r.skipped == 7, f"csi-sanity skipped {r.skipped} specs on real LINSTOR, expected 7"
    assert linstor.rds() == [] and linstor.snapshots() == [], (
        f"left in LINSTOR: {linstor.rds()} {linstor.snapshots()}")

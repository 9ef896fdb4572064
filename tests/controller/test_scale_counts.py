"""What each RPC reads from LINSTOR does not grow with the cluster (issue 19): REST calls and
reply bytes per RPC, counted by the simulator, on a small cluster (25 volumes and snapshots:
more than two pages) and on one seeded with 1,000 (csi_linstor.sim.seed). Counts, never times.

ListVolumes and ListSnapshots pages (the first one, and one continued from its token) read by
offset from LINSTOR's sorted lists (mapping/listing.py), so a page costs the same at both sizes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.mapping import snapshot_index
from csi_linstor.mapping.topology import HOSTNAME_KEY
from csi_linstor.sim import SimConfig
from csi_linstor.sim.seed import replicate
from tests.controller.conftest import close_env, make_env, sim_only

GiB = 1 << 30
SEEDED = 1000
SMALL = 25  # volumes (with a snapshot each) at the small size: more than two pages of 10
MONITOR = "GET /v1/controller/version"
CAP = csi_pb2.VolumeCapability(
    mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
    access_mode=csi_pb2.VolumeCapability.AccessMode(
        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
CLASS = {"placementCount": "2"}

pytestmark = sim_only("seeds the simulator's state model and reads its request counters")


def _take(env: Any, last: list[tuple[dict[str, int], dict[str, int]]]) -> tuple[int, int]:
    calls, sent = env.sim.request_counts(), env.sim.reply_bytes()
    old_calls, old_sent = last[0]
    last[0] = (calls, sent)
    return (sum(v - old_calls.get(k, 0) for k, v in calls.items() if k != MONITOR),
            sum(v - old_sent.get(k, 0) for k, v in sent.items() if k != MONITOR))


def _measure(env: Any) -> dict[str, tuple[int, int]]:
    """Calls and bytes of one lifecycle, one page of each list, one GetCapacity."""
    last = [(env.sim.request_counts(), env.sim.reply_bytes())]
    out: dict[str, tuple[int, int]] = {}

    def call(method: str, request: Any, label: str | None = None) -> Any:
        _take(env, last)
        reply = getattr(env.ctl, method)(request, timeout=60)
        out[label or method] = _take(env, last)
        return reply

    c = csi_pb2
    vol = call("CreateVolume", c.CreateVolumeRequest(
        name=f"pvc-{uuid.uuid4()}", capacity_range=c.CapacityRange(required_bytes=GiB),
        volume_capabilities=[CAP], parameters=CLASS)).volume
    replicas = {n.upper() for n in env.sim.controller.rds[vol.volume_id.upper()].resources}
    node = next(n for n in env.nodes if n.upper() not in replicas)  # a diskless attach
    call("ControllerPublishVolume", c.ControllerPublishVolumeRequest(
        volume_id=vol.volume_id, node_id=node, volume_capability=CAP,
        volume_context=vol.volume_context))
    call("ControllerUnpublishVolume", c.ControllerUnpublishVolumeRequest(
        volume_id=vol.volume_id, node_id=node))
    call("ControllerExpandVolume", c.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=c.CapacityRange(required_bytes=2 * GiB)))
    snap = call("CreateSnapshot", c.CreateSnapshotRequest(
        source_volume_id=vol.volume_id, name=f"snapshot-{uuid.uuid4()}")).snapshot
    call("DeleteSnapshot", c.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    call("DeleteVolume", c.DeleteVolumeRequest(volume_id=vol.volume_id))
    first = call("ListVolumes", c.ListVolumesRequest(max_entries=10))
    call("ListVolumes", c.ListVolumesRequest(max_entries=10, starting_token=first.next_token),
         "ListVolumes next page")
    first = call("ListSnapshots", c.ListSnapshotsRequest(max_entries=10))
    call("ListSnapshots", c.ListSnapshotsRequest(max_entries=10,
                                                 starting_token=first.next_token),
         "ListSnapshots next page")
    call("GetCapacity", c.GetCapacityRequest(
        volume_capabilities=[CAP], parameters=CLASS,
        accessible_topology=c.Topology(segments={HOSTNAME_KEY: env.nodes[0]})))
    return out


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[int, int]]]:
    tmp: Path = tmp_path_factory.mktemp("scale")
    env = make_env(tmp, sim_config=SimConfig(nodes=10))
    try:
        c = csi_pb2
        template = env.ctl.CreateVolume(c.CreateVolumeRequest(
            name=f"pvc-{uuid.uuid4()}", capacity_range=c.CapacityRange(required_bytes=GiB),
            volume_capabilities=[CAP], parameters=CLASS), timeout=60).volume
        env.ctl.CreateSnapshot(c.CreateSnapshotRequest(
            source_volume_id=template.volume_id, name=f"snapshot-{uuid.uuid4()}"), timeout=60)
        # the first CreateSnapshot started the one-time indexing of existing snapshots
        # (mapping/snapshot_index.py); both measurements are of the indexed path
        _await(lambda: snapshot_index.MARKER in env.sim.controller.kvs, "the snapshot index")
        # two pages of each list exist at the small size too: a page is compared with a page
        replicate(env.sim.controller, template.volume_id, SMALL)
        small = _measure(env)
        seeded = replicate(env.sim.controller, template.volume_id, SEEDED - SMALL, start=SMALL)
        assert len(seeded.volumes) == len(seeded.snapshots) == SEEDED - SMALL
        # the copies are volumes the driver sees as its own, with their snapshots
        listed = env.ctl.ListVolumes(c.ListVolumesRequest(), timeout=60)
        assert len(listed.entries) == SEEDED + 1
        snaps = env.ctl.ListSnapshots(c.ListSnapshotsRequest(
            source_volume_id=seeded.volumes[5]), timeout=60)
        assert [e.snapshot.source_volume_id for e in snaps.entries] == [seeded.volumes[5]]
        large = _measure(env)
        return {"small": small, "large": large}
    finally:
        close_env(env)


def _await(done: Any, what: str) -> None:
    end = time.monotonic() + 30
    while not done():
        assert time.monotonic() < end, f"{what} never completed"
        time.sleep(0.05)


@pytest.mark.parametrize("method", [
    "CreateVolume",
    "ControllerPublishVolume",
    "ControllerUnpublishVolume",
    "ControllerExpandVolume", "DeleteSnapshot", "DeleteVolume", "GetCapacity",
    "CreateSnapshot",
    "ListVolumes", "ListVolumes next page", "ListSnapshots", "ListSnapshots next page",
])
def test_rest_calls_and_bytes_do_not_grow_with_the_cluster(
        figures: dict[str, dict[str, tuple[int, int]]], method: str) -> None:
    small_calls, small_bytes = figures["small"][method]
    large_calls, large_bytes = figures["large"][method]
    assert small_calls >= 1, f"{method} made no REST call: the test would prove nothing"
    assert large_calls == small_calls, (method, small_calls, large_calls)
    # names and numbers of equal length: the same objects give the same bytes, give or take
    assert large_bytes <= small_bytes * 1.1 + 256, (method, small_bytes, large_bytes)

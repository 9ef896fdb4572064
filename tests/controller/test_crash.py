"""Crash convergence: a failure between any two REST calls of a create or delete, then a retry,
converges to the right state with no leaked resource definition, snapshot or resource group.

``drop`` applies the request in LINSTOR and then cuts the connection (the driver cannot know
whether it happened, as after a crash); ``fail`` answers 500 without applying it.
"""

from __future__ import annotations

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from tests.controller.conftest import GIB, create_req, sim_only

# The simulator drops or fails one chosen call: real LINSTOR has no such knob.
pytestmark = sim_only("fault injection: drops or fails one chosen REST call")


def top(node):
    return csi_pb2.Topology(segments={"linbit.com/hostname": node})


PLAIN = {"placementCount": "2"}
PREFERRED = dict(accessibility_requirements=csi_pb2.TopologyRequirement(
    requisite=[top("node-1"), top("node-2"), top("node-3")], preferred=[top("node-2")]))

CREATE_STEPS = [
    ("plain", PLAIN, {}, r"POST /v1/resource-groups/\{rg\}/spawn"),
    ("first", PLAIN, {}, r"POST /v1/resource-groups$"),
    ("preferred-spawn", PLAIN, PREFERRED, r"/spawn"),
    ("preferred-autoplace", PLAIN, PREFERRED, r"/autoplace"),
    ("preferred-marker", PLAIN, PREFERRED, r"PUT /v1/resource-definitions/\{rd\}$"),
    ("manual-resources", {"nodeList": "node-1 node-3"}, {},
     r"POST /v1/resource-definitions/\{rd\}/resources$"),
]


def _retry(fn, req, attempts=4):
    last = None
    for _ in range(attempts):
        try:
            return fn(req)
        except grpc.RpcError as err:
            last = err
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
                                  grpc.StatusCode.INTERNAL), err.details()
    raise AssertionError(f"no convergence: {last.code()} {last.details()}")


def _assert_clean(env, rgs_before):
    rds, snaps = env.leftovers()
    assert rds == [] and snaps == []
    # at most one resource group per StorageClass, none per volume
    assert len(env.rgs()) <= len(rgs_before) + 3


@pytest.mark.parametrize("mode", ["drop", "fail"])
@pytest.mark.parametrize("case,params,extra,route", CREATE_STEPS, ids=[c[0] for c in CREATE_STEPS])
def test_create_converges(env, mode, case, params, extra, route):
    rgs = env.rgs()
    (env.sim.drop_next if mode == "drop" else env.sim.fail_next)(1, route=route)
    req = create_req(f"pvc-crash-{case}", params=params, **extra)
    vol = _retry(env.ctl.CreateVolume, req).volume
    again = env.ctl.CreateVolume(req).volume
    assert again.volume_id == vol.volume_id
    listed = [e.volume.volume_id for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries]
    assert listed == [vol.volume_id]
    res = env.client.get(f"/v1/resource-definitions/{vol.volume_id}/resources",
                         deadline=_dl())
    assert len([r for r in res if "DISKLESS" not in (r.get("flags") or [])]) == 2
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    _assert_clean(env, rgs)


def _dl():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


RESTORE_STEPS = [
    r"POST /v1/resource-definitions$",
    r"snapshot-restore-volume-definition",
    r"snapshot-restore-resource",
    r"PUT /v1/resource-definitions/\{rd\}/volume-definitions",
    r"/autoplace",
    r"PUT /v1/resource-definitions/\{rd\}$",
]


@pytest.mark.parametrize("mode", ["drop", "fail"])
@pytest.mark.parametrize("route", RESTORE_STEPS)
def test_restore_converges(env, mode, route):
    rgs = env.rgs()
    env.ctl.CreateVolume(create_req("pvc-rsrc", params={"placementCount": "1"}))
    snap = env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name="snapshot-rs", source_volume_id="pvc-rsrc")).snapshot
    (env.sim.drop_next if mode == "drop" else env.sim.fail_next)(1, route=route)
    src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id=snap.snapshot_id))
    # restored into a larger volume: LINSTOR restores at the snapshot's size only, then it grows
    req = create_req("pvc-rdst", size=2 * GIB, params={"placementCount": "2"},
                     volume_content_source=src)
    vol = _retry(env.ctl.CreateVolume, req).volume
    assert vol.capacity_bytes == 2 * GIB
    assert env.ctl.CreateVolume(req).volume.capacity_bytes == 2 * GIB
    res = env.client.get("/v1/resource-definitions/pvc-rdst/resources", deadline=_dl())
    # two replicas, and LINSTOR's quorum tiebreaker on the third node (§9 C5)
    assert sorted("DISKLESS" in r.get("flags", []) for r in res) == [False, False, True]
    vd = env.client.get("/v1/resource-definitions/pvc-rdst/volume-definitions/0", deadline=_dl())
    assert vd["size_kib"] == 2 * GIB // 1024
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-rsrc"))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-rdst"))
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    _assert_clean(env, rgs)


CLONE_STEPS = [r"POST /v1/resource-definitions/\{rd\}/clone$", r"GET .*/clone/",
               r"PUT /v1/resource-definitions/\{rd\}/volume-definitions",
               r"PUT /v1/resource-definitions/\{rd\}$"]


# a pool LINSTOR cannot clone (FILE_THIN): the clone goes through a temporary snapshot
FALLBACK_STEPS = [r"POST /v1/resource-definitions/\{rd\}/clone$",
                  r"POST /v1/resource-definitions$",
                  r"POST /v1/resource-definitions/\{rd\}/snapshots$",
                  r"snapshot-restore-volume-definition", r"snapshot-restore-resource",
                  r"PUT /v1/resource-definitions/\{rd\}/volume-definitions",
                  r"DELETE /v1/resource-definitions/\{rd\}/snapshots/",
                  r"PUT /v1/resource-definitions/\{rd\}$"]


@pytest.mark.parametrize("mode", ["drop", "fail"])
@pytest.mark.parametrize("route", CLONE_STEPS)
def test_clone_converges(lvm_env, mode, route):
    _clone_converges(lvm_env, mode, route)


@pytest.mark.parametrize("mode", ["drop", "fail"])
@pytest.mark.parametrize("route", FALLBACK_STEPS)
def test_clone_through_a_snapshot_converges(env, mode, route):
    _clone_converges(env, mode, route)


def _clone_converges(env, mode, route):
    rgs = env.rgs()
    env.ctl.CreateVolume(create_req("pvc-csrc", params={"placementCount": "2"}))
    (env.sim.drop_next if mode == "drop" else env.sim.fail_next)(1, route=route)
    src = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-csrc"))
    req = create_req("pvc-cdst", size=2 * 1024 ** 3, params={"placementCount": "2"},
                     volume_content_source=src)
    vol = _retry(env.ctl.CreateVolume, req).volume
    assert vol.capacity_bytes == 2 * 1024 ** 3
    for rd in ("pvc-csrc", "pvc-cdst"):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    _assert_clean(env, rgs)


DELETE_STEPS = [r"DELETE /v1/resource-definitions/\{rd\}$",
                r"PUT /v1/resource-definitions/\{rd\}$",
                r"DELETE /v1/resource-definitions/\{rd\}/resources/",
                r"DELETE /v1/resource-definitions/\{rd\}/snapshots/"]


@pytest.mark.parametrize("mode", ["drop", "fail"])
@pytest.mark.parametrize("route", DELETE_STEPS)
def test_delete_with_snapshot_converges(env, mode, route):
    rgs = env.rgs()
    env.ctl.CreateVolume(create_req("pvc-del", params={"placementCount": "2"}))
    env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-del", node_id=_non_replica(env, "pvc-del"),
        volume_capability=create_req("x").volume_capabilities[0]))
    snap = env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name="snapshot-del", source_volume_id="pvc-del")).snapshot
    (env.sim.drop_next if mode == "drop" else env.sim.fail_next)(1, route=route)
    _retry(env.ctl.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id="pvc-del"))
    assert env.client.get("/v1/resource-definitions/pvc-del/resources", deadline=_dl()) == []
    _retry(env.ctl.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    _assert_clean(env, rgs)


def _non_replica(env, rd):
    """A node without a replica (it may hold the quorum tiebreaker, which publish converts)."""
    have = {r["node_name"] for r in env.client.get(f"/v1/resource-definitions/{rd}/resources",
                                                   deadline=_dl())
            if "DISKLESS" not in r.get("flags", [])}
    return next(n for n in ("node-1", "node-2", "node-3") if n not in have)

"""Snapshots, restore, clone, group snapshots and delete-with-snapshots, on the simulator and on
real LINSTOR (FILE_THIN on reflink XFS: LINSTOR cannot clone it, so clones go through a
temporary snapshot there)."""

from __future__ import annotations

import time

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.sim import SimConfig
from csi_linstor.sim.simulator import PoolSpec
from tests.controller.conftest import (
    GIB,
    backend_env,
    close_env,
    code_of,
    create_req,
    make_env,
    sim_only,
)
from tests.real_linstor import THIN_POOL

R2 = {"placementCount": "2"}


def snap_req(name, source, **kw):
    return csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=source, **kw)


def test_snapshot_lifecycle_and_idempotency(env):
    env.ctl.CreateVolume(create_req("pvc-s1", params=env.params(R2)))
    env.ctl.CreateVolume(create_req("pvc-s2", params=env.params(R2)))
    snap = env.ctl.CreateSnapshot(snap_req("snapshot-a", "pvc-s1")).snapshot
    assert snap.snapshot_id == "InCluster:///pvc-s1/snapshot-a"
    assert snap.ready_to_use and snap.size_bytes == GIB and snap.source_volume_id == "pvc-s1"
    assert snap.creation_time.seconds > 0
    again = env.ctl.CreateSnapshot(snap_req("snapshot-a", "pvc-s1")).snapshot
    assert again.snapshot_id == snap.snapshot_id and again.creation_time == snap.creation_time
    assert code_of(env.ctl.CreateSnapshot, snap_req("snapshot-a", "pvc-s2")) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert code_of(env.ctl.CreateSnapshot, snap_req("snapshot-b", "pvc-none")) == \
        grpc.StatusCode.NOT_FOUND
    odd = env.ctl.CreateSnapshot(snap_req("my snap", "pvc-s2")).snapshot
    assert odd.snapshot_id.startswith("InCluster:///pvc-s2/snapshot-")
    assert code_of(env.ctl.CreateSnapshot, snap_req(
        "snapshot-c", "pvc-s1", parameters={"snap.linstor.csi.linbit.com/type": "S3"})) == \
        grpc.StatusCode.INVALID_ARGUMENT
    listed = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert sorted(e.snapshot.snapshot_id for e in listed.entries) == \
        sorted([snap.snapshot_id, odd.snapshot_id])
    by_src = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(source_volume_id="pvc-s1"))
    assert [e.snapshot.snapshot_id for e in by_src.entries] == [snap.snapshot_id]
    by_id = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=odd.snapshot_id))
    assert [e.snapshot.snapshot_id for e in by_id.entries] == [odd.snapshot_id]
    page = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(max_entries=1))
    rest = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(starting_token=page.next_token))
    assert len(page.entries) == 1 and len(rest.entries) == 1
    assert code_of(env.ctl.ListSnapshots, csi_pb2.ListSnapshotsRequest(starting_token="x")) == \
        grpc.StatusCode.ABORTED
    assert env.ctl.GetSnapshot(csi_pb2.GetSnapshotRequest(
        snapshot_id=snap.snapshot_id)).snapshot.snapshot_id == snap.snapshot_id
    for sid in (snap.snapshot_id, snap.snapshot_id, odd.snapshot_id, "garbage", "InCluster:///a1/b1"):
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=sid))
    assert env.snapshots() == []
    _delete_volumes(env, "pvc-s1", "pvc-s2")


def _delete_volumes(env, *ids):
    for vid in ids:
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    assert env.leftovers() == ([], [])


def test_a_pool_that_cannot_snapshot_is_failed_precondition(request, backend, tmp_path):
    """A thick LVM pool on the simulator; on real LINSTOR the FILE_THIN pool on a filesystem
    without reflink (``thinpool``), where LINSTOR cannot take snapshots."""
    if backend == "sim":
        env = backend_env(request, backend, tmp_path,
                          sim_config=SimConfig(nodes=3).add_pool("thick", provider_kind="LVM"))
        pool = "thick"
    else:
        env = backend_env(request, backend, tmp_path)
        pool = THIN_POOL
    try:
        env.ctl.CreateVolume(create_req("pvc-thick", params={**env.params(),
                                                             "storagePool": pool}))
        with pytest.raises(grpc.RpcError) as err:
            env.ctl.CreateSnapshot(snap_req("snapshot-t", "pvc-thick"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert pool in err.value.details()
        assert env.snapshots() == []
        _delete_volumes(env, "pvc-thick")
    finally:
        close_env(env)


def test_delete_volume_with_snapshots_then_snapshots(env):
    env.ctl.CreateVolume(create_req("pvc-ds", params=env.params(R2)))
    s1 = env.ctl.CreateSnapshot(snap_req("snapshot-d1", "pvc-ds")).snapshot
    s2 = env.ctl.CreateSnapshot(snap_req("snapshot-d2", "pvc-ds")).snapshot
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-ds"))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-ds"))  # idempotent
    assert [e.volume.volume_id for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries] \
        == []
    assert code_of(env.ctl.ControllerGetVolume, csi_pb2.ControllerGetVolumeRequest(
        volume_id="pvc-ds")) == grpc.StatusCode.NOT_FOUND
    assert env.client.get("/v1/resource-definitions/pvc-ds/resources", deadline=_dl()) == []
    # snapshots stay usable
    listed = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert sorted(e.snapshot.snapshot_id for e in listed.entries) == \
        sorted([s1.snapshot_id, s2.snapshot_id])
    src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id=s1.snapshot_id))
    env.ctl.CreateVolume(create_req("pvc-from-deleted", params=env.params(R2),
                                    volume_content_source=src))
    # the same name cannot be reused while the old RD holds snapshots
    assert code_of(env.ctl.CreateVolume, create_req("pvc-ds", params=env.params(R2))) == \
        grpc.StatusCode.FAILED_PRECONDITION
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=s1.snapshot_id))
    assert "pvc-ds" in env.rds()
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=s2.snapshot_id))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-from-deleted"))
    assert env.leftovers() == ([], [])


def _dl():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


def test_restore(env):
    env.ctl.CreateVolume(create_req("pvc-src", params=env.params(R2)))
    snap = env.ctl.CreateSnapshot(snap_req("snapshot-r", "pvc-src")).snapshot
    src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id=snap.snapshot_id))
    three = env.params(placementCount="3")
    vol = env.ctl.CreateVolume(create_req("pvc-restored", size=2 * GIB, params=three,
                                          volume_content_source=src)).volume
    assert vol.capacity_bytes == 2 * GIB and vol.content_source.snapshot.snapshot_id
    nodes = env.client.get("/v1/resource-definitions/pvc-restored/resources", deadline=_dl())
    assert len(nodes) == (3 if env.sim else 1)
    vd = env.client.get("/v1/resource-definitions/pvc-restored/volume-definitions/0",
                        deadline=_dl())
    assert vd["size_kib"] == 2 * GIB // 1024  # restored at 1 GiB (LINSTOR's rule), then grown
    again = env.ctl.CreateVolume(create_req("pvc-restored", size=2 * GIB, params=three,
                                            volume_content_source=src)).volume
    assert again.volume_id == vol.volume_id
    assert code_of(env.ctl.CreateVolume, create_req("pvc-small", size=GIB // 2,
                                                    params=env.params(R2),
                                                    volume_content_source=src)) == \
        grpc.StatusCode.OUT_OF_RANGE
    missing = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id="InCluster:///pvc-src/snapshot-none"))
    assert code_of(env.ctl.CreateVolume, create_req("pvc-m", params=env.params(),
                                                    volume_content_source=missing)) == \
        grpc.StatusCode.NOT_FOUND
    # a different source for an existing name is incompatible
    assert code_of(env.ctl.CreateVolume, create_req("pvc-src", params=env.params(R2),
                                                    volume_content_source=src)) == \
        grpc.StatusCode.ALREADY_EXISTS
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    _delete_volumes(env, "pvc-restored", "pvc-src")


def _diskful(resources: list[dict]) -> int:
    """Replicas with a disk: two of them get LINSTOR's quorum tiebreaker beside (§9 C5)."""
    return sum(1 for r in resources if "DISKLESS" not in r.get("flags", []))


def test_clone_into_a_larger_volume_leaves_no_snapshot(env):
    """On real LINSTOR (FILE_THIN, which LINSTOR cannot clone) through a temporary snapshot;
    on the simulator's default pools by LINSTOR's clone."""
    env.ctl.CreateVolume(create_req("pvc-orig", params=env.params(placementCount="1")))
    src = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-orig"))
    req = create_req("pvc-clone", size=2 * GIB, params=env.params(R2), volume_content_source=src)
    vol = env.ctl.CreateVolume(req).volume
    assert vol.capacity_bytes == 2 * GIB and vol.content_source.volume.volume_id == "pvc-orig"
    assert env.ctl.CreateVolume(req).volume.volume_id == "pvc-clone"  # idempotent
    vd = env.client.get("/v1/resource-definitions/pvc-clone/volume-definitions/0", deadline=_dl())
    assert vd["size_kib"] == 2 * GIB // 1024
    rd = env.client.get("/v1/resource-definitions/pvc-clone", deadline=_dl())
    assert rd["props"]["Aux/csi-volume-name"] == "pvc-clone"
    assert rd["props"]["Aux/csi-content-source"] == "volume:pvc-orig"
    assert env.snapshots() == []  # no temporary snapshot left
    assert list(env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries) == []
    missing = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-gone"))
    assert code_of(env.ctl.CreateVolume, create_req("pvc-c2", params=env.params(),
                                                    volume_content_source=missing)) == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(env.ctl.CreateVolume, create_req("pvc-c3", size=GIB // 2, params=env.params(),
                                                    volume_content_source=src)) == \
        grpc.StatusCode.OUT_OF_RANGE
    _delete_volumes(env, "pvc-orig", "pvc-clone")


@sim_only("pool kinds LINSTOR clones natively (LVM_THIN), and a slow clone on demand")
@pytest.mark.parametrize("kind", ["LVM_THIN", "FILE_THIN"])
def test_clone(tmp_path, kind):
    env = make_env(tmp_path, sim_config=SimConfig(nodes=3, pools=[
        PoolSpec("DfltStorPool", kind), PoolSpec("sp1", kind)]))
    try:
        _check_clone(env)
    finally:
        close_env(env)


def _check_clone(env):
    env.ctl.CreateVolume(create_req("pvc-orig", params={"placementCount": "1"}))
    env.sim.set_clone_behaviour(polls=2)
    src = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-orig"))
    vol = env.ctl.CreateVolume(create_req("pvc-clone", size=2 * GIB, params=R2,
                                          volume_content_source=src)).volume
    assert vol.capacity_bytes == 2 * GIB
    res = env.client.get("/v1/resource-definitions/pvc-clone/resources", deadline=_dl())
    assert _diskful(res) == 2
    rd = env.client.get("/v1/resource-definitions/pvc-clone", deadline=_dl())
    assert rd["props"]["Aux/csi-volume-name"] == "pvc-clone"
    assert rd["props"]["Aux/csi-content-source"] == "volume:pvc-orig"
    missing = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-gone"))
    assert code_of(env.ctl.CreateVolume, create_req("pvc-c2", volume_content_source=missing)) == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(env.ctl.CreateVolume, create_req("pvc-c3", size=GIB // 2,
                                                    volume_content_source=src)) == \
        grpc.StatusCode.OUT_OF_RANGE


@sim_only("a clone that takes several polls, on demand")
def test_clone_still_running_then_resumes(lvm_env):
    env = lvm_env
    env.ctl.CreateVolume(create_req("pvc-slow"))
    env.sim.set_clone_behaviour(polls=8)
    src = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-slow"))
    assert code_of(lambda r: env.ctl.CreateVolume(r, timeout=2.5),
                   create_req("pvc-slow-clone", volume_content_source=src)) == \
        grpc.StatusCode.ABORTED
    assert "pvc-slow-clone" not in [e.volume.volume_id for e in env.ctl.ListVolumes(
        csi_pb2.ListVolumesRequest()).entries]
    # LINSTOR keeps cloning; a retry resumes polling the same clone
    import time

    deadline = time.monotonic() + 20
    while True:
        try:
            env.ctl.CreateVolume(create_req("pvc-slow-clone", volume_content_source=src))
            break
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.ABORTED, err.details()
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert "pvc-slow-clone" in [e.volume.volume_id
                                for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries]


def test_group_snapshots(env):
    for name in ("pvc-g1", "pvc-g2"):
        env.ctl.CreateVolume(create_req(name, params=env.params(R2)))
    req = csi_pb2.CreateVolumeGroupSnapshotRequest(name="groupsnapshot-1",
                                                   source_volume_ids=["pvc-g1", "pvc-g2"])
    group = env.group.CreateVolumeGroupSnapshot(req).group_snapshot
    assert group.group_snapshot_id == "InCluster:///group/groupsnapshot-1"
    assert group.ready_to_use and len(group.snapshots) == 2
    assert all(s.group_snapshot_id == group.group_snapshot_id for s in group.snapshots)
    again = env.group.CreateVolumeGroupSnapshot(req).group_snapshot
    assert sorted(s.snapshot_id for s in again.snapshots) == \
        sorted(s.snapshot_id for s in group.snapshots)
    assert code_of(env.group.CreateVolumeGroupSnapshot, csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="groupsnapshot-1", source_volume_ids=["pvc-g1"])) == grpc.StatusCode.ALREADY_EXISTS
    got = env.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id)).group_snapshot
    assert len(got.snapshots) == 2
    assert code_of(env.group.GetVolumeGroupSnapshot, csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=["x"])) == \
        grpc.StatusCode.INVALID_ARGUMENT
    # members restore like any snapshot
    member = group.snapshots[0]
    src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id=member.snapshot_id))
    env.ctl.CreateVolume(create_req("pvc-from-group", params=env.params(R2),
                                    volume_content_source=src))
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id,
        snapshot_ids=[s.snapshot_id for s in group.snapshots]))
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id))
    assert code_of(env.group.GetVolumeGroupSnapshot, csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id)) == grpc.StatusCode.NOT_FOUND
    assert env.snapshots() == []
    assert code_of(env.group.CreateVolumeGroupSnapshot, csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="groupsnapshot-2", source_volume_ids=["pvc-g1", "pvc-none"])) == \
        grpc.StatusCode.NOT_FOUND
    assert env.snapshots() == []
    _delete_volumes(env, "pvc-from-group", "pvc-g1", "pvc-g2")


def _linstor_snapshot(env, rd: str, name: str) -> None:
    """A snapshot taken outside this driver (as LINBIT's Go driver named them long ago)."""
    from csi_linstor.deadline import Deadline

    env.client.post(f"/v1/resource-definitions/{rd}/snapshots", deadline=Deadline(10),
                    body={"name": name})


def test_legacy_snapshot_handles_of_the_go_driver_are_found_restored_and_deleted(env):
    env.ctl.CreateVolume(create_req("pvc-old", params=env.params(R2)))
    _linstor_snapshot(env, "pvc-old", "snapshot-0b1e")
    handle = "snapshot-0b1e"  # a VolumeSnapshotContent's snapshotHandle from those days
    listed = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=handle)).entries
    assert [(e.snapshot.snapshot_id, e.snapshot.source_volume_id) for e in listed] == \
        [(handle, "pvc-old")]
    got = env.ctl.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=handle)).snapshot
    assert got.ready_to_use and got.size_bytes == GIB
    src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id=handle))
    restored = env.ctl.CreateVolume(create_req("pvc-new", params=env.params(R2),
                                               volume_content_source=src)).volume
    assert restored.content_source.snapshot.snapshot_id == handle
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-new"))
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=handle))
    assert env.snapshots() == []  # nothing left behind in LINSTOR
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=handle))  # idempotent
    assert code_of(env.ctl.GetSnapshot, csi_pb2.GetSnapshotRequest(snapshot_id=handle)) == \
        grpc.StatusCode.NOT_FOUND
    _delete_volumes(env, "pvc-old")


def test_an_ambiguous_legacy_handle_is_refused_not_guessed(env):
    for rd in ("pvc-amb1", "pvc-amb2"):
        env.ctl.CreateVolume(create_req(rd, params=env.params(R2)))
        _linstor_snapshot(env, rd, "snapshot-same")
    err = code_of(env.ctl.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(
        snapshot_id="snapshot-same"))
    assert err == grpc.StatusCode.FAILED_PRECONDITION
    assert env.snapshots() == ["pvc-amb1/snapshot-same", "pvc-amb2/snapshot-same"]
    for rd in ("pvc-amb1", "pvc-amb2"):  # each by its full id
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(
            snapshot_id=f"InCluster:///{rd}/snapshot-same"))
    _delete_volumes(env, "pvc-amb1", "pvc-amb2")


@sim_only("fails one REST call")
def test_restore_recovers_a_volume_definition_grown_before_its_resources(env):
    """An older driver grew the VD before snapshot-restore-resource, which LINSTOR refuses on
    every retry (FAIL_INVLD_VLM_SIZE); the retry now starts that resource-less RD over."""
    env.ctl.CreateVolume(create_req("pvc-gsrc", params={"placementCount": "1"}))
    snap = env.ctl.CreateSnapshot(snap_req("snapshot-g", "pvc-gsrc")).snapshot
    src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
        snapshot_id=snap.snapshot_id))
    req = create_req("pvc-gdst", size=2 * GIB, params=R2, volume_content_source=src)
    env.sim.fail_next(1, route="snapshot-restore-resource")
    assert code_of(env.ctl.CreateVolume, req) == grpc.StatusCode.UNAVAILABLE
    env.client.put("/v1/resource-definitions/pvc-gdst/volume-definitions/0", deadline=_dl(),
                   body={"size_kib": 2 * GIB // 1024})
    vol = env.ctl.CreateVolume(req).volume
    assert vol.capacity_bytes == 2 * GIB
    assert _diskful(env.client.get("/v1/resource-definitions/pvc-gdst/resources",
                                   deadline=_dl())) == 2
    for rd in ("pvc-gdst", "pvc-gsrc"):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert env.leftovers() == ([], [])


def _snapshots_read(env, since: int) -> int:
    """Snapshot objects LINSTOR sent the driver in the replies after reply number ``since``."""
    n = 0
    for method, route, _status, body in env.sim.replies()[since:]:
        if method == "GET" and route == "/v1/view/snapshots":
            n += len(body)
        elif method == "GET" and route.startswith("/v1/resource-definitions/{rd}/snapshots"):
            n += len(body) if isinstance(body, list) else 1
    return n


@sim_only("reads the simulator's reply log")
def test_snapshot_lookups_read_only_the_snapshots_they_need(env):
    """LINSTOR ignores ``snapshots=`` on /v1/view/snapshots (View.listSnapshots): filtering by
    it downloaded every snapshot in the cluster on every CreateSnapshot poll and group lookup."""
    for name in ("pvc-la", "pvc-lb", "pvc-lc"):
        env.ctl.CreateVolume(create_req(name, params=R2))
    for i in range(12):
        env.ctl.CreateSnapshot(snap_req(f"snapshot-other-{i}", "pvc-lc"))
    snap = env.ctl.CreateSnapshot(snap_req("snapshot-la", "pvc-la")).snapshot
    group = env.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="groupsnapshot-l", source_volume_ids=["pvc-la", "pvc-lb"])).group_snapshot
    ids = [s.snapshot_id for s in group.snapshots]
    mark = len(env.sim.replies())
    for _ in range(3):  # the snapshotter repeats CreateSnapshot until ready_to_use
        assert env.ctl.CreateSnapshot(snap_req("snapshot-la", "pvc-la")).snapshot == snap
    assert _snapshots_read(env, mark) == 3
    mark = len(env.sim.replies())
    again = env.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="groupsnapshot-l", source_volume_ids=["pvc-la", "pvc-lb"])).group_snapshot
    assert sorted(s.snapshot_id for s in again.snapshots) == sorted(ids)
    got = env.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids)).group_snapshot
    assert sorted(s.snapshot_id for s in got.snapshots) == sorted(ids)
    # each reads the snapshots of pvc-la and pvc-lb (3), never the 12 of pvc-lc
    assert _snapshots_read(env, mark) == 6
    # a member alone still reveals the whole group (its props name every source)
    assert code_of(env.group.GetVolumeGroupSnapshot, csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids[:1])) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(env.group.CreateVolumeGroupSnapshot, csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="groupsnapshot-l", source_volume_ids=["pvc-la"])) == grpc.StatusCode.ALREADY_EXISTS
    # CSI names stay unique across sources
    assert code_of(env.ctl.CreateSnapshot, snap_req("snapshot-la", "pvc-lb")) == \
        grpc.StatusCode.ALREADY_EXISTS


@sim_only("failed snapshots and slow snapshot deletion on demand")
def test_retaking_a_failed_snapshot_waits_while_linstor_deletes_it(env):
    """LINSTOR keeps a deleted snapshot (flag DELETE) until its satellites confirm, and
    refuses the name meanwhile (FAIL_EXISTS_SNAPSHOT_DFN): that is not ALREADY_EXISTS."""
    env.ctl.CreateVolume(create_req("pvc-fs", params=R2))
    env.sim.set_snapshot_failure(True)
    failed = env.ctl.CreateSnapshot(snap_req("snapshot-fs", "pvc-fs")).snapshot
    assert not failed.ready_to_use
    env.sim.set_snapshot_failure(False)
    env.sim.set_snapshot_delete_delay(1.0)
    snap = env.ctl.CreateSnapshot(snap_req("snapshot-fs", "pvc-fs")).snapshot  # waits
    assert snap.ready_to_use
    # deleting takes longer than the RPC's deadline: ABORTED (retry), then success
    env.sim.set_snapshot_failure(True)
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    env.ctl.CreateSnapshot(snap_req("snapshot-fs", "pvc-fs"))
    env.sim.set_snapshot_failure(False)
    env.sim.set_snapshot_delete_delay(4.0)
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateSnapshot(snap_req("snapshot-fs", "pvc-fs"), timeout=2.5)
    assert err.value.code() == grpc.StatusCode.ABORTED, err.value.details()
    assert "still deleting" in err.value.details()
    time.sleep(4.0)
    assert env.ctl.CreateSnapshot(snap_req("snapshot-fs", "pvc-fs")).snapshot.ready_to_use



def _clone_src(rd):
    return csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id=rd))


@sim_only("fails one REST call; the real path is test_clone_into_a_larger_volume_leaves_no_snapshot")
def test_clone_on_a_pool_linstor_cannot_clone_goes_through_a_temporary_snapshot(env):
    """LINSTOR refuses to clone FILE_THIN volumes (FAIL_INVLD_PROVIDER, "Clone source contains
    unsupported storage pools"): the driver retried that forever (UNAVAILABLE)."""
    env.ctl.CreateVolume(create_req("pvc-fsrc", params=R2))
    req = create_req("pvc-fdst", size=2 * GIB, params=R2, volume_content_source=_clone_src(
        "pvc-fsrc"))
    env.sim.fail_next(1, route=r"DELETE /v1/resource-definitions/\{rd\}/snapshots/")
    assert code_of(env.ctl.CreateVolume, req) == grpc.StatusCode.UNAVAILABLE
    # the temporary snapshot is never listed as a CSI snapshot
    assert list(env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries) == []
    vol = env.ctl.CreateVolume(req).volume
    assert vol.capacity_bytes == 2 * GIB and vol.content_source.volume.volume_id == "pvc-fsrc"
    refused = [b for m, r, st, b in env.sim.replies() if r.endswith("/clone") and st == 500]
    assert refused and "unsupported storage pools" in refused[0]["messages"][0]["message"]
    assert _diskful(env.client.get("/v1/resource-definitions/pvc-fdst/resources",
                                   deadline=_dl())) == 2
    assert env.sim.list_snapshots() == []  # the temporary snapshot is gone
    assert env.ctl.CreateVolume(req).volume.volume_id == "pvc-fdst"
    for rd in ("pvc-fdst", "pvc-fsrc"):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    assert env.leftovers() == ([], [])


@sim_only("fails REST calls on demand")
def test_an_abandoned_fallback_clone_leaks_no_snapshot(env):
    env.ctl.CreateVolume(create_req("pvc-asrc", params=R2))
    env.sim.fail_next(5, route="snapshot-restore-resource")
    req = create_req("pvc-adst", params=R2, volume_content_source=_clone_src("pvc-asrc"))
    assert code_of(env.ctl.CreateVolume, req) == grpc.StatusCode.UNAVAILABLE
    assert env.sim.list_snapshots() != []  # the temporary snapshot, mid-clone
    # the PVC is given up: both volumes are deleted, in either order
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-adst"))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-asrc"))
    assert env.leftovers() == ([], [])


@sim_only("an EBS_INIT pool")
def test_clone_on_a_pool_that_can_neither_clone_nor_snapshot_is_invalid_argument(tmp_path):
    cfg = SimConfig(nodes=3).add_pool("ebs", provider_kind="EBS_INIT")
    env = make_env(tmp_path, sim_config=cfg)
    try:
        params = {"placementCount": "1", "storagePool": "ebs"}
        env.ctl.CreateVolume(create_req("pvc-esrc", params=params))
        with pytest.raises(grpc.RpcError) as err:
            env.ctl.CreateVolume(create_req("pvc-edst", params=params,
                                            volume_content_source=_clone_src("pvc-esrc")))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "pvc-esrc" in err.value.details() and "ebs (EBS_INIT)" in err.value.details()
        assert env.leftovers() == (["pvc-esrc"], [])
    finally:
        close_env(env)


def _interrupt_the_props_put(env, monkeypatch, rd):
    """The driver's next PUT of ``rd``'s own props fails once (as if it crashed right before)."""
    from csi_linstor.errors import Unavailable

    put = env.client.put
    hit = []

    def failing_put(path, *, deadline, body=None, **kw):
        if not hit and path == f"/v1/resource-definitions/{rd}" and \
                "Aux/csi-volume-name" in (body or {}).get("override_props", {}):
            hit.append(body)
            raise Unavailable("injected: the driver stopped here")
        return put(path, deadline=deadline, body=body, **kw)

    monkeypatch.setattr(env.client, "put", failing_put)
    return hit


@pytest.mark.parametrize("how", ["restore", "clone"])
def test_a_copy_interrupted_right_after_linstor_restored_it_is_resumed_as_ours(
        env, monkeypatch, how):
    """snapshot-restore-resource copies the source RD's props (name, done marker, PVC) over the
    target's (real LINSTOR; CtrlSnapshotRestoreApiCallHandler). The driver sets its own again
    right after; interrupted there, the retry must still recognise its copy and finish it,
    not answer 'taken by the volume named <source>' forever."""
    params = env.params(placementCount="1")
    env.ctl.CreateVolume(create_req("pvc-isrc", params={
        **params, "csi.storage.k8s.io/pvc/name": "src-claim"}))
    snap = None
    if how == "restore":
        snap = env.ctl.CreateSnapshot(snap_req("snapshot-i", "pvc-isrc")).snapshot
        source = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
            snapshot_id=snap.snapshot_id))
    else:
        source = _clone_src("pvc-isrc")
    req = create_req("pvc-idst", size=2 * GIB, params={
        **params, "csi.storage.k8s.io/pvc/name": "dst-claim"}, volume_content_source=source)
    hit = _interrupt_the_props_put(env, monkeypatch, "pvc-idst")
    try:
        vol = env.ctl.CreateVolume(req).volume  # the sim's default pools clone natively
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
        vol = env.ctl.CreateVolume(req).volume
    assert hit or (env.sim and how == "clone")
    assert vol.volume_id == "pvc-idst" and vol.capacity_bytes == 2 * GIB
    assert env.ctl.CreateVolume(req).volume.volume_id == "pvc-idst"  # idempotent
    props = env.client.get("/v1/resource-definitions/pvc-idst", deadline=_dl())["props"]
    assert props["Aux/csi-volume-name"] == "pvc-idst"
    assert props["Aux/csi.storage.k8s.io/pvc/name"] == "dst-claim"
    kind = "snapshot" if how == "restore" else "volume"
    assert props["Aux/csi-content-source"].startswith(f"{kind}:")
    if snap is not None:
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    _delete_volumes(env, "pvc-idst", "pvc-isrc")


# -- the snapshot index (mapping/snapshot_index.py) -------------------------------------------


def _index(env):
    from csi_linstor.mapping import snapshot_index

    deadline = time.monotonic() + 30
    while snapshot_index.MARKER not in env.sim.controller.kvs:
        assert time.monotonic() < deadline, "the existing snapshots were never indexed"
        time.sleep(0.05)
    return snapshot_index


@sim_only("reads the simulator's key-value store and request counters")
def test_a_name_taken_before_the_index_is_found_without_reading_every_snapshot(env):
    env.ctl.CreateVolume(create_req("pvc-ia", params=env.params(R2)))
    env.ctl.CreateVolume(create_req("pvc-ib", params=env.params(R2)))
    # taken by an older driver: a LINSTOR snapshot with no index entry
    env.client.post("/v1/resource-definitions/pvc-ia/snapshots", deadline=_dl(),
                    body={"name": "snapshot-old"})
    # the first lookup starts the one-time indexing and reads every snapshot meanwhile
    env.ctl.CreateSnapshot(snap_req("snapshot-new", "pvc-ia"))
    idx = _index(env)
    before = env.counts()
    assert code_of(env.ctl.CreateSnapshot, snap_req("snapshot-old", "pvc-ib")) == \
        grpc.StatusCode.ALREADY_EXISTS
    made = {k: v - before.get(k, 0) for k, v in env.counts().items()
            if v != before.get(k, 0)}
    assert "GET /v1/view/snapshots" not in made, made
    assert made.get("GET /v1/key-value-store/{inst}") == 1, made
    # retaking its own name on its own source is still the same snapshot
    assert env.ctl.CreateSnapshot(snap_req("snapshot-old", "pvc-ia")).snapshot.snapshot_id == \
        "InCluster:///pvc-ia/snapshot-old"
    for sid in ("InCluster:///pvc-ia/snapshot-old", "InCluster:///pvc-ia/snapshot-new"):
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=sid))
    # every claim went with its snapshot: only the marker is left
    assert sorted(env.sim.controller.kvs) == [idx.MARKER]
    _delete_volumes(env, "pvc-ia", "pvc-ib")


@sim_only("writes the index entry a crash would leave straight into the key-value store")
def test_a_claim_left_by_a_crash_does_not_hold_the_name(env):
    env.ctl.CreateVolume(create_req("pvc-ic", params=env.params(R2)))
    env.ctl.CreateVolume(create_req("pvc-id", params=env.params(R2)))
    env.ctl.CreateSnapshot(snap_req("snapshot-first", "pvc-ic"))
    idx = _index(env)
    # the driver claimed the name for pvc-ic, then stopped before LINSTOR took the snapshot
    env.client.put(f"/v1/key-value-store/{idx.instance('snapshot-x')}", deadline=_dl(),
                   body={"override_props": {"source/PVC-IC": "snapshot-x"}})
    snap = env.ctl.CreateSnapshot(snap_req("snapshot-x", "pvc-id")).snapshot
    assert snap.snapshot_id == "InCluster:///pvc-id/snapshot-x"
    assert env.sim.controller.kvs[idx.instance("snapshot-x")] == {"source/PVC-ID": "snapshot-x"}
    # and the name is now held by pvc-id
    assert code_of(env.ctl.CreateSnapshot, snap_req("snapshot-x", "pvc-ic")) == \
        grpc.StatusCode.ALREADY_EXISTS
    for sid in (snap.snapshot_id, "InCluster:///pvc-ic/snapshot-first"):
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=sid))
    assert sorted(env.sim.controller.kvs) == [idx.MARKER]
    _delete_volumes(env, "pvc-ic", "pvc-id")

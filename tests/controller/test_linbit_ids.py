"""Objects LINBIT's driver created with id forms of its own: consistency-group volumes
(``cg-…/<vnr>``, ``cg-…`` for number 0), their snapshots, and group snapshot ids that are a bare
LINSTOR snapshot name. Nothing may be answered OK while it stays, nor deleted wider than what
the id names."""

from __future__ import annotations

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.deadline import Deadline
from tests.controller.conftest import GIB, MOUNT, create_req, sim_only
from tests.real_linstor import XFS_POOL

CG = "cg-5e1a8a63-6f1b-5bbf-9a2c-1c0d4f0e9b11"


def _dl() -> Deadline:
    return Deadline(30)


def _make_consistency_group(env) -> None:
    """What LINBIT's driver leaves for two PVCs of group ns/g: one RD, two VDs."""
    c = env.client
    c.post("/v1/resource-definitions", deadline=_dl(), body={"resource_definition": {
        "name": CG, "props": {"Aux/csi-provisioning-completed-by": "linstor-csi/v1.12.0",
                              "Aux/linstor.csi.linbit.com/consistency-group": "ns/g"}}})
    for vnr, pvc in ((0, "pvc-m0"), (1, "pvc-m1")):
        c.post(f"/v1/resource-definitions/{CG}/volume-definitions", deadline=_dl(), body={
            "volume_definition": {"volume_number": vnr, "size_kib": GIB // 1024,
                                  "props": {"Aux/csi-volume-name": pvc}}})
    real = {} if env.sim else {"layer_list": ["STORAGE"]}  # no DRBD module on the real one
    pool = {} if env.sim else {"storage_pool": XFS_POOL}
    c.post(f"/v1/resource-definitions/{CG}/autoplace", deadline=_dl(),
           body={"select_filter": {"place_count": 1, **pool}, **real})


def _nodes(env, rd: str) -> list[str]:
    return sorted(r["node_name"] for r in env.client.get(
        f"/v1/resource-definitions/{rd}/resources", deadline=_dl()))


def _code(fn, req) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        fn(req)
    return err.value.code(), err.value.details()


@sim_only("a node without the replica")
def test_linbit_consistency_group_members_are_published_and_deleted_one_by_one(env):
    _make_consistency_group(env)
    free = next(n for n in ("node-1", "node-2", "node-3") if n not in _nodes(env, CG))
    ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=f"{CG}/1", node_id=free, volume_capability=MOUNT)).publish_context
    dev = {v["volume_number"]: v["device_path"] for r in env.client.get(
        "/v1/view/resources", deadline=_dl(), params={"resources": CG, "nodes": free})
        for v in r["volumes"]}
    assert ctx["linstor.csi.linbit.com/device-path"] == dev[1]  # volume 1's device
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=f"{CG}/1", node_id=free))
    assert free not in _nodes(env, CG)
    ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=CG, node_id=free, volume_capability=MOUNT)).publish_context  # LINBIT's "/0"
    assert ctx["linstor.csi.linbit.com/device-path"] == dev[0]
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=CG, node_id=free))
    assert free not in _nodes(env, CG)
    # DeleteVolume of a member deletes its volume definition only, never the whole resource
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"{CG}/1"))
    vds = env.client.get(f"/v1/resource-definitions/{CG}/volume-definitions", deadline=_dl())
    assert [vd["volume_number"] for vd in vds] == [0]
    # A member that does not exist (any more) is gone: OK, as for any volume.
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"{CG}/7"))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="cg-gone/1"))
    assert CG in env.sim.list_resource_definitions()
    # LINBIT's id of member 0 is the bare resource name: the last member takes the resource
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=CG))
    assert CG not in env.sim.list_resource_definitions()
    # An ordinary volume whose name starts with cg- is deleted as usual.
    env.ctl.CreateVolume(create_req("cg-mine"))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="cg-mine"))
    assert "cg-mine" not in env.sim.list_resource_definitions()


@sim_only("a diskless attachment in use")
def test_consistency_group_member_unpublish_detaches_unless_another_member_uses_it(env):
    _make_consistency_group(env)
    free = next(n for n in ("node-1", "node-2", "node-3") if n not in _nodes(env, CG))
    env.client.post(f"/v1/resource-definitions/{CG}/resources/{free}/make-available",
                    deadline=_dl(), body={"diskful": False})
    env.sim.set_in_use(CG, free, True)  # member 0 still mounted there
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=f"{CG}/1", node_id=free))
    assert free in _nodes(env, CG)
    env.sim.set_in_use(CG, free, False)  # member 0 was unmounted (and unpublished) meanwhile
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=f"{CG}/1", node_id=free))  # retried: now the attachment goes
    assert free not in _nodes(env, CG)


def test_consistency_group_snapshot_members_cannot_be_deleted_alone(env):
    _make_consistency_group(env)
    env.client.post(f"/v1/resource-definitions/{CG}/snapshots", deadline=_dl(),
                    body={"name": "groupsnap-1"})
    for sid in (f"InCluster:///{CG}/1/groupsnap-1", f"InCluster:///{CG}/groupsnap-1"):
        code, msg = _code(env.ctl.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(snapshot_id=sid))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "VolumeGroupSnapshot" in msg
    assert env.snapshots()  # still there
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(
        snapshot_id=f"InCluster:///{CG}/1/gone"))  # missing: OK
    # The group snapshot (LINBIT's id: the bare snapshot name) deletes it, all members at once.
    got = env.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id="groupsnap-1"))
    assert [s.source_volume_id for s in got.group_snapshot.snapshots] == [CG]
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id="groupsnap-1",
        snapshot_ids=[f"InCluster:///{CG}/groupsnap-1", f"InCluster:///{CG}/1/groupsnap-1"]))
    assert env.snapshots() == []
    env.client.delete(f"/v1/resource-definitions/{CG}", deadline=_dl())


def test_group_snapshot_id_that_is_a_bare_snapshot_name_is_resolved(env):
    for name in ("pvc-g1", "pvc-g2"):
        env.ctl.CreateVolume(create_req(name, params=env.params()))
    # LINBIT's driver: one multi-snapshot named after the group, id = that name
    env.client.post("/v1/actions/snapshot/multi", deadline=_dl(), body={"snapshots": [
        {"name": "groupsnapshot-abc", "resource_name": "pvc-g1"},
        {"name": "groupsnapshot-abc", "resource_name": "pvc-g2"}]})
    got = env.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id="groupsnapshot-abc")).group_snapshot
    assert got.group_snapshot_id == "groupsnapshot-abc"
    assert sorted(s.snapshot_id for s in got.snapshots) == [
        "InCluster:///pvc-g1/groupsnapshot-abc", "InCluster:///pvc-g2/groupsnapshot-abc"]
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id="groupsnapshot-abc"))
    assert env.snapshots() == []
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id="groupsnapshot-abc"))  # gone: OK
    code, _ = _code(env.group.GetVolumeGroupSnapshot, csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id="groupsnapshot-abc"))
    assert code == grpc.StatusCode.NOT_FOUND
    for name in ("pvc-g1", "pvc-g2"):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=name))


def test_linbit_consistency_group_members_grow_and_snapshot_as_a_group(env):
    _make_consistency_group(env)
    grown = env.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=f"{CG}/1", capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB)))
    assert grown.capacity_bytes == 2 * GIB
    sizes = {vd["volume_number"]: vd["size_kib"] for vd in env.client.get(
        f"/v1/resource-definitions/{CG}/volume-definitions", deadline=_dl())}
    assert sizes == {0: GIB // 1024, 1: 2 * GIB // 1024}
    got = env.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="gs-linbit", source_volume_ids=[CG, f"{CG}/1"])).group_snapshot  # its id forms
    assert env.snapshots() == [f"{CG}/gs-linbit"]
    assert sorted((s.snapshot_id, s.source_volume_id, s.size_bytes) for s in got.snapshots) == [
        (f"InCluster:///{CG}/0/gs-linbit", CG, GIB),  # the source id as the CO knows it
        (f"InCluster:///{CG}/1/gs-linbit", f"{CG}/1", 2 * GIB)]
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=got.group_snapshot_id))
    assert env.snapshots() == []
    for vid in (f"{CG}/1", CG):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    assert CG not in env.rds()

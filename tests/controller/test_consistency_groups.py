"""Consistency groups made by this driver (issue 17 item 5, --enable-consistency-groups): claims
labelled with one group become volume numbers of one LINSTOR resource ``cg-<uuid5(ns/g)>``,
with ids ``cg-…/<vnr>``. The claim's label is read from Kubernetes; here a fake answers."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.deadline import Deadline
from csi_linstor.mapping import ids
from tests.controller.conftest import (
    BLOCK,
    GIB,
    MOUNT,
    backend_env,
    close_env,
    create_req,
    sim_only,
)

NS = "vms"
RD = ids.consistency_group_rd(NS, "vm1")
LABELS = {(NS, "disk-a"): "vm1", (NS, "disk-b"): "vm1", (NS, "disk-c"): "vm2",
          (NS, "r-a"): "vm3", (NS, "r-b"): "vm3", (NS, "r-x"): "vm1"}


def _dl() -> Deadline:
    return Deadline(30)


@pytest.fixture
def env(request: pytest.FixtureRequest, backend: str, tmp_path: Path):
    e = backend_env(request, backend, tmp_path, enable_consistency_groups=True,
                    max_volumes_per_node=3)
    asked: list[tuple[str, str]] = []

    def label(namespace: str, name: str, deadline: Deadline) -> str | None:
        asked.append((namespace, name))
        return LABELS.get((namespace, name))

    e.servicer.group_label = label
    e.asked = asked  # type: ignore[attr-defined]
    yield e
    close_env(e)


def _claim(env, claim: str, size: int = GIB, cap=MOUNT, **params: str):
    p = env.params({"csi.storage.k8s.io/pvc/name": claim,
                    "csi.storage.k8s.io/pvc/namespace": NS, **params})
    return create_req(f"pvc-{claim}", size=size, params=p, cap=cap)


def _code(fn, req) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        fn(req)
    return err.value.code(), err.value.details()


def _vds(env, rd: str = RD) -> dict[int, dict]:
    return {vd["volume_number"]: vd for vd in env.client.get(
        f"/v1/resource-definitions/{rd}/volume-definitions", deadline=_dl())}


def test_members_are_volume_numbers_of_one_resource(env):
    a = env.ctl.CreateVolume(_claim(env, "disk-a")).volume
    b = env.ctl.CreateVolume(_claim(env, "disk-b", size=2 * GIB, cap=BLOCK)).volume
    assert (a.volume_id, b.volume_id) == (f"{RD}/0", f"{RD}/1")
    assert (a.capacity_bytes, b.capacity_bytes) == (GIB, 2 * GIB)
    vds = _vds(env)
    assert sorted(vds) == [0, 1]
    assert vds[0]["props"]["Aux/csi-volume-name"] == "pvc-disk-a"
    assert vds[1]["props"]["Aux/csi-volume-name"] == "pvc-disk-b"
    assert vds[1]["size_kib"] == 2 * GIB // 1024
    rd = env.client.get(f"/v1/resource-definitions/{RD}", deadline=_dl())
    assert rd["props"]["Aux/linstor.csi.linbit.com/consistency-group"] == f"{NS}/vm1"
    # another group is another resource; a claim without the label an ordinary volume
    c = env.ctl.CreateVolume(_claim(env, "disk-c")).volume
    assert c.volume_id == f"{ids.consistency_group_rd(NS, 'vm2')}/0"
    plain = env.ctl.CreateVolume(_claim(env, "plain")).volume
    assert plain.volume_id == "pvc-plain"
    # idempotent: a retry answers the same member and adds nothing
    again = env.ctl.CreateVolume(_claim(env, "disk-b", size=2 * GIB, cap=BLOCK)).volume
    assert again.volume_id == b.volume_id and sorted(_vds(env)) == [0, 1]
    code, _ = _code(env.ctl.CreateVolume, _claim(env, "disk-b", size=2 * GIB))  # now mount
    assert code == grpc.StatusCode.ALREADY_EXISTS
    # listed and read as members, never as the shared resource
    listed = {e.volume.volume_id: e.volume.capacity_bytes
              for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries}
    assert listed[a.volume_id] == GIB and listed[b.volume_id] == 2 * GIB
    assert RD not in listed
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=b.volume_id))
    assert got.volume.capacity_bytes == 2 * GIB
    code, _ = _code(env.ctl.ControllerGetVolume,
                    csi_pb2.ControllerGetVolumeRequest(volume_id=f"{RD}/5"))
    assert code == grpc.StatusCode.NOT_FOUND
    # expand grows that member's volume only
    grown = env.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=a.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=3 * GIB)))
    assert grown.capacity_bytes == 3 * GIB and grown.node_expansion_required
    sizes = {n: vd["size_kib"] for n, vd in _vds(env).items()}
    assert sizes == {0: 3 * GIB // 1024, 1: 2 * GIB // 1024}
    # delete: the member's volume; the last member takes the resource with it
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=a.volume_id))
    assert sorted(_vds(env)) == [1]
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=a.volume_id))  # gone: OK
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=b.volume_id))
    for vid in (c.volume_id, plain.volume_id):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    assert env.rds() == []


def test_group_refusals(env):
    env.ctl.CreateVolume(_claim(env, "disk-a"))
    # another class (resource group) for a member of the same group
    code, msg = _code(env.ctl.CreateVolume, _claim(env, "disk-b", resourceGroup="other-rg"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "same placement" in msg
    clone = _claim(env, "disk-b")
    clone.volume_content_source.volume.volume_id = "pvc-x"
    code, msg = _code(env.ctl.CreateVolume, clone)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "clone" in msg
    clone = create_req("pvc-copy", params=env.params())  # a member as an ordinary clone's source
    clone.volume_content_source.volume.volume_id = f"{RD}/0"
    code, msg = _code(env.ctl.CreateVolume, clone)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "VolumeGroupSnapshot" in msg
    rwx = csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))
    code, msg = _code(env.ctl.CreateVolume, _claim(env, "disk-b", cap=rwx))
    # (real LINSTOR here has no DRBD: multi-node modes are refused for that first)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("multi-node" if env.sim else "drbd layer") in msg
    assert sorted(_vds(env)) == [0]  # none of them added a member
    # a single member is neither snapshotted alone nor modified
    code, msg = _code(env.ctl.CreateSnapshot, csi_pb2.CreateSnapshotRequest(
        name="snap-1", source_volume_id=f"{RD}/0"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "VolumeGroupSnapshot" in msg
    code, msg = _code(env.ctl.ControllerModifyVolume, csi_pb2.ControllerModifyVolumeRequest(
        volume_id=f"{RD}/0", mutable_parameters={"placementCount": "2"}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "consistency group" in msg
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"{RD}/0"))
    assert env.rds() == []


def test_the_label_is_read_only_with_the_flag_and_a_claim(request, backend, tmp_path):
    e = backend_env(request, backend, tmp_path)  # flag off
    try:
        assert e.servicer.group_label is None
        vol = e.ctl.CreateVolume(_claim(e, "disk-a")).volume
        assert vol.volume_id == "pvc-disk-a"  # labelled, but the flag is off
        e.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    finally:
        close_env(e)


def test_no_claim_metadata_no_lookup(env):
    vol = env.ctl.CreateVolume(create_req("pvc-nometa", params=env.params())).volume
    assert vol.volume_id == "pvc-nometa" and env.asked == []
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_a_racing_create_of_one_name_keeps_the_lowest_number(env):
    env.ctl.CreateVolume(_claim(env, "disk-a"))
    # what a second controller (fail-over) creating pvc-disk-b at the same time leaves: two
    # volume definitions tagged with the name
    for _ in range(2):
        env.client.post(f"/v1/resource-definitions/{RD}/volume-definitions", deadline=_dl(),
                        body={"volume_definition": {"size_kib": GIB // 1024, "props": {
                            "Aux/csi-volume-name": "pvc-disk-b", "Aux/csi-access-type": "mount",
                            "Aux/csi-fs-type": "ext4"}}})
    assert sorted(_vds(env)) == [0, 1, 2]
    vol = env.ctl.CreateVolume(_claim(env, "disk-b")).volume
    assert vol.volume_id == f"{RD}/1"
    assert sorted(_vds(env)) == [0, 1]
    for vnr in (0, 1):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"{RD}/{vnr}"))
    assert env.rds() == []


def test_a_retry_after_the_last_delete_crashed_removes_the_empty_resource(env):
    env.ctl.CreateVolume(_claim(env, "disk-a"))
    # crash between deleting the last member's volume definition and the resource
    env.client.delete(f"/v1/resource-definitions/{RD}/volume-definitions/0", deadline=_dl())
    assert RD in env.rds()
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=f"{RD}/0"))
    assert env.rds() == []


@sim_only("three nodes: a placement that cannot be satisfied")
def test_a_failed_placement_leaves_nothing(request, tmp_path):
    e = backend_env(request, "sim", tmp_path, enable_consistency_groups=True)
    e.servicer.group_label = lambda ns, name, dl: "vm1"
    try:
        code, _ = _code(e.ctl.CreateVolume, _claim(e, "disk-a", placementCount="5"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.rds() == []
    finally:
        close_env(e)


def _nodes(env) -> dict[str, dict]:
    return {r["node_name"]: r for r in env.client.get(
        f"/v1/resource-definitions/{RD}/resources", deadline=_dl())}


def _published(env, vid: str) -> list[str]:
    return list(env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(
        volume_id=vid)).status.published_node_ids)


@sim_only("diskless attach on a node without a replica")
def test_members_publish_to_one_node_as_one_attachment_with_their_own_devices(env):
    a = env.ctl.CreateVolume(_claim(env, "disk-a", placementCount="1")).volume
    b = env.ctl.CreateVolume(_claim(env, "disk-b", placementCount="1", cap=BLOCK)).volume
    free = next(n for n in ("node-1", "node-2", "node-3") if n not in _nodes(env))
    pa = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=a.volume_id, node_id=free, volume_capability=MOUNT)).publish_context
    pb = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=b.volume_id, node_id=free, volume_capability=BLOCK)).publish_context
    view = {v["volume_number"]: v["device_path"] for r in env.client.get(
        "/v1/view/resources", deadline=_dl(), params={"resources": RD, "nodes": free})
        for v in r["volumes"]}
    dev = "linstor.csi.linbit.com/device-path"
    assert (pa[dev], pb[dev]) == (view[0], view[1]) and view[0] != view[1]
    assert _published(env, a.volume_id) == [free] == _published(env, b.volume_id)
    # the attach limit (3 here) counts members one by one: two used, one left
    env.ctl.CreateVolume(_claim(env, "x1", placementCount="1"))
    env.ctl.CreateVolume(_claim(env, "x2", placementCount="1"))
    env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-x1", node_id=free, volume_capability=MOUNT))
    code, _ = _code(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-x2", node_id=free, volume_capability=MOUNT))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # unpublishing one member keeps the shared attachment for the other
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=a.volume_id, node_id=free))
    assert free in _nodes(env)
    assert _published(env, a.volume_id) == [] and _published(env, b.volume_id) == [free]
    env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-x2", node_id=free, volume_capability=MOUNT))  # a slot is free again
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=a.volume_id, node_id=free))  # again: OK, nothing changes
    assert free in _nodes(env)
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=b.volume_id, node_id=free))
    assert free not in _nodes(env)
    assert _published(env, b.volume_id) == []
    code, _ = _code(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id=f"{RD}/9", node_id=free, volume_capability=MOUNT))
    assert code == grpc.StatusCode.NOT_FOUND


def test_a_group_snapshot_of_every_member_is_one_linstor_snapshot(env):
    a = env.ctl.CreateVolume(_claim(env, "disk-a")).volume.volume_id
    b = env.ctl.CreateVolume(_claim(env, "disk-b", size=2 * GIB, cap=BLOCK)).volume.volume_id
    plain = env.ctl.CreateVolume(_claim(env, "plain")).volume.volume_id
    req = csi_pb2.CreateVolumeGroupSnapshotRequest(name="gs-1", source_volume_ids=[b, a])
    got = env.group.CreateVolumeGroupSnapshot(req).group_snapshot
    assert env.snapshots() == [f"{RD}/gs-1"]  # one LINSTOR snapshot of the shared resource
    members = {s.snapshot_id: (s.source_volume_id, s.size_bytes, s.group_snapshot_id)
               for s in got.snapshots}
    gid = got.group_snapshot_id
    assert members == {f"InCluster:///{RD}/0/gs-1": (a, GIB, gid),
                       f"InCluster:///{RD}/1/gs-1": (b, 2 * GIB, gid)}
    again = env.group.CreateVolumeGroupSnapshot(req).group_snapshot
    assert again.group_snapshot_id == gid and len(again.snapshots) == 2
    assert env.snapshots() == [f"{RD}/gs-1"]
    for sources, words in (([a], "missing"), ([a, b, plain], "mix")):
        code, msg = _code(env.group.CreateVolumeGroupSnapshot,
                          csi_pb2.CreateVolumeGroupSnapshotRequest(name="gs-2",
                                                                   source_volume_ids=sources))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in msg
    # read back, per member
    read = env.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=gid, snapshot_ids=list(members))).group_snapshot
    assert sorted(s.snapshot_id for s in read.snapshots) == sorted(members)
    one = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(
        snapshot_id=f"InCluster:///{RD}/1/gs-1")).entries
    assert [(e.snapshot.source_volume_id, e.snapshot.size_bytes) for e in one] == [(b, 2 * GIB)]
    of_a = env.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(source_volume_id=a)).entries
    assert [e.snapshot.snapshot_id for e in of_a] == [f"InCluster:///{RD}/0/gs-1"]
    # a member's part is neither deleted alone nor restored alone (not supported yet)
    code, msg = _code(env.ctl.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(
        snapshot_id=f"InCluster:///{RD}/0/gs-1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "VolumeGroupSnapshot" in msg
    code, msg = _code(env.ctl.CreateVolume, _restore(env, "unlabelled", 0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not supported" in msg
    # restored into a new group: each claim takes its member's volume number
    vm3 = ids.consistency_group_rd(NS, "vm3")
    rb = env.ctl.CreateVolume(_restore(env, "r-b", 1, size=2 * GIB)).volume
    assert (rb.volume_id, rb.capacity_bytes) == (f"{vm3}/1", 2 * GIB)
    assert sorted(_vds(env, vm3)) == [0, 1]  # LINSTOR restores the whole snapshot
    # member 1 was raw block: as a filesystem it is mounted if it has one, never formatted
    assert _vds(env, vm3)[1]["props"]["Aux/csi-from-raw-block"] == "true"
    assert f"{vm3}/0" not in _listed(env)  # volume 0 is not a volume until a claim takes it
    assert env.ctl.CreateVolume(_restore(env, "r-b", 1, size=2 * GIB)).volume.volume_id \
        == rb.volume_id  # a retry
    ra = env.ctl.CreateVolume(_restore(env, "r-a", 0, size=2 * GIB)).volume
    assert (ra.volume_id, ra.capacity_bytes) == (f"{vm3}/0", 2 * GIB)  # grown as asked
    assert _listed(env)[ra.volume_id] == 2 * GIB and _listed(env)[rb.volume_id] == 2 * GIB
    # not into a group holding other volumes, and a group member only from a member snapshot
    code, msg = _code(env.ctl.CreateVolume, _restore(env, "r-x", 0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "new consistency-group label" in msg
    env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(name="plain-snap",
                                                         source_volume_id=plain))
    other = _claim(env, "r-x")
    other.volume_content_source.snapshot.snapshot_id = f"InCluster:///{plain}/plain-snap"
    code, msg = _code(env.ctl.CreateVolume, other)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "only from a member" in msg
    env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(
        snapshot_id=f"InCluster:///{plain}/plain-snap"))
    for vid in (ra.volume_id, rb.volume_id):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    assert vm3 not in env.rds()
    # the members go; the resource stays, hidden, for the snapshot
    for vid in (a, b):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
    assert RD in env.rds()
    assert list(_listed(env)) == [plain]
    # a new member revives it, with a number the snapshot does not hold
    c = env.ctl.CreateVolume(_claim(env, "disk-b")).volume.volume_id  # name reused
    assert c == f"{RD}/2"
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=c))
    # emptied again, the group itself takes a restore of its own snapshot (a VM brought back)
    rx = env.ctl.CreateVolume(_restore(env, "r-x", 1, size=2 * GIB)).volume.volume_id
    assert rx == f"{RD}/1" and list(_listed(env)) == [rx, plain]
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rx))
    assert _vds(env) == {}  # the volume no claim took went with the last member
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=gid, snapshot_ids=list(members)))
    assert env.snapshots() == [] and env.rds() == [plain]  # collected with its snapshot
    env.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=gid))  # gone: OK
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=plain))


def _restore(env, claim: str, vnr: int, size: int = GIB, snapshot: str = "gs-1"):
    req = _claim(env, claim, size=size)
    req.volume_content_source.snapshot.snapshot_id = f"InCluster:///{RD}/{vnr}/{snapshot}"
    return req


def _listed(env) -> dict[str, int]:
    return {e.volume.volume_id: e.volume.capacity_bytes
            for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries}

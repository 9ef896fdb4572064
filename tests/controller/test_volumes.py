"""Controller volume RPCs, on the simulator and on real LINSTOR (tests/controller/conftest.py)."""

from __future__ import annotations

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from tests.controller.conftest import (
    BLOCK,
    GIB,
    MOUNT,
    backend_env,
    close_env,
    code_of,
    create_req,
    sim_only,
)
from tests.real_linstor import THIN_POOL

Mode = csi_pb2.VolumeCapability.AccessMode
R3 = {"placementCount": "3", "storagePool": "DfltStorPool"}
R2 = {"linstor.csi.linbit.com/placementCount": "2", "linstor.csi.linbit.com/storagePool": "sp1"}


def diskful_nodes(env, rd):
    return sorted(r["node_name"] for r in env.client.get(f"/v1/resource-definitions/{rd}/resources",
                                                         deadline=_dl())
                  if "DISKLESS" not in (r.get("flags") or []))


def _dl():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


@sim_only("the example classes place 3 and 2 replicas")
def test_create_uses_example_classes_and_is_idempotent(env):
    for name, params, count in (("pvc-r3", R3, 3), ("pvc-r2", R2, 2)):
        vol = env.ctl.CreateVolume(create_req(name, params=params)).volume
        assert vol.volume_id == name and vol.capacity_bytes == GIB
        assert vol.volume_context["linstor.csi.linbit.com/uses-volume-context"] == "true"
        assert vol.volume_context["linstor.csi.linbit.com/remote-access-policy"] == "true"
        assert list(vol.accessible_topology) == []  # reachable from everywhere
        assert len(diskful_nodes(env, name)) == count
        again = env.ctl.CreateVolume(create_req(name, params=params)).volume
        assert again.volume_id == vol.volume_id and again.capacity_bytes == vol.capacity_bytes
    assert sorted(env.sim.list_resource_definitions()) == ["pvc-r2", "pvc-r3"]


def test_create_get_list_delete_and_idempotency(env):
    params = env.params(placementCount="1")
    vol = env.ctl.CreateVolume(create_req("pvc-basic", params=params)).volume
    assert vol.volume_id == "pvc-basic" and vol.capacity_bytes == GIB
    assert env.ctl.CreateVolume(create_req("pvc-basic", params=params)).volume == vol
    assert len(diskful_nodes(env, "pvc-basic")) == 1
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-basic"))
    assert got.volume.capacity_bytes == GIB and not got.status.volume_condition.abnormal
    listed = env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries
    assert [e.volume.volume_id for e in listed] == ["pvc-basic"]
    for _ in range(2):  # idempotent
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-basic"))
    assert code_of(env.ctl.ControllerGetVolume, csi_pb2.ControllerGetVolumeRequest(
        volume_id="pvc-basic")) == grpc.StatusCode.NOT_FOUND
    assert env.leftovers() == ([], [])


def test_incompatible_recreate_is_already_exists(env):
    one = env.params(R2)
    other = R3 if env.sim else {**env.params(), "storagePool": THIN_POOL}
    env.ctl.CreateVolume(create_req("pvc-a", params=one))
    assert code_of(env.ctl.CreateVolume, create_req("pvc-a", size=2 * GIB, params=one)) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert code_of(env.ctl.CreateVolume, create_req("pvc-a", params=other)) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert code_of(env.ctl.CreateVolume, create_req("pvc-a", params=one, cap=BLOCK)) == \
        grpc.StatusCode.ALREADY_EXISTS
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-a"))


def test_capacity_rules(env):
    req = create_req("pvc-size", size=1000, params=env.params())
    vol = env.ctl.CreateVolume(req).volume
    assert vol.capacity_bytes == 2 * 1024 * 1024  # ext4 minimum
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-limit", volume_capabilities=[MOUNT], parameters=env.params(),
        capacity_range=csi_pb2.CapacityRange(required_bytes=5000, limit_bytes=4000))
    assert code_of(env.ctl.CreateVolume, req) == grpc.StatusCode.OUT_OF_RANGE
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-xfs", parameters=env.params(), volume_capabilities=[csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="xfs"),
            access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))],
        capacity_range=csi_pb2.CapacityRange(limit_bytes=100 * 1024 * 1024))
    assert code_of(env.ctl.CreateVolume, req) == grpc.StatusCode.OUT_OF_RANGE
    odd = env.ctl.CreateVolume(create_req("pvc-odd", size=GIB + 1, params=env.params())).volume
    assert odd.capacity_bytes == GIB + 1024
    _delete_all(env)


def _delete_all(env):
    """Delete every volume the way the CO does (the real backend must be left empty)."""
    for entry in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries:
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=entry.volume.volume_id))
    assert env.leftovers() == ([], [])


def test_access_modes(env):
    rwx_mount = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                                         access_mode=Mode(mode=Mode.MULTI_NODE_MULTI_WRITER))
    assert code_of(env.ctl.CreateVolume, create_req("pvc-rwx", cap=rwx_mount,
                                                    params=env.params())) == \
        grpc.StatusCode.INVALID_ARGUMENT
    rwx_block = csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                         access_mode=Mode(mode=Mode.MULTI_NODE_MULTI_WRITER))
    if env.sim:
        env.ctl.CreateVolume(create_req("pvc-rwx-block", cap=rwx_block, params=env.params()))
    else:  # several writers need DRBD: refused with layerList storage
        with pytest.raises(grpc.RpcError) as err:
            env.ctl.CreateVolume(create_req("pvc-rwx-block", cap=rwx_block, params=env.params()))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs the drbd layer" in err.value.details()
    for mode in (Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER,
                 Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY):
        cap = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                                       access_mode=Mode(mode=mode))
        env.ctl.CreateVolume(create_req(f"pvc-mode-{mode}", cap=cap, params=env.params()))
    bad_fs = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ntfs"),
                                      access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))
    assert code_of(env.ctl.CreateVolume, create_req("pvc-ntfs", cap=bad_fs,
                                                    params=env.params())) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(env.ctl.CreateVolume, create_req("pvc-p", params={**env.params(),
                                                                     "bogus": "1"})) == \
        grpc.StatusCode.INVALID_ARGUMENT
    _delete_all(env)


def test_missing_storage_pool_is_invalid_argument_and_leaves_nothing(env):
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req("pvc-nopool", params={**env.params(),
                                                              "storagePool": "nosuchpool"}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "storagePool" in err.value.details() and "nosuchpool" in err.value.details()
    assert env.rds() == []


def test_not_enough_nodes_is_resource_exhausted(env):
    more = {**env.params(), "placementCount": str(len(env.nodes) + 1)}
    assert code_of(env.ctl.CreateVolume, create_req("pvc-r4", params=more)) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert env.rds() == []


@sim_only("counts the REST calls the simulator served")
def test_rest_call_budget(env):
    version = "GET /v1/controller/version"
    later_version_checks = 0

    def calls(fn, *args):
        nonlocal later_version_checks
        env.sim.reset_counts()
        result = fn(*args)
        counts = env.counts()
        later_version_checks += counts.get(version, 0)
        return sum(counts.values()), result

    env.sim.reset_counts()
    env.ctl.CreateVolume(create_req("pvc-warm", params=R2))  # creates the resource group
    counts = env.counts()
    # The REST version check runs once per driver process (the client caches the answer).
    assert counts.pop(version, 0) == 1
    first = sum(counts.values())
    create, _ = calls(env.ctl.CreateVolume, create_req("pvc-count", params=R2))
    node = next(n for n in ("node-1", "node-2", "node-3")
                if n not in diskful_nodes(env, "pvc-count"))
    publish, pub = calls(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-count", node_id=node, volume_capability=MOUNT))
    unpublish, _ = calls(env.ctl.ControllerUnpublishVolume,
                         csi_pb2.ControllerUnpublishVolumeRequest(volume_id="pvc-count",
                                                                  node_id=node))
    delete, _ = calls(env.ctl.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id="pvc-count"))
    print(f"REST calls: first create={first} (+1 version check) create={create} "
          f"publish={publish} unpublish={unpublish} delete={delete}")
    # publish: the resource definition (its access type says whether the volume was created as
    # raw block, issue 12; its IO QoS limits), the resources, make-available, and for the
    # attachment record (issue 17) the node's recorded attachments (attach limit, read-only
    # check: two filtered reads, plain records and consistency-group members' shared
    # resources, as LINSTOR's props filter ANDs exact keys) and the record itself; unpublish:
    # the resources and the diskless attachment's removal
    assert first <= 3 and create <= 3 and publish <= 6 and unpublish <= 2 and delete <= 2
    assert later_version_checks == 0
    assert pub.publish_context["linstor.csi.linbit.com/device-path"].rsplit("/", 1)[-1].startswith("drbd")


def test_publish_and_unpublish_on_the_replica_node(env):
    vol = env.ctl.CreateVolume(create_req("pvc-here", params=env.params(placementCount="1")))
    replica = diskful_nodes(env, "pvc-here")[0]
    for _ in range(2):  # idempotent
        ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-here", node_id=replica, volume_capability=MOUNT,
            volume_context=dict(vol.volume.volume_context))).publish_context
        assert ctx["linstor.csi.linbit.com/fs-type"] == "ext4"
        assert ctx["linstor.csi.linbit.com/access-type"] == "mount"
        device = ctx["linstor.csi.linbit.com/device-path"]
        # real: FILE_THIN without DRBD is the satellite's loop device; the model attaches DRBD
        assert device.startswith("/dev/loop") if env.real else "/drbd" in device, device
    assert code_of(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-here", node_id="node-99", volume_capability=MOUNT)) == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-nope", node_id=replica, volume_capability=MOUNT)) == \
        grpc.StatusCode.NOT_FOUND
    for _ in range(2):
        env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id="pvc-here", node_id=replica))
    assert diskful_nodes(env, "pvc-here") == [replica]  # the data stays where it was
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-here"))


@sim_only("diskless attach on a node without a replica; an offline satellite")
def test_publish_unpublish(env):
    env.ctl.CreateVolume(create_req("pvc-pub", params={"placementCount": "1"}))
    replica = diskful_nodes(env, "pvc-pub")[0]
    other = next(n for n in ("node-1", "node-2", "node-3") if n != replica)
    many = csi_pb2.VolumeCapability(mount=MOUNT.mount, access_mode=csi_pb2.VolumeCapability.
                                    AccessMode(mode=csi_pb2.VolumeCapability.AccessMode.
                                               MULTI_NODE_READER_ONLY))
    for node in (replica, other):
        if node == other:
            # single-node access: published to the replica's node, so not to a second node
            # (CSI: FAILED_PRECONDITION), and nothing is created there
            with pytest.raises(grpc.RpcError) as err:
                env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                    volume_id="pvc-pub", node_id=node, volume_capability=MOUNT))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert replica in err.value.details() and "single-node" in err.value.details()
            assert other not in [r["node_name"] for r in env.client.get(
                "/v1/resource-definitions/pvc-pub/resources", deadline=_dl())]
        ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-pub", node_id=node, readonly=True,
            volume_capability=MOUNT if node == replica else many)).publish_context
        assert ctx["linstor.csi.linbit.com/uses-publish-context"] == "true"
        assert ctx["linstor.csi.linbit.com/fs-type"] == "ext4"
        assert ctx["linstor.csi.linbit.com/device-path"].rsplit("/", 1)[-1].startswith("drbd")
        assert ctx["linstor.csi.linbit.com/access-type"] == "mount"
    res = {r["node_name"]: r for r in env.client.get("/v1/resource-definitions/pvc-pub/resources",
                                                     deadline=_dl())}
    assert "DISKLESS" in res[other]["flags"]
    for node in (replica, other, other):  # twice: idempotent
        env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id="pvc-pub", node_id=node))
    nodes = [r["node_name"] for r in env.client.get("/v1/resource-definitions/pvc-pub/resources",
                                                    deadline=_dl())]
    assert nodes == [replica]  # the diskful replica stays, the attachment is gone
    assert code_of(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-nope", node_id="node-1", volume_capability=MOUNT)) == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-pub", node_id="node-99", volume_capability=MOUNT)) == \
        grpc.StatusCode.NOT_FOUND
    env.sim.set_node_online(other, False)
    assert code_of(env.ctl.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-pub", node_id=other, volume_capability=MOUNT)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    nodes = [r["node_name"] for r in env.client.get("/v1/resource-definitions/pvc-pub/resources",
                                                    deadline=_dl())]
    assert nodes == [replica]


@sim_only("a node without the replica")
def test_local_only_policy(env):
    params = {"placementCount": "1", "allowRemoteVolumeAccess": "false"}
    vol = env.ctl.CreateVolume(create_req("pvc-local", params=params)).volume
    replica = diskful_nodes(env, "pvc-local")[0]
    assert [dict(t.segments) for t in vol.accessible_topology] == \
        [{"linbit.com/hostname": replica}]
    other = next(n for n in ("node-1", "node-2", "node-3") if n != replica)
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-local", node_id=other, volume_capability=MOUNT,
            volume_context=dict(vol.volume_context)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert replica in err.value.details()


@sim_only("the quorum tiebreaker needs DRBD and three nodes")
def test_local_only_policy_holds_on_the_tiebreakers_node(env):
    """Two replicas get LINSTOR's quorum tiebreaker on the third node (§9 C5). That node has
    no data: a local-only class must refuse it like any other, not turn the tiebreaker into
    an attachment."""
    params = {"placementCount": "2", "allowRemoteVolumeAccess": "false"}
    vol = env.ctl.CreateVolume(create_req("pvc-ltb", params=params)).volume
    res = {r["node_name"]: r.get("flags") or [] for r in env.client.get(
        "/v1/resource-definitions/pvc-ltb/resources", deadline=_dl())}
    (tb,) = [n for n, f in res.items() if "TIE_BREAKER" in f]
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-ltb", node_id=tb, volume_capability=MOUNT,
            volume_context=dict(vol.volume_context)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "allowRemoteVolumeAccess" in err.value.details()
    flags = env.client.get(f"/v1/resource-definitions/pvc-ltb/resources/{tb}",
                           deadline=_dl())["flags"]
    assert "TIE_BREAKER" in flags, "still the tiebreaker, not an attachment"


@sim_only("the quorum tiebreaker needs DRBD and three nodes; offline nodes")
def test_an_unreachable_tiebreaker_does_not_make_the_volume_abnormal(env):
    """The tiebreaker LINSTOR adds beside two replicas holds no data: with both replicas
    UpToDate the volume is healthy even while the tiebreaker's node is down; the message
    still says so. A replica's node going down is abnormal."""
    env.ctl.CreateVolume(create_req("pvc-tbh", params={"placementCount": "2"}))
    res = {r["node_name"]: r.get("flags") or [] for r in env.client.get(
        "/v1/resource-definitions/pvc-tbh/resources", deadline=_dl())}
    (tb,) = [n for n, f in res.items() if "TIE_BREAKER" in f]
    env.sim.set_node_online(tb, False)
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-tbh"))
    cond = got.status.volume_condition
    assert not cond.abnormal, cond.message
    assert tb in cond.message and "tiebreaker" in cond.message
    env.sim.set_node_online(tb, True)
    replica = diskful_nodes(env, "pvc-tbh")[0]
    env.sim.set_node_online(replica, False)
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-tbh"))
    assert got.status.volume_condition.abnormal
    assert replica in got.status.volume_condition.message
    env.sim.set_node_online(replica, True)


@sim_only("placement among three nodes")
def test_topology_preferred_and_requisite(env):
    def top(node):
        return csi_pb2.Topology(segments={"linbit.com/hostname": node})

    for count in (1, 2):
        name = f"pvc-pref-{count}"
        req = create_req(name, params={"placementCount": str(count),
                                       "allowRemoteVolumeAccess": "false"},
                         accessibility_requirements=csi_pb2.TopologyRequirement(
                             requisite=[top("node-1"), top("node-2"), top("node-3")],
                             preferred=[top("node-3"), top("node-1")]))
        vol = env.ctl.CreateVolume(req).volume
        assert "node-3" in diskful_nodes(env, name)
        assert len(diskful_nodes(env, name)) == count
        assert {"linbit.com/hostname": "node-3"} in [dict(t.segments)
                                                     for t in vol.accessible_topology]
    # requisite limits placement when remote access is not allowed
    req = create_req("pvc-req", params={"placementCount": "1", "allowRemoteVolumeAccess": "false"},
                     accessibility_requirements=csi_pb2.TopologyRequirement(
                         requisite=[top("node-2")]))
    env.ctl.CreateVolume(req)
    assert diskful_nodes(env, "pvc-req") == ["node-2"]


def test_validate_list_get(env):
    env.ctl.CreateVolume(create_req("pvc-v1", params=env.params()))
    env.ctl.CreateVolume(create_req("pvc-v2", cap=BLOCK, params=env.params()))
    env.ctl.CreateVolume(create_req("pvc-v3", params=env.params()))
    ok = env.ctl.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="pvc-v1", volume_capabilities=[MOUNT]))
    assert ok.confirmed.volume_capabilities
    no = env.ctl.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="pvc-v2", volume_capabilities=[MOUNT]))
    assert not no.HasField("confirmed") and "block" in no.message
    assert code_of(env.ctl.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="pvc-none", volume_capabilities=[MOUNT])) == grpc.StatusCode.NOT_FOUND
    page1 = env.ctl.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2))
    assert [e.volume.volume_id for e in page1.entries] == ["pvc-v1", "pvc-v2"]
    page2 = env.ctl.ListVolumes(csi_pb2.ListVolumesRequest(starting_token=page1.next_token))
    assert [e.volume.volume_id for e in page2.entries] == ["pvc-v3"] and not page2.next_token
    assert code_of(env.ctl.ListVolumes, csi_pb2.ListVolumesRequest(starting_token="bogus")) == \
        grpc.StatusCode.ABORTED
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-v1"))
    assert got.volume.capacity_bytes == GIB and not got.status.volume_condition.abnormal
    assert code_of(env.ctl.ControllerGetVolume, csi_pb2.ControllerGetVolumeRequest(
        volume_id="pvc-none")) == grpc.StatusCode.NOT_FOUND
    _delete_all(env)


@sim_only("DRBD disk states")
def test_get_volume_reports_a_replica_that_is_not_up_to_date(env):
    env.ctl.CreateVolume(create_req("pvc-v1"))
    node = diskful_nodes(env, "pvc-v1")[0]
    env.sim.set_disk_state("pvc-v1", node, "Outdated")
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-v1"))
    assert got.status.volume_condition.abnormal and node in got.status.volume_condition.message


def test_expand(env):
    env.ctl.CreateVolume(create_req("pvc-grow", params=env.params()))
    env.ctl.CreateVolume(create_req("pvc-grow-b", cap=BLOCK, params=env.params()))
    rsp = env.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-grow", capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB)))
    assert rsp.capacity_bytes == 2 * GIB and rsp.node_expansion_required
    rsp = env.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-grow", capacity_range=csi_pb2.CapacityRange(required_bytes=GIB)))
    assert rsp.capacity_bytes == 2 * GIB  # never shrinks; already large enough is OK
    rsp = env.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-grow-b", capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB)))
    assert not rsp.node_expansion_required
    assert code_of(env.ctl.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-none", capacity_range=csi_pb2.CapacityRange(required_bytes=GIB))) == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(env.ctl.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-grow", capacity_range=csi_pb2.CapacityRange(
            required_bytes=3 * GIB, limit_bytes=GIB))) == grpc.StatusCode.OUT_OF_RANGE
    vd = env.client.get("/v1/resource-definitions/pvc-grow/volume-definitions/0", deadline=_dl())
    assert vd["size_kib"] == 2 * GIB // 1024
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-grow"))
    assert got.volume.capacity_bytes == 2 * GIB
    _delete_all(env)


@sim_only("free space of pools on three nodes")
def test_capacity(env):
    pools = env.client.get("/v1/view/storage-pools", deadline=_dl())
    free = {(p["node_name"], p["storage_pool_name"]): p["free_capacity"] for p in pools
            if p.get("provider_kind") != "DISKLESS"}
    rsp = env.ctl.GetCapacity(csi_pb2.GetCapacityRequest(parameters=R3))
    expected = min(v for (n, sp), v in free.items() if sp == "DfltStorPool") * 1024
    assert rsp.available_capacity == expected == rsp.maximum_volume_size.value
    over = env.ctl.GetCapacity(csi_pb2.GetCapacityRequest(
        parameters={**R3, "overProvision": "2"})).available_capacity
    assert over > expected
    four = env.ctl.GetCapacity(csi_pb2.GetCapacityRequest(parameters={"placementCount": "4"}))
    assert four.available_capacity == 0
    seg = env.ctl.GetCapacity(csi_pb2.GetCapacityRequest(
        parameters={"placementCount": "1", "allowRemoteVolumeAccess": "false"},
        accessible_topology=csi_pb2.Topology(segments={"linbit.com/hostname": "node-1"})))
    assert seg.available_capacity == max(v for (n, _), v in free.items() if n == "node-1") * 1024
    assert code_of(env.ctl.GetCapacity, csi_pb2.GetCapacityRequest(parameters={"x": "1"})) == \
        grpc.StatusCode.INVALID_ARGUMENT


@sim_only("replicas on three nodes and one in use")
def test_modify(env):
    env.ctl.CreateVolume(create_req("pvc-mod", params={"placementCount": "1"}))
    env.ctl.ControllerModifyVolume(csi_pb2.ControllerModifyVolumeRequest(
        volume_id="pvc-mod", mutable_parameters={
            "placementCount": "3",
            "property.linstor.csi.linbit.com/DrbdOptions/Net/max-buffers": "8000"}))
    assert len(diskful_nodes(env, "pvc-mod")) == 3
    rd = env.client.get("/v1/resource-definitions/pvc-mod", deadline=_dl())
    assert rd["props"]["DrbdOptions/Net/max-buffers"] == "8000"
    busy = diskful_nodes(env, "pvc-mod")[0]
    env.sim.set_in_use("pvc-mod", busy, True)
    env.ctl.ControllerModifyVolume(csi_pb2.ControllerModifyVolumeRequest(
        volume_id="pvc-mod", mutable_parameters={"placementCount": "1"}))
    assert diskful_nodes(env, "pvc-mod") == [busy]  # the one in use is kept
    assert code_of(env.ctl.ControllerModifyVolume, csi_pb2.ControllerModifyVolumeRequest(
        volume_id="pvc-mod", mutable_parameters={"storagePool": "sp1"})) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(env.ctl.ControllerModifyVolume, csi_pb2.ControllerModifyVolumeRequest(
        volume_id="pvc-none", mutable_parameters={"placementCount": "2"})) == \
        grpc.StatusCode.NOT_FOUND
    vol = env.ctl.CreateVolume(create_req("pvc-mod2", params={"placementCount": "1"},
                                          mutable_parameters={"placementCount": "2"})).volume
    assert len(diskful_nodes(env, vol.volume_id)) == 2


@sim_only("nodeList and clientList over three nodes")
def test_manual_placement(env):
    env.ctl.CreateVolume(create_req("pvc-manual", params={"nodeList": "node-1 node-2",
                                                          "clientList": "node-3"}))
    res = {r["node_name"]: r.get("flags") or []
           for r in env.client.get("/v1/resource-definitions/pvc-manual/resources", deadline=_dl())}
    assert sorted(res) == ["node-1", "node-2", "node-3"]
    assert "DRBD_DISKLESS" in res["node-3"] and "DISKLESS" not in res["node-1"]


def test_use_pvc_name_and_invalid_names(env):
    vol = env.ctl.CreateVolume(create_req("pvc-xyz", params={
        **env.params(), "usePvcName": "true", "csi.storage.k8s.io/pvc/name": "data",
        "csi.storage.k8s.io/pvc/namespace": "db"})).volume
    assert vol.volume_id == "db-data"
    odd = env.ctl.CreateVolume(create_req("not a valid name", params=env.params())).volume
    assert odd.volume_id.startswith("vol-")
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="not/valid"))  # OK
    _delete_all(env)


@sim_only("a DRBD resource in use")
def test_delete_in_use_is_failed_precondition(env):
    env.ctl.CreateVolume(create_req("pvc-busy"))
    env.sim.set_in_use("pvc-busy", diskful_nodes(env, "pvc-busy")[0], True)
    assert code_of(env.ctl.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id="pvc-busy")) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert env.sim.list_resource_definitions() == ["pvc-busy"]


def test_default_remote_access_flag(request, backend, tmp_path):
    env = backend_env(request, backend, tmp_path, default_remote_access_policy="false")
    try:
        vol = env.ctl.CreateVolume(create_req("pvc-flag", params=env.params())).volume
        assert vol.volume_context["linstor.csi.linbit.com/remote-access-policy"] == "false"
        assert len(vol.accessible_topology) == 1
        _delete_all(env)
    finally:
        close_env(env)


@sim_only("a second node, without the data")
def test_a_volume_without_drbd_is_used_only_where_its_data_is(env):
    """layerList storage (§9 C6): no diskless client exists, and LINSTOR's make-available would
    give another node a new, empty disk; the driver refuses that node and says where the data is,
    its topology is the replica's node even when remote access is allowed, and its condition is
    not 'abnormal' for want of a DRBD disk state LINSTOR never reports for plain storage."""
    params = {"placementCount": "1", "layerList": "storage"}
    vol = env.ctl.CreateVolume(create_req("pvc-plain", params=params)).volume
    replica = diskful_nodes(env, "pvc-plain")[0]
    assert [dict(t.segments) for t in vol.accessible_topology] == \
        [{"linbit.com/hostname": replica}]
    other = next(n for n in ("node-1", "node-2", "node-3") if n != replica)
    # with the class's context, and without one (a static PV, a volume LINBIT's driver made)
    for context in (dict(vol.volume_context), {}):
        with pytest.raises(grpc.RpcError) as err:
            env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                volume_id="pvc-plain", node_id=other, volume_capability=MOUNT,
                volume_context=context))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert replica in err.value.details()
        assert diskful_nodes(env, "pvc-plain") == [replica], "nothing may be placed there"
    env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-plain", node_id=replica, volume_capability=MOUNT,
        volume_context=dict(vol.volume_context)))
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-plain"))
    assert not got.status.volume_condition.abnormal, got.status.volume_condition.message


def test_block_volume_is_never_published_as_a_filesystem(env):
    """A volume created as raw block may hold data with no signature: a filesystem publish of it
    (a re-created Retained PV, a restore) is FAILED_PRECONDITION and attaches nothing."""
    env.ctl.CreateVolume(create_req("pvc-raw", params=env.params(placementCount="1"), cap=BLOCK))
    replica = diskful_nodes(env, "pvc-raw")[0]
    # a diskless node where there is one; on the one-node real backend, the replica's node
    other = next((n for n in env.nodes if n != replica), replica)
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-raw", node_id=other, volume_capability=MOUNT))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "raw block" in err.value.details() and "pvc-raw" in err.value.details()
    nodes = [r["node_name"] for r in env.client.get("/v1/resource-definitions/pvc-raw/resources",
                                                    deadline=_dl())]
    assert nodes == [replica]  # nothing was attached on the other node
    ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-raw", node_id=other, volume_capability=BLOCK)).publish_context
    assert ctx["linstor.csi.linbit.com/access-type"] == "block"
    # a volume without a recorded access type (LINBIT's driver) is published as before
    env.client.put("/v1/resource-definitions/pvc-raw", deadline=_dl(),
                   body={"delete_props": ["Aux/csi-access-type"]})
    ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-raw", node_id=other, volume_capability=MOUNT)).publish_context
    assert ctx["linstor.csi.linbit.com/access-type"] == "mount"
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id="pvc-raw", node_id=other))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-raw"))


def _fs_cap(fs_type):
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type),
                                    access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))


@pytest.mark.parametrize("fs_type", ["ext2", "ext3", "btrfs"])
def test_filesystems_the_node_cannot_handle_are_refused_up_front(env, fs_type):
    # The node plugin formats, grows and checks only ext4 and xfs: a volume with another
    # filesystem would be created and then never mount, leaving the pod stuck.
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req(f"pvc-{fs_type}", cap=_fs_cap(fs_type),
                                        params=env.params()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fs_type in err.value.details() and "ext4, xfs" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req(f"pvc-p-{fs_type}",
                                        params={**env.params(),
                                                "csi.storage.k8s.io/fstype": fs_type}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fs_type in err.value.details()
    assert env.rds() == []
    env.ctl.CreateVolume(create_req("pvc-fs-ok", params=env.params()))
    answer = env.ctl.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="pvc-fs-ok", volume_capabilities=[_fs_cap(fs_type)]))
    assert not answer.HasField("confirmed") and fs_type in answer.message
    for good in ("ext4", "xfs"):
        env.ctl.CreateVolume(create_req(f"pvc-{good}", cap=_fs_cap(good), params=env.params()))
    _delete_all(env)


@sim_only("counts the REST calls (none may reach LINSTOR); a node without the replica")
@pytest.mark.parametrize("node_id", ["../pvc-big", "../../pvc-big/resources/{free}",
                                     "{free}/../../pvc-big/resources/{free}", "node-1?x=1",
                                     "node_1", "-node"])
def test_node_id_that_is_not_a_linstor_node_name_touches_nothing(env, node_id):
    env.ctl.CreateVolume(create_req("pvc-small", params={"placementCount": "1"}))
    env.ctl.CreateVolume(create_req("pvc-big", params={"placementCount": "1"}))
    before = {rd: sorted(r["node_name"] for r in env.client.get(
        f"/v1/resource-definitions/{rd}/resources", deadline=_dl()))
        for rd in ("pvc-small", "pvc-big")}
    free = next(n for n in ("node-1", "node-2", "node-3") if n not in before["pvc-big"])
    node_id = node_id.format(free=free)
    env.sim.reset_counts()
    req = csi_pb2.ControllerPublishVolumeRequest(volume_id="pvc-small", node_id=node_id,
                                                 volume_capability=MOUNT)
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.ControllerPublishVolume(req)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not a valid LINSTOR node name" in err.value.details()
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id="pvc-small", node_id=node_id))  # cannot be attached there: OK
    assert env.counts() == {}, "nothing may reach LINSTOR"
    after = {rd: sorted(r["node_name"] for r in env.client.get(
        f"/v1/resource-definitions/{rd}/resources", deadline=_dl()))
        for rd in ("pvc-small", "pvc-big")}
    assert after == before


def test_storage_class_names_that_linstor_refuses_are_invalid_argument(env):
    for params in ({"storagePool": "../x"}, {"storagePool": "ok-pool p?"},
                   {"disklessStoragePool": "a/b"}, {"nodeList": "node-1 ../node-2"},
                   {"clientList": "node_3"}):
        with pytest.raises(grpc.RpcError) as err:
            env.ctl.CreateVolume(create_req("pvc-badname", params={**env.params(), **params}))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid LINSTOR" in err.value.details()
    assert env.rds() == []


@sim_only("1 and 3 replicas over three nodes")
def test_every_volume_gets_its_own_class_placement_whatever_the_shared_group_says(env):
    one = {"resourceGroup": "shared-rg", "placementCount": "1"}
    three = {"resourceGroup": "shared-rg", "placementCount": "3"}
    env.ctl.CreateVolume(create_req("pvc-one", params=one))
    env.ctl.CreateVolume(create_req("pvc-three", params=three))
    assert len(diskful_nodes(env, "pvc-one")) == 1
    assert len(diskful_nodes(env, "pvc-three")) == 3
    # An admin edits the group behind the driver's back: each class still gets its count.
    env.client.put("/v1/resource-groups/shared-rg", deadline=_dl(),
                   body={"select_filter": {"place_count": 2}})
    env.ctl.CreateVolume(create_req("pvc-three-again", params=three))
    env.ctl.CreateVolume(create_req("pvc-one-again", params=one))
    assert len(diskful_nodes(env, "pvc-three-again")) == 3
    assert len(diskful_nodes(env, "pvc-one-again")) == 1
    # The preferred-topology path (several steps) follows the class too.
    pref = csi_pb2.TopologyRequirement(preferred=[csi_pb2.Topology(
        segments={"linbit.com/hostname": "node-2"})])
    env.ctl.CreateVolume(create_req("pvc-three-pref", params=three,
                                    accessibility_requirements=pref))
    assert len(diskful_nodes(env, "pvc-three-pref")) == 3
    # Properties cannot differ per volume: a class contradicting the group's is refused,
    # even after another class of the same group was served.
    env.ctl.CreateVolume(create_req("pvc-prop", params={
        **one, "property.linstor.csi.linbit.com/DrbdOptions/Net/protocol": "A"}))  # added
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req("pvc-conflict-2", params={
            **three, "property.linstor.csi.linbit.com/DrbdOptions/Net/protocol": "C"}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DrbdOptions/Net/protocol" in err.value.details()


def test_node_topology_reports_the_diskless_pool_like_linbits_driver(env):
    from csi_linstor.mapping.topology import node_segments

    node = env.nodes[0]
    segs = node_segments(env.client, node, "Aux", True, _dl())
    # PVs provisioned by LINBIT's driver carry this key in their node affinity.
    assert segs["linbit.com/sp-DfltDisklessStorPool"] == "true"
    assert segs["linbit.com/hostname"] == node
    # GetCapacity for such a segment still counts only the diskful pool named in it
    pool = next(k for k in segs if k.startswith("linbit.com/sp-") and "Diskless" not in k)
    cap = env.ctl.GetCapacity(csi_pb2.GetCapacityRequest(
        volume_capabilities=[MOUNT], accessible_topology=csi_pb2.Topology(segments=segs)))
    assert cap.available_capacity > 0, pool


@sim_only("a resource group placing two replicas")
def test_placement_count_zero_takes_the_resource_groups_count(env):
    env.client.post("/v1/resource-groups", deadline=_dl(),
                    body={"name": "rg-two", "select_filter": {"place_count": 2}})
    env.ctl.CreateVolume(create_req("pvc-zero", params={"resourceGroup": "rg-two",
                                                        "placementCount": "0"}))
    assert len(diskful_nodes(env, "pvc-zero")) == 2
    # a generated group has no count of its own: say so instead of creating an empty volume
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req("pvc-zero-2", params={"placementCount": "0"}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "place_count" in err.value.details()
    assert sorted(env.sim.list_resource_definitions()) == ["pvc-zero"]

"""Attachment records (issue 17): the attach limit, read-only publishes and published nodes,
IO QoS in the publish context; on the simulator and on real LINSTOR."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.mapping import attachment
from csi_linstor.mapping.attachment_records import PROP_ATTACHED
from tests.controller.conftest import MOUNT, backend_env, close_env, code_of, create_req, sim_only


def _dl():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


@pytest.fixture
def limited(request, backend, tmp_path):
    e = backend_env(request, backend, tmp_path, max_volumes_per_node=2)
    yield e
    close_env(e)


def publish(env, vol, node, readonly=False):
    return env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vol, node_id=node, volume_capability=MOUNT, readonly=readonly))


def unpublish(env, vol, node):
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=vol, node_id=node))


def published(env, vol):
    got = env.ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vol))
    listed = {e.volume.volume_id: list(e.status.published_node_ids)
              for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries}
    assert listed[vol] == list(got.status.published_node_ids)
    return list(got.status.published_node_ids)


def test_attach_limit_refuses_the_next_volume_and_frees_a_slot_on_detach(limited):
    env = limited
    node = env.nodes[0]
    params = env.params(placementCount="1", nodeList=node) if env.sim else env.params()
    for name in ("pvc-a1", "pvc-a2", "pvc-a3"):
        env.ctl.CreateVolume(create_req(name, params=params))
    publish(env, "pvc-a1", node)
    publish(env, "pvc-a2", node)
    publish(env, "pvc-a1", node)  # an idempotent re-publish at the limit still succeeds
    with pytest.raises(grpc.RpcError) as err:
        publish(env, "pvc-a3", node)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert node in err.value.details() and "2" in err.value.details()
    assert "--max-volumes-per-node" in err.value.details()
    unpublish(env, "pvc-a2", node)
    unpublish(env, "pvc-a2", node)  # idempotent
    publish(env, "pvc-a3", node)
    assert published(env, "pvc-a3") == [node] and published(env, "pvc-a2") == []
    for name in ("pvc-a1", "pvc-a3"):
        unpublish(env, name, node)
    for name in ("pvc-a1", "pvc-a2", "pvc-a3"):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=name))
    assert env.rds() == []


@sim_only("diskless attachments on nodes without a replica")
def test_concurrent_publishes_never_exceed_the_limit(limited):
    env = limited
    names = [f"pvc-c{i}" for i in range(5)]
    for name in names:
        env.ctl.CreateVolume(create_req(name, params={"placementCount": "1",
                                                      "nodeList": "node-2"}))

    def attempt(name):
        try:
            publish(env, name, "node-1")
            return "ok"
        except grpc.RpcError as err:
            return err.code().name

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(attempt, names))
    assert sorted(results) == ["RESOURCE_EXHAUSTED"] * 3 + ["ok"] * 2, results
    attached = [r["name"] for r in env.client.get("/v1/view/resources", deadline=_dl(),
                                                  params={"nodes": ["node-1"]})
                if (r.get("props") or {}).get(PROP_ATTACHED)]
    assert len(attached) == 2


def test_readonly_republish_is_incompatible_and_published_nodes_follow(env):
    node = env.nodes[0]
    params = env.params(placementCount="1", nodeList=node) if env.sim else env.params()
    env.ctl.CreateVolume(create_req("pvc-ro", params=params))
    assert published(env, "pvc-ro") == []
    publish(env, "pvc-ro", node, readonly=True)
    publish(env, "pvc-ro", node, readonly=True)  # same attachment: fine
    assert code_of(publish, env, "pvc-ro", node, False) == grpc.StatusCode.ALREADY_EXISTS
    assert published(env, "pvc-ro") == [node]
    unpublish(env, "pvc-ro", node)
    assert published(env, "pvc-ro") == []
    res = env.client.get(f"/v1/resource-definitions/pvc-ro/resources/{node}", deadline=_dl())
    assert PROP_ATTACHED not in (res.get("props") or {})  # the replica stays, unrecorded
    publish(env, "pvc-ro", node, readonly=False)  # after the detach a read-write publish works
    assert published(env, "pvc-ro") == [node]
    unpublish(env, "pvc-ro", node)
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-ro"))


@sim_only("a diskless attachment beside the diskful replica")
def test_published_nodes_cover_diskful_and_diskless_attachments(env):
    env.ctl.CreateVolume(create_req("pvc-pn", params={"placementCount": "1",
                                                      "nodeList": "node-1"}))
    publish(env, "pvc-pn", "node-1")
    assert published(env, "pvc-pn") == ["node-1"]
    env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id="pvc-pn", node_id="node-3", volume_capability=csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY)),
        readonly=True))
    assert published(env, "pvc-pn") == ["node-1", "node-3"]
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id="pvc-pn"))  # no node: from every node
    assert published(env, "pvc-pn") == []
    nodes = [r["node_name"] for r in env.client.get("/v1/resource-definitions/pvc-pn/resources",
                                                    deadline=_dl())]
    assert nodes == ["node-1"]


def test_qos_limits_are_stored_on_the_rd_and_returned_in_the_publish_context(env):
    node = env.nodes[0]
    params = env.params(placementCount="1", nodeList=node) if env.sim else env.params()
    params = {**params, "qos.linbit.com/rbps": "40Mi", "qos.linbit.com/wiops": "500"}
    env.ctl.CreateVolume(create_req("pvc-qos", params=params))
    rd = env.client.get("/v1/resource-definitions/pvc-qos", deadline=_dl())
    assert rd["props"]["Aux/qos.linbit.com/rbps"] == str(40 << 20)
    assert rd["props"]["Aux/qos.linbit.com/wiops"] == "500"
    ctx = publish(env, "pvc-qos", node).publish_context
    assert ctx["qos.linbit.com/rbps"] == str(40 << 20)
    assert ctx["qos.linbit.com/wiops"] == "500"
    assert "qos.linbit.com/wbps" not in ctx and "qos.linbit.com/riops" not in ctx
    assert ctx["qos.linbit.com/device"] == ctx["linstor.csi.linbit.com/device-path"]
    unpublish(env, "pvc-qos", node)
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-qos"))
    plain = env.params(placementCount="1")
    env.ctl.CreateVolume(create_req("pvc-noqos", params=plain))
    on = env.nodes[0]
    ctx = publish(env, "pvc-noqos", on).publish_context
    assert not [k for k in ctx if k.startswith("qos.linbit.com/")]
    unpublish(env, "pvc-noqos", on)
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-noqos"))


def test_invalid_qos_is_refused_before_anything_is_created(env):
    params = {**env.params(placementCount="1"), "qos.linbit.com/wbps": "fast"}
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req("pvc-badqos", params=params))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "qos.linbit.com/wbps" in err.value.details()
    assert env.rds() == []


@sim_only("LINSTOR keeps a detached diskless resource as the quorum tiebreaker (2 replicas)")
def test_a_record_left_on_a_tiebreaker_does_not_count(limited):
    env = limited
    env.ctl.CreateVolume(create_req("pvc-tb", params={"placementCount": "2",
                                                      "nodeList": "node-1 node-2"}))
    publish(env, "pvc-tb", "node-3")
    unpublish(env, "pvc-tb", "node-3")
    tb = env.client.get("/v1/resource-definitions/pvc-tb/resources/node-3", deadline=_dl())
    assert "TIE_BREAKER" in tb["flags"]  # kept by LINSTOR, props and all
    assert published(env, "pvc-tb") == []
    publish(env, "pvc-tb", "node-3", readonly=True)  # not "incompatible" with the stale record
    assert published(env, "pvc-tb") == ["node-3"]
    for name in ("pvc-x1", "pvc-x2"):
        env.ctl.CreateVolume(create_req(name, params={"placementCount": "1",
                                                      "nodeList": "node-1"}))
    unpublish(env, "pvc-tb", "node-3")
    publish(env, "pvc-x1", "node-3")
    publish(env, "pvc-x2", "node-3")  # the tiebreaker's record is not one of the 2


def test_linstor_takes_the_two_primaries_properties_and_the_rd_keeps_working(env):
    """RWX block (test_rwx_block.py, simulator: two nodes) writes these properties; real
    LINSTOR validates DrbdOptions keys and values, so check it accepts them, keeps them on the
    resource definition, drops them again, and still serves the volume."""
    from csi_linstor.mapping.multiattach import PROP_MARKER, PROP_TWO_PRIMARIES

    env.ctl.CreateVolume(create_req("pvc-2p", params=env.params(placementCount="1")))
    node = env.nodes[0]
    env.client.put("/v1/resource-definitions/pvc-2p", deadline=_dl(),
                   body={"override_props": {PROP_TWO_PRIMARIES: "yes", PROP_MARKER: "yes"}})
    props = env.client.get("/v1/resource-definitions/pvc-2p", deadline=_dl())["props"]
    assert props[PROP_TWO_PRIMARIES] == "yes" and props[PROP_MARKER] == "yes"
    env.client.put("/v1/resource-definitions/pvc-2p", deadline=_dl(),
                   body={"delete_props": [PROP_TWO_PRIMARIES, PROP_MARKER]})
    props = env.client.get("/v1/resource-definitions/pvc-2p", deadline=_dl())["props"]
    assert PROP_TWO_PRIMARIES not in props and PROP_MARKER not in props
    publish(env, "pvc-2p", node)
    unpublish(env, "pvc-2p", node)
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-2p"))
    assert "pvc-2p" not in env.rds()


def _unreported(env, monkeypatch, name):
    """A volume on the first node whose satellite has not reported its state yet, with the
    driver's patience before it asks whether the node is online cut to 0.2 s."""
    monkeypatch.setattr(attachment, "STATE_WAIT_SECONDS", 0.2)
    node = env.nodes[0]
    env.ctl.CreateVolume(create_req(name, params={"placementCount": "1", "nodeList": node}))
    env.sim.set_reported(name, node, False)
    return node


@sim_only("a satellite that has not reported a new resource is a simulator knob")
def test_publish_waits_for_a_slow_satellite_while_its_node_is_online(env, monkeypatch):
    node = _unreported(env, monkeypatch, "pvc-slowsat")
    threading.Timer(1.0, env.sim.set_reported, ("pvc-slowsat", node, True)).start()
    began = time.monotonic()
    ctx = publish(env, "pvc-slowsat", node).publish_context
    assert time.monotonic() - began >= 1.0  # waited past its 0.2 s patience: the node is online
    assert "/dev/drbd" in ctx["linstor.csi.linbit.com/device-path"]


@sim_only("a satellite that has not reported a new resource is a simulator knob")
def test_publish_says_retry_when_an_online_satellite_stays_silent_to_the_deadline(env,
                                                                                monkeypatch):
    node = _unreported(env, monkeypatch, "pvc-silentsat")
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-silentsat", node_id=node, volume_capability=MOUNT), timeout=2.5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "has not reported" in err.value.details() and "retry" in err.value.details()
    env.sim.set_reported("pvc-silentsat", node, True)
    publish(env, "pvc-silentsat", node)  # the CO's retry succeeds once it reports


@sim_only("an offline satellite is a simulator knob")
@pytest.mark.parametrize("timeout", [None, 1.0], ids=["default-deadline", "short-deadline"])
def test_publish_fails_at_once_when_the_silent_satellite_is_offline(env, monkeypatch, timeout):
    """Offline is said as offline, also when the deadline runs out before the driver's
    patience does (it asks LINSTOR about the node before it answers "retry, node online")."""
    node = _unreported(env, monkeypatch, "pvc-offsat")
    if timeout is not None:
        monkeypatch.setattr(attachment, "STATE_WAIT_SECONDS", 30.0)
    env.sim.set_node_online(node, False)
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id="pvc-offsat", node_id=node, volume_capability=MOUNT), timeout=timeout)
    assert time.monotonic() - began < 5.0  # not the whole 120 s deadline
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert node in err.value.details() and "is offline" in err.value.details()

"""RWX raw block (issue 17): two DRBD primaries only while a second node is attached, never a
third node, the KubeVirt check before the second attachment, and single-node modes kept on one
node. Simulator: it models DRBD's promotion rule (a second Primary only with
allow-two-primaries), which the storage-layer-only real LINSTOR here cannot show."""

from __future__ import annotations

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition
from tests.controller.conftest import close_env, create_req, make_env, sim_only

pytestmark = sim_only("two nodes and DRBD promotion (the real LINSTOR here: one node, no DRBD)")

Mode = csi_pb2.VolumeCapability.AccessMode
TWO = "DrbdOptions/Net/allow-two-primaries"
MARK = "Aux/csi-two-primaries"


def block(mode: int) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                    access_mode=Mode(mode=mode))


RWX = block(Mode.MULTI_NODE_MULTI_WRITER)


@pytest.fixture
def env(tmp_path):
    e = make_env(tmp_path, rwx_block_validation=False)
    yield e
    close_env(e)


def _dl() -> Deadline:
    return Deadline(30)


def publish(env, vol: str, node: str, cap=RWX) -> None:
    env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vol, node_id=node, volume_capability=cap))


def unpublish(env, vol: str, node: str) -> None:
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=vol, node_id=node))


def refused(env, vol: str, node: str, cap=RWX) -> str:
    with pytest.raises(grpc.RpcError) as err:
        publish(env, vol, node, cap)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    return err.value.details()


def rd_props(env, vol: str) -> dict[str, str]:
    return env.client.get(f"/v1/resource-definitions/{vol}", deadline=_dl()).get("props") or {}


def resources(env, vol: str) -> dict[str, dict]:
    return {r["node_name"]: r for r in env.client.get(
        "/v1/view/resources", deadline=_dl(), params={"resources": [vol]})}


def may_promote(env, vol: str, node: str) -> bool:
    layer = resources(env, vol)[node]["layer_object"]
    return bool(layer["drbd"]["may_promote"])


def test_live_migration_gets_two_primaries_for_as_long_as_two_nodes_are_attached(env):
    env.ctl.CreateVolume(create_req("pvc-vm", cap=RWX, params={"placementCount": "2"}))
    a, b, c = "node-1", "node-2", "node-3"
    publish(env, "pvc-vm", a)
    publish(env, "pvc-vm", a)  # idempotent
    assert TWO not in rd_props(env, "pvc-vm")
    env.sim.set_in_use("pvc-vm", a, True)  # the VM runs on a: DRBD Primary there
    assert not may_promote(env, "pvc-vm", b)  # one Primary: b cannot take the disk yet

    publish(env, "pvc-vm", b)  # the migration target
    props = rd_props(env, "pvc-vm")
    assert props[TWO] == "yes" and props[MARK] == "yes"
    assert may_promote(env, "pvc-vm", b)  # the target can open the disk while a still has it
    publish(env, "pvc-vm", b)  # idempotent

    msg = refused(env, "pvc-vm", c)  # never a third
    assert a in msg and b in msg and "two primaries" in msg
    third = resources(env, "pvc-vm")[c]  # LINSTOR's quorum tiebreaker, left as it was
    assert "TIE_BREAKER" in third["flags"] and "Aux/csi-attached" not in third["props"]

    env.sim.set_in_use("pvc-vm", a, False)  # the source pod stops
    unpublish(env, "pvc-vm", a)
    props = rd_props(env, "pvc-vm")
    assert TWO not in props and MARK not in props  # back to one Primary
    assert all(MARK not in (r.get("props") or {}) for r in resources(env, "pvc-vm").values())
    unpublish(env, "pvc-vm", a)  # idempotent

    publish(env, "pvc-vm", c)  # migrate again, to the diskless node
    assert rd_props(env, "pvc-vm")[TWO] == "yes"
    for node in (b, c):
        unpublish(env, "pvc-vm", node)
    assert TWO not in rd_props(env, "pvc-vm")
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-vm"))
    assert env.rds() == []


def test_an_operators_own_two_primaries_setting_is_left_alone(env):
    env.ctl.CreateVolume(create_req("pvc-op", cap=RWX, params={"placementCount": "2"}))
    env.client.put("/v1/resource-definitions/pvc-op", deadline=_dl(),
                   body={"override_props": {TWO: "yes"}})
    publish(env, "pvc-op", "node-1")
    publish(env, "pvc-op", "node-2")
    assert MARK not in rd_props(env, "pvc-op")
    unpublish(env, "pvc-op", "node-2")
    assert rd_props(env, "pvc-op")[TWO] == "yes"


def test_the_kubevirt_check_decides_the_second_attachment(env):
    env.ctl.CreateVolume(create_req("pvc-k", cap=RWX, params={"placementCount": "2"}))
    asked: list[tuple] = []

    def not_one_vm(vol, ns, claim, deadline):
        asked.append((vol, ns, claim))
        raise FailedPrecondition(f"volume {vol} is used by web-1 (no KubeVirt VM), web-2")

    env.servicer.multiattach.pod_check = not_one_vm
    publish(env, "pvc-k", "node-1")
    assert asked == []  # a first attachment needs no check
    assert "web-1" in refused(env, "pvc-k", "node-2")
    assert asked == [("pvc-k", None, None)]
    assert TWO not in rd_props(env, "pvc-k")
    assert "node-2" not in {n for n, r in resources(env, "pvc-k").items()
                            if (r.get("props") or {}).get("Aux/csi-attached")}
    env.servicer.multiattach.pod_check = lambda *a: None
    publish(env, "pvc-k", "node-2")
    assert rd_props(env, "pvc-k")[TWO] == "yes"


def test_the_default_check_without_kubernetes_refuses_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    e = make_env(tmp_path)  # validation on (the default), no Kubernetes API here
    try:
        e.ctl.CreateVolume(create_req("pvc-d", cap=RWX, params={"placementCount": "2"}))
        publish(e, "pvc-d", "node-1")
        msg = refused(e, "pvc-d", "node-2")
        assert "Kubernetes API" in msg and "--disable-rwx-block-validation" in msg
    finally:
        close_env(e)


def test_single_writer_and_readers_share_without_two_primaries(env):
    single = block(Mode.MULTI_NODE_SINGLE_WRITER)
    env.ctl.CreateVolume(create_req("pvc-sw", cap=single, params={"placementCount": "2"}))
    for node in ("node-1", "node-2", "node-3"):
        publish(env, "pvc-sw", node, single)
    assert TWO not in rd_props(env, "pvc-sw")
    one = block(Mode.SINGLE_NODE_WRITER)
    env.ctl.CreateVolume(create_req("pvc-one", cap=one, params={"placementCount": "2"}))
    publish(env, "pvc-one", "node-1", one)
    msg = refused(env, "pvc-one", "node-2", one)
    assert "node-1" in msg and "single-node" in msg
    assert code_unknown_node(env) == grpc.StatusCode.NOT_FOUND


def code_unknown_node(env) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        publish(env, "pvc-one", "node-99", block(Mode.SINGLE_NODE_WRITER))
    return err.value.code()


def test_a_volume_without_drbd_is_never_shared(env):
    env.ctl.CreateVolume(create_req("pvc-raw", cap=block(Mode.MULTI_NODE_READER_ONLY), params={
        "placementCount": "2", "layerList": "storage"}))
    reader = block(Mode.MULTI_NODE_READER_ONLY)
    on = sorted(resources(env, "pvc-raw"))
    publish(env, "pvc-raw", on[0], reader)
    msg = refused(env, "pvc-raw", on[1], reader)
    assert "no DRBD layer" in msg and on[0] in msg


def test_an_abandoned_second_attach_does_not_leave_two_primaries_allowed(env):
    """A publish that allowed two primaries and then stopped (a crash before LINSTOR attached
    the volume there, or a refusal after) leaves no record on that node; the unpublish the CO
    sends for it takes two primaries away again."""
    env.ctl.CreateVolume(create_req("pvc-ab", cap=RWX, params={"placementCount": "2"}))
    publish(env, "pvc-ab", "node-1")
    # what the interrupted publish to node-3 had done: the properties, nothing else
    env.client.put("/v1/resource-definitions/pvc-ab", deadline=_dl(),
                   body={"override_props": {TWO: "yes", MARK: "yes"}})
    unpublish(env, "pvc-ab", "node-3")
    props = rd_props(env, "pvc-ab")
    assert TWO not in props and MARK not in props
    unpublish(env, "pvc-ab", "node-1")

"""REST API version gating against simulators that speak older REST versions.

Below REST 1.22.0 the driver refuses to create or change volumes (FAILED_PRECONDITION naming
both versions) and writes nothing. On 1.22–1.25 a clone request cannot carry props (the
simulator, like LINSTOR, rejects unknown request fields), so the driver clones first and then
sets the clone's props; a create interrupted at any step still converges.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.deadline import Deadline
from csi_linstor.sim import SimConfig
from csi_linstor.sim.simulator import PoolSpec
from tests.controller.conftest import GIB, close_env, create_req, make_env, sim_only
from tests.controller.test_crash import CLONE_STEPS, _assert_clean, _retry

# The real backend is LINSTOR 1.33.3 (REST 1.27): only simulators speak the older versions.
pytestmark = sim_only("older LINSTOR REST API versions, and fault injection")

SOURCE = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
    volume_id="pvc-orig"))
CLASS = {"placementCount": "2"}


def _env(tmp_path: Path, rest: str, release: str = "1.33.3"):
    # LVM_THIN: a pool kind LINSTOR can clone (DeviceProviderKind.isCloneSupported)
    pools = [PoolSpec("DfltStorPool", "LVM_THIN"), PoolSpec("sp1", "LVM_THIN")]
    return make_env(tmp_path, sim_config=SimConfig(nodes=3, rest_api_version=rest,
                                                    version=release, pools=pools))


@pytest.fixture
def old_env(tmp_path):
    e = _env(tmp_path, "1.21.0", release="1.26.0")
    yield e
    close_env(e)


@pytest.fixture
def env_122(tmp_path):
    e = _env(tmp_path, "1.22.0", release="1.27.0")
    yield e
    close_env(e)


def _props(env, rd: str) -> dict[str, str]:
    return env.client.get(f"/v1/resource-definitions/{rd}", deadline=Deadline(30)).get("props", {})


def test_below_minimum_rest_version_refuses_and_writes_nothing(old_env):
    with pytest.raises(grpc.RpcError) as err:
        old_env.ctl.CreateVolume(create_req("pvc-old", params=CLASS))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details()
    assert "REST API 1.21.0" in details and "REST API 1.22.0" in details, details
    assert "LINSTOR controller 1.26.0" in details and "LINSTOR 1.27.0" in details, details
    with pytest.raises(grpc.RpcError) as err:
        old_env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(name="s1",
                                                                 source_volume_id="pvc-old"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [k for k in old_env.counts() if not k.startswith("GET ")] == []
    assert old_env.sim.list_resource_definitions() == []
    # Cleaning up is never refused.
    old_env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="pvc-old"))


def test_supported_version_is_read_once(env_122):
    for name in ("pvc-a", "pvc-b"):
        env_122.ctl.CreateVolume(create_req(name, params=CLASS))
    env_122.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id="pvc-a", capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB)))
    assert env_122.counts().get("GET /v1/controller/version") == 1


def test_clone_on_rest_1_22_sets_the_clones_props_after_cloning(env_122):
    env = env_122
    env.ctl.CreateVolume(create_req("pvc-orig", params={
        **CLASS, "csi.storage.k8s.io/pvc/name": "data",
        "csi.storage.k8s.io/pvc/namespace": "ns1"}))
    source_before = _props(env, "pvc-orig")
    env.sim.set_clone_behaviour(polls=2)
    vol = env.ctl.CreateVolume(create_req("pvc-copy", size=2 * GIB, params=CLASS,
                                          volume_content_source=SOURCE)).volume
    assert vol.volume_id == "pvc-copy" and vol.capacity_bytes == 2 * GIB
    props = _props(env, "pvc-copy")
    assert props["Aux/csi-volume-name"] == "pvc-copy"
    assert props["Aux/csi-content-source"] == "volume:pvc-orig"
    assert props["Aux/csi-access-type"] == "mount" and props["Aux/csi-fs-type"] == "ext4"
    assert props["Aux/csi-provisioning-completed-by"].startswith("linstor-csi")
    # the source's PVC identity is not copied onto the clone
    assert "Aux/csi.storage.k8s.io/pvc/name" not in props
    assert "Aux/csi.storage.k8s.io/pvc/namespace" not in props
    assert _props(env, "pvc-orig") == source_before
    bodies = [(m, route, body) for m, route, body in env.sim.request_bodies()
              if route.startswith("/v1/resource-definitions/{rd}")]
    clone = [b for m, r, b in bodies if m == "POST" and r.endswith("/clone")]
    assert clone == [{"name": "pvc-copy"}]  # resource_group is REST 1.24+
    # the props PUT comes right after the clone and leaves the done marker for last
    puts = [b for m, r, b in bodies if m == "PUT" and r == "/v1/resource-definitions/{rd}"]
    assert "Aux/csi-provisioning-completed-by" in puts[0]["delete_props"]
    assert "Aux/csi-provisioning-completed-by" not in puts[0]["override_props"]
    assert puts[-1] == {"override_props": {
        "Aux/csi-provisioning-completed-by": props["Aux/csi-provisioning-completed-by"]}}
    listed = {e.volume.volume_id: e.volume.capacity_bytes
              for e in env.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries}
    assert listed == {"pvc-orig": GIB, "pvc-copy": 2 * GIB}
    again = env.ctl.CreateVolume(create_req("pvc-copy", size=2 * GIB, params=CLASS,
                                            volume_content_source=SOURCE)).volume
    assert again.volume_id == "pvc-copy"


@pytest.mark.parametrize("mode", ["drop", "fail"])
@pytest.mark.parametrize("route", CLONE_STEPS)
def test_clone_on_rest_1_22_converges_after_a_failure_at_any_step(env_122, mode, route):
    """``PUT /v1/resource-definitions/{rd}`` fails first at the props PUT: with ``fail`` the
    clone is left with the source's props (done marker included) and must still converge."""
    env = env_122
    rgs = env.rgs()
    env.ctl.CreateVolume(create_req("pvc-orig", params=CLASS))
    (env.sim.drop_next if mode == "drop" else env.sim.fail_next)(1, route=route)
    req = create_req("pvc-copy", size=2 * GIB, params=CLASS, volume_content_source=SOURCE)
    vol = _retry(env.ctl.CreateVolume, req).volume
    assert vol.capacity_bytes == 2 * GIB
    props = _props(env, "pvc-copy")
    assert props["Aux/csi-volume-name"] == "pvc-copy"
    assert props["Aux/csi-content-source"] == "volume:pvc-orig"
    assert props["Aux/csi-provisioning-completed-by"].startswith("linstor-csi")
    assert _props(env, "pvc-orig")["Aux/csi-volume-name"] == "pvc-orig"
    for rd in ("pvc-orig", "pvc-copy"):
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    _assert_clean(env, rgs)


@pytest.fixture
def env_123(tmp_path):
    e = _env(tmp_path, "1.23.0", release="1.28.0")
    yield e
    close_env(e)


def test_clone_into_another_class_below_rest_1_24_moves_it_into_the_class_group(env_122):
    """REST 1.22/1.23 reject ``resource_group`` in a clone request (API_CALL_PARSE_ERROR): the
    clone is made in the source's group and moved into the class's group right after."""
    env = env_122
    env.ctl.CreateVolume(create_req("pvc-orig", params=CLASS))
    other = {"placementCount": "2", "storagePool": "sp1"}
    vol = env.ctl.CreateVolume(create_req("pvc-copy", params=other,
                                          volume_content_source=SOURCE)).volume
    groups = {rd["name"]: rd["resource_group_name"] for rd in env.client.get(
        "/v1/resource-definitions", deadline=Deadline(30))}
    assert groups["pvc-copy"] != groups["pvc-orig"]
    # the same request again is compatible: the clone is in the class's group
    assert env.ctl.CreateVolume(create_req("pvc-copy", params=other,
                                           volume_content_source=SOURCE)).volume == vol
    assert not [b for m, r, b in env.sim.request_bodies()
                if r.endswith("/clone") and "resource_group" in b]


def test_x_replicas_on_different_needs_rest_1_23(env_122):
    env = env_122
    params = {"placementCount": "2", "xReplicasOnDifferent": "zone: 1"}
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req("pvc-x", params=params))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "xReplicasOnDifferent" in err.value.details()
    assert "1.23.0" in err.value.details() and "1.22.0" in err.value.details()
    assert [k for k in env.counts() if not k.startswith("GET ")] == []
    env.ctl.CreateVolume(create_req("pvc-y", params=CLASS))  # other classes still work


def test_rest_1_23_takes_x_replicas_but_not_the_clone_group(env_123):
    env = env_123
    params = {"placementCount": "2", "xReplicasOnDifferent": "zone: 1"}
    env.ctl.CreateVolume(create_req("pvc-x", params=params))
    rgs = env.client.get("/v1/resource-groups", deadline=Deadline(30))
    assert any((rg.get("select_filter") or {}).get("x_replicas_on_different_map")
               == {"Aux/zone": 1} for rg in rgs)
    src = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
        volume_id="pvc-x"))
    vol = env.ctl.CreateVolume(create_req("pvc-x2", params=params,
                                          volume_content_source=src)).volume
    assert vol.volume_id == "pvc-x2"
    assert [b for m, r, b in env.sim.request_bodies() if r.endswith("/clone")] == [
        {"name": "pvc-x2"}]

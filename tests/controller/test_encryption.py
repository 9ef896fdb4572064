"""encryption: "true" (issue 17): LINSTOR's LUKS layer, and its master passphrase as LINSTOR
requires it (csi_linstor/sim/luks.py cites LINSTOR's source for each rule)."""

from __future__ import annotations

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from tests.controller.conftest import MOUNT, create_req, sim_only


def _dl():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


@sim_only("the real test LINSTOR has no DRBD module (the luks class stacks drbd luks storage)")
@pytest.mark.parametrize("params", [
    {"placementCount": "2", "encryption": "true"},  # immediate binding: one spawn
    {"placementCount": "1", "nodeList": "node-1", "encryption": "true"},  # manual placement
])
def test_encryption_needs_the_master_passphrase_then_works(env, params):
    with pytest.raises(grpc.RpcError) as err:
        env.ctl.CreateVolume(create_req("pvc-enc", params=params))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "linstor encryption create-passphrase" in err.value.details()
    assert env.rds() == []  # nothing half-created
    env.client.post("/v1/encryption/passphrase", deadline=_dl(),
                    body={"new_passphrase": "s3cret"})
    vol = env.ctl.CreateVolume(create_req("pvc-enc", params=params)).volume
    rd = env.client.get("/v1/resource-definitions/pvc-enc", deadline=_dl())
    rg = env.client.get(f"/v1/resource-groups/{rd['resource_group_name']}", deadline=_dl())
    assert rg["select_filter"]["layer_stack"] == ["DRBD", "LUKS", "STORAGE"]
    ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vol.volume_id, node_id="node-3", volume_capability=MOUNT)).publish_context
    assert "/drbd" in ctx["linstor.csi.linbit.com/device-path"]  # DRBD on top of LUKS
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=vol.volume_id, node_id="node-3"))
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert env.rds() == []

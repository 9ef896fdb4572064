"""End to end with the LINSTOR simulator: device path from LINSTOR, DRBD state from the
simulator's ``drbdsetup`` stand-in (``python -m csi_linstor.sim.drbdsetup``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from csi_linstor.linstor.client import LinstorClient
from csi_linstor.sim import SimConfig, Simulator
from tests.node.node_helpers import (
    RpcFailed,
    mount_cap,
    publish_req,
    stage_req,
    stats_req,
    unpublish_req,
    unstage_req,
)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    s = Simulator(SimConfig(nodes=2, device_dir=tmp_path / "dev", state_dir=tmp_path / "state"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _spawn(url: str, rd: str, size_kib: int = 64 * 1024) -> str:
    """Create a one-replica volume; returns the node it landed on."""
    s = requests.Session()
    r = s.post(
        f"{url}/v1/resource-groups",
        json={"name": "rg1", "select_filter": {"place_count": 1}},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert s.post(f"{url}/v1/resource-groups/rg1/volume-groups", json={}, timeout=30).ok
    r = s.post(
        f"{url}/v1/resource-groups/rg1/spawn",
        json={"resource_definition_name": rd, "volume_sizes": [size_kib]},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    return s.get(f"{url}/v1/resource-definitions/{rd}/resources", timeout=30).json()[0]["node_name"]


def test_stage_with_device_from_linstor_and_drbd_from_stand_in(
    sim: Any, make_node, tmp_path
) -> None:
    url = sim.url
    node_name = _spawn(url, "pvc-sim1")
    client = LinstorClient([url])
    drbdsetup = (
        sys.executable,
        "-m",
        "csi_linstor.sim.drbdsetup",
        "--sim-url",
        url,
        "--node",
        node_name,
    )
    node = make_node(linstor=client, node=node_name, drbdsetup=drbdsetup, device_wait_seconds=5)
    staging = tmp_path / "staging"
    staging.mkdir()
    target = tmp_path / "target"
    cap = mount_cap("ext4")
    req = stage_req("", staging, cap, vol="pvc-sim1")
    req.publish_context.clear()  # no device path: ask LINSTOR for this node's volume

    sim.set_quorum("pvc-sim1", node_name, False)
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(req)
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION and "quorum" in ei.value.message

    sim.set_quorum("pvc-sim1", node_name, True)
    node.NodeStageVolume(req)
    pub = publish_req("", staging, target, cap, vol="pvc-sim1")
    pub.publish_context.clear()
    node.NodePublishVolume(pub)
    (target / "f").write_text("on a simulated DRBD device")
    assert not node.NodeGetVolumeStats(stats_req(target, vol="pvc-sim1")).volume_condition.abnormal
    sim.set_quorum("pvc-sim1", node_name, False)
    cond = node.NodeGetVolumeStats(stats_req(target, vol="pvc-sim1")).volume_condition
    assert cond.abnormal and "quorum" in cond.message
    sim.set_quorum("pvc-sim1", node_name, True)
    node.NodeUnpublishVolume(unpublish_req(target, vol="pvc-sim1"))
    node.NodeUnstageVolume(unstage_req(staging, vol="pvc-sim1"))

    # a volume this node has no resource for: NOT_FOUND naming the node
    other = "node-1" if node_name != "node-1" else "node-2"
    elsewhere = make_node(linstor=client, node=other, drbdsetup=drbdsetup)
    with pytest.raises(RpcFailed) as ei:
        elsewhere.NodeStageVolume(req)
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and other in ei.value.message


def test_a_consistency_group_member_stages_only_its_own_volume(
    sim: Any, make_node, tmp_path
) -> None:
    """Member ``cg-…/1`` of a two-volume resource (issue 17 item 5): its device is volume 1's,
    proven by LINSTOR's device path of volume 1 on this node; volume 0's device, handed in a
    publish context, is refused; a member recorded as raw block is never staged as a
    filesystem (its access type is on its volume definition, not on the shared resource)."""
    url = sim.url
    rd = "cg-0b6f5a3e-5b1e-5f43-9f3a-8d7f1c2e4a10"
    s = requests.Session()
    assert s.post(f"{url}/v1/resource-definitions", json={"resource_definition": {
        "name": rd, "props": {"Aux/linstor.csi.linbit.com/consistency-group": "ns/g"}}},
        timeout=30).ok
    for name, access in (("pvc-m0", "block"), ("pvc-m1", "mount")):
        assert s.post(f"{url}/v1/resource-definitions/{rd}/volume-definitions", json={
            "volume_definition": {"size_kib": 64 * 1024, "props": {
                "Aux/csi-volume-name": name, "Aux/csi-access-type": access}}}, timeout=30).ok
    assert s.post(f"{url}/v1/resource-definitions/{rd}/autoplace",
                  json={"select_filter": {"place_count": 1}}, timeout=30).ok
    node_name = s.get(f"{url}/v1/resource-definitions/{rd}/resources",
                      timeout=30).json()[0]["node_name"]
    paths = {v["volume_number"]: v["device_path"] for r in s.get(
        f"{url}/v1/view/resources", params={"resources": rd}, timeout=30).json()
        for v in r["volumes"]}
    client = LinstorClient([url])
    drbdsetup = (sys.executable, "-m", "csi_linstor.sim.drbdsetup", "--sim-url", url,
                 "--node", node_name)
    node = make_node(linstor=client, node=node_name, drbdsetup=drbdsetup, device_wait_seconds=5)
    staging = tmp_path / "staging"
    staging.mkdir()
    cap = mount_cap("ext4")
    with pytest.raises(RpcFailed) as ei:  # volume 0's device for member 1
        node.NodeStageVolume(stage_req(paths[0], staging, cap, vol=f"{rd}/1"))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not the device of" in ei.value.message
    node.NodeStageVolume(stage_req(paths[1], staging, cap, vol=f"{rd}/1"))
    target = tmp_path / "target"
    node.NodePublishVolume(publish_req(paths[1], staging, target, cap, vol=f"{rd}/1"))
    (target / "f").write_text("member 1")
    node.NodeUnpublishVolume(unpublish_req(target, vol=f"{rd}/1"))
    node.NodeUnstageVolume(unstage_req(staging, vol=f"{rd}/1"))
    # member 0 was created as raw block: without the controller's word (an older publish
    # context), its volume definition says so
    req = stage_req(paths[0], staging, cap, vol=f"{rd}/0")
    del req.publish_context["linstor.csi.linbit.com/access-type"]
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(req)
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION and "raw block" in ei.value.message

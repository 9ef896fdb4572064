"""Decisions the driver takes from typed LINSTOR replies: topology segments, volume condition."""

from __future__ import annotations

from csi_linstor.linstor.models import Node, Resource, StoragePool
from csi_linstor.mapping.topology import HOSTNAME_KEY, segments_for
from csi_linstor.mapping.volumes import Volumes

NODE = Node.from_json({"name": "node-1", "connection_status": "ONLINE",
                       "props": {"Aux/topology.kubernetes.io/zone": "z1", "Aux/": "x",
                                 "Other/rack": "r1", "CurStltConnName": "default"}})
POOLS = [StoragePool.from_json(p) for p in (
    {"storage_pool_name": "DfltDisklessStorPool", "node_name": "node-1",
     "provider_kind": "DISKLESS"},
    {"storage_pool_name": "thin", "node_name": "NODE-1", "provider_kind": "LVM_THIN",
     "free_capacity": 10},
    {"storage_pool_name": "other", "node_name": "node-2", "provider_kind": "LVM"},
    {"storage_pool_name": "nodeless", "provider_kind": "ZFS"},
)]


def test_segments_from_namespaced_props_and_pools() -> None:
    assert segments_for(NODE, POOLS, "Aux", True) == {
        "topology.kubernetes.io/zone": "z1", HOSTNAME_KEY: "node-1",
        "linbit.com/sp-DfltDisklessStorPool": "true",  # as LINBIT's driver reports it
        "linbit.com/sp-thin": "true", "linbit.com/sp-nodeless": "true"}
    assert segments_for(NODE, POOLS, "Aux/", False) == {
        "topology.kubernetes.io/zone": "z1", HOSTNAME_KEY: "node-1"}
    assert segments_for(NODE, [], "Other", True) == {"rack": "r1", HOSTNAME_KEY: "node-1"}


def test_segments_of_a_node_without_props() -> None:
    assert segments_for(Node.from_json({"name": "n9"}), [], "Aux", True) == {HOSTNAME_KEY: "n9"}


def _res(node: str, flags: list[str] | None = None, state: bool = True,
         disks: list[str | None] | None = None) -> Resource:
    data: dict = {"name": "pvc-1", "node_name": node, "flags": flags or []}
    if state:
        data["state"] = {"in_use": False}
    data["volumes"] = [{"volume_number": i, **({"state": {"disk_state": d}} if d else {})}
                       for i, d in enumerate(disks or [])]
    return Resource.from_json(data)


def test_condition_healthy() -> None:
    abnormal, message = Volumes.condition([
        _res("n1", disks=["UpToDate"]), _res("n2", disks=["UpToDate"]),
        _res("n3", flags=["DRBD_DISKLESS", "TIE_BREAKER"], disks=["Diskless"])])
    assert not abnormal and "healthy" in message


def test_condition_names_each_problem() -> None:
    abnormal, message = Volumes.condition([
        _res("n1", disks=["UpToDate"]),
        _res("n2", state=False, disks=["UpToDate"]),
        _res("n3", flags=["FAILED_DEPLOYMENT"], disks=["UpToDate"]),
        _res("n4", disks=["Outdated"]),
        _res("n5", disks=[None]),
        _res("n6", flags=["DISKLESS"], disks=["UpToDate"])])
    assert abnormal
    assert message == ("replica problems on n2 (no state reported: satellite offline?); "
                       "n3 (FAILED_DEPLOYMENT); n4 (disk Outdated); n5 (disk unknown); "
                       "n6 (disk UpToDate)")


def test_condition_without_replicas() -> None:
    assert Volumes.condition([]) == (True, "no replica of the volume exists in LINSTOR")

"""Topology segments, in the Go driver's format so existing PVs' node affinity keeps matching.

- ``linbit.com/hostname``: the LINSTOR node name;
- ``linbit.com/sp-<pool>: "true"`` per (non-diskless) storage pool, when labelling by pool;
- every LINSTOR node property under the property namespace (default ``Aux``), prefix stripped.
"""

from __future__ import annotations

from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.linstor.client import LinstorClient

HOSTNAME_KEY = "linbit.com/hostname"
STORAGE_POOL_PREFIX = "linbit.com/sp-"


def segments_for(node: dict[str, Any], pools: list[dict[str, Any]], property_namespace: str,
                 label_by_storage_pool: bool) -> dict[str, str]:
    """Segments of one node from its LINSTOR node object and its storage pools."""
    name = str(node.get("name", ""))
    segments: dict[str, str] = {}
    prefix = property_namespace.rstrip("/") + "/"
    for key, value in (node.get("props") or {}).items():
        if key.startswith(prefix) and len(key) > len(prefix):
            segments[key[len(prefix):]] = str(value)
    if label_by_storage_pool:
        for pool in pools:
            if pool.get("node_name", name).upper() != name.upper():
                continue
            if pool.get("provider_kind") == "DISKLESS":
                continue
            segments[STORAGE_POOL_PREFIX + str(pool.get("storage_pool_name"))] = "true"
    segments[HOSTNAME_KEY] = name
    return segments


def node_segments(client: LinstorClient, node: str, property_namespace: str,
                  label_by_storage_pool: bool, deadline: Deadline) -> dict[str, str]:
    """Segments of ``node`` as NodeGetInfo reports them (two GETs)."""
    data = client.get(f"/v1/nodes/{node}", deadline=deadline)
    pools: list[dict[str, Any]] = []
    if label_by_storage_pool:
        pools = client.get("/v1/view/storage-pools", deadline=deadline, params={"nodes": [node]})
    return segments_for(data, pools or [], property_namespace, label_by_storage_pool)

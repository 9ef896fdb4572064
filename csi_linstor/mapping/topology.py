"""Topology segments, in the Go driver's format so existing PVs' node affinity keeps matching.

- ``linbit.com/hostname``: the LINSTOR node name;
- ``linbit.com/sp-<pool>: "true"`` per storage pool of the node, diskless ones included
  (``linbit.com/sp-DfltDisklessStorPool``), when labelling by pool: LINBIT's driver labels every
  pool ``GET /v1/nodes/<node>/storage-pools`` returns, and PVs it created carry those keys;
- every LINSTOR node property under the property namespace (default ``Aux``), prefix stripped.
"""

from __future__ import annotations

from collections.abc import Sequence

from csi_linstor.deadline import Deadline
from csi_linstor.linstor import queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import Node, StoragePool

HOSTNAME_KEY = "linbit.com/hostname"
STORAGE_POOL_PREFIX = "linbit.com/sp-"


def segments_for(node: Node, pools: Sequence[StoragePool], property_namespace: str,
                 label_by_storage_pool: bool) -> dict[str, str]:
    """Segments of one node from its LINSTOR node object and its storage pools."""
    name = node.name
    segments: dict[str, str] = {}
    prefix = property_namespace.rstrip("/") + "/"
    for key, value in node.props.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            segments[key[len(prefix):]] = value
    if label_by_storage_pool:
        for pool in pools:
            if (pool.node_name or name).upper() != name.upper():
                continue
            segments[STORAGE_POOL_PREFIX + pool.storage_pool_name] = "true"
    segments[HOSTNAME_KEY] = name
    return segments


def node_segments(client: LinstorClient, node: str, property_namespace: str,
                  label_by_storage_pool: bool, deadline: Deadline) -> dict[str, str]:
    """Segments of ``node`` as NodeGetInfo reports them (two GETs)."""
    data = queries.node(client, node, deadline)
    pools: list[StoragePool] = []
    if label_by_storage_pool:
        pools = queries.storage_pools(client, deadline, nodes=[node])
    return segments_for(data, pools, property_namespace, label_by_storage_pool)


# ---------------------------------------------------------------------------------------------
# Placement from CSI topology requirements, accessible_topology, remote-access checks
# ---------------------------------------------------------------------------------------------


def segment_matches(node_segs: dict[str, str], segment: dict[str, str]) -> bool:
    """True when a node with ``node_segs`` lies in ``segment`` (every key equal)."""
    return all(node_segs.get(k) == v for k, v in segment.items())


def needs_node_props(segments: list[dict[str, str]]) -> bool:
    """Whether matching these segments needs more than the node name."""
    return any(k != HOSTNAME_KEY for seg in segments for k in seg)


class NodeIndex:
    """Node segments for the whole cluster, loaded once per RPC and only when needed."""

    def __init__(self, client: LinstorClient, property_namespace: str, deadline: Deadline,
                 with_pools: bool = False) -> None:
        self._client = client
        self._ns = property_namespace
        self._deadline = deadline
        self._with_pools = with_pools
        self._nodes: list[Node] | None = None
        self._segs: dict[str, dict[str, str]] | None = None

    def nodes(self) -> list[Node]:
        if self._nodes is None:
            self._nodes = queries.nodes(self._client, self._deadline)
        return self._nodes

    def segments(self) -> dict[str, dict[str, str]]:
        """Node name → its segments (hostname + namespaced props + sp-<pool> keys)."""
        if self._segs is None:
            pools: list[StoragePool] = []
            if self._with_pools:
                pools = queries.storage_pools(self._client, self._deadline)
            self._segs = {}
            for node in self.nodes():
                self._segs[node.name] = segments_for(node, pools, self._ns, self._with_pools)
        return self._segs

    def online(self, name: str) -> bool | None:
        for node in self.nodes():
            if node.name.upper() == name.upper():
                return node.online
        return None

    def matching(self, segments: list[dict[str, str]]) -> list[str]:
        """Nodes lying in any of ``segments``, in cluster order."""
        if not needs_node_props(segments):
            names = []
            for seg in segments:
                host = seg.get(HOSTNAME_KEY)
                if host and host not in names:
                    names.append(host)
            return names
        if pool_segment_keys(segments) and not self._with_pools:
            # The CO copies NodeGetInfo's segments, linbit.com/sp-<pool> keys included (the
            # default): without the pools no node would match and a preferred node is ignored.
            self._with_pools = True
            self._segs = None
        return [name for name, segs in self.segments().items()
                if any(segment_matches(segs, seg) for seg in segments)]

    def segments_of(self, name: str, policy_keys: set[str]) -> dict[str, str]:
        if not (policy_keys - {HOSTNAME_KEY}):
            return {HOSTNAME_KEY: name}
        for node, segs in self.segments().items():
            if node.upper() == name.upper():
                return segs
        return {HOSTNAME_KEY: name}


def pool_segment_keys(segments: list[dict[str, str]]) -> bool:
    return any(k.startswith(STORAGE_POOL_PREFIX) for seg in segments for k in seg)

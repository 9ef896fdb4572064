"""Placement: where a volume's replicas go (topology constraints, preferred nodes, pools) and
what a failed placement tells the user.
"""

from __future__ import annotations

from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import InvalidArgument, ResourceExhausted
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.mapping.params import VolumeParameters
from csi_linstor.mapping.remote_access import prune_patterns
from csi_linstor.mapping.topology import NodeIndex
from csi_linstor.mapping.volume_model import CreateSpec, VolumeLookups


class Placement(VolumeLookups):
    """Replica placement by LINSTOR's autoplacer or a manual node list, within the topology."""

    def _constraint(self, spec: CreateSpec, nodes: NodeIndex) -> list[str] | None:
        """Nodes replicas must be on (requisite under the remote-access policy); None = any."""
        if not spec.requisite:
            return None
        policy = spec.params.remote_access
        widened: list[dict[str, str]] = []
        for seg in spec.requisite:
            widened.extend(policy.accessible_segments(seg))
        widened = prune_patterns(widened)
        if any(not seg for seg in widened):
            return None
        return nodes.matching(widened)

    def _preferred_node(self, spec: CreateSpec, nodes: NodeIndex,
                        allowed: list[str] | None) -> str | None:
        if spec.params.placement_policy == "AutoPlace":
            return None
        for seg in spec.preferred:
            for node in nodes.matching([seg]):
                if allowed is None or node.upper() in {a.upper() for a in allowed}:
                    return node
        return None

    def _place_filter(self, spec: CreateSpec, allowed: list[str] | None) -> dict[str, Any]:
        """The class's own select filter (see ensure_resource_group), narrowed to ``allowed``."""
        sf = spec.params.select_filter()
        if spec.mutable_count is not None:
            sf["place_count"] = spec.mutable_count
        if allowed is not None:
            if not allowed:
                raise ResourceExhausted("no LINSTOR node lies in the requested topology "
                                        f"{spec.requisite}")
            sf["node_name_list"] = list(allowed)
        return sf

    def _placement_error(self, spec: CreateSpec, err: LinstorError,
                         deadline: Deadline) -> Exception:
        p = spec.params
        if err.has(consts.FAIL_INVLD_PROP):
            return InvalidArgument(f"a LINSTOR property from the StorageClass or "
                                   f"VolumeAttributesClass was rejected: {err.message}")
        if err.has(consts.FAIL_NOT_FOUND_STOR_POOL) or err.has(
                consts.FAIL_NOT_FOUND_STOR_POOL_DFN) or (
                err.has(consts.FAIL_NOT_ENOUGH_NODES) and p.storage_pools):
            missing = self._missing_pools(p, deadline)
            if missing:
                return InvalidArgument(
                    f"parameter storagePool names {', '.join(missing)}, which no LINSTOR node "
                    "has; create the storage pool or fix the StorageClass")
        if err.has(consts.FAIL_NOT_ENOUGH_NODES) or err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
            where = f" in topology {spec.requisite}" if spec.requisite else ""
            return ResourceExhausted(
                f"LINSTOR cannot place {spec.mutable_count or p.placement_count} replica(s) of "
                f"{spec.rd}{where}: {err.message}; add nodes or space, or lower placementCount")
        if err.has(consts.FAIL_NOT_FOUND_NODE):
            return InvalidArgument(f"a node named in the StorageClass does not exist: "
                                   f"{err.message}")
        return err

    def _missing_pools(self, p: VolumeParameters, deadline: Deadline) -> list[str]:
        try:
            pools = queries.storage_pools(self.client, deadline, pools=p.storage_pools)
        except LinstorError:
            return []
        have = {x.storage_pool_name.upper() for x in pools}
        return [name for name in p.storage_pools if name.upper() not in have]

    def _place(self, spec: CreateSpec, deadline: Deadline, nodes: NodeIndex | None = None,
               allowed: list[str] | None = None, preferred: str | None = None,
               skip_constraint: bool = False) -> None:
        """Bring an existing RD's placement up to the class (every call idempotent)."""
        p = spec.params
        rd = spec.rd
        if p.manual:
            have = {r.node_name.upper() for r in queries.resources(self.client, rd, deadline)}
            body = []
            diskless_flag = "DRBD_DISKLESS" if "DRBD" in p.layer_list else "NVME_INITIATOR"
            for node in p.node_list:
                if node.upper() not in have:
                    body.append({"resource": {"node_name": node}, "layer_list": list(p.layer_list)})
            for node in p.client_list:
                if node.upper() not in have:
                    body.append({"resource": {"node_name": node, "flags": [diskless_flag],
                                              "props": {"StorPoolName": p.diskless_storage_pool}},
                                 "layer_list": list(p.layer_list)})
            if body:
                try:
                    self.client.post(f"/v1/resource-definitions/{rd}/resources",
                                     deadline=deadline, body=body)
                except LinstorError as err:
                    if not err.has(consts.FAIL_EXISTS_RSC):
                        self._cleanup_failed_create(spec, deadline)
                        raise self._placement_error(spec, err, deadline) from err
            return
        if nodes is None:
            nodes = NodeIndex(self.client, self.ns, deadline)
            allowed = self._constraint(spec, nodes)
            preferred = self._preferred_node(spec, nodes, allowed)
        if preferred is not None:
            try:
                first = {**p.select_filter(), "place_count": 1, "node_name_list": [preferred]}
                self.client.post(f"/v1/resource-definitions/{rd}/autoplace", deadline=deadline,
                                 body={"select_filter": first})
            except LinstorError as err:
                if not (err.has(consts.FAIL_NOT_ENOUGH_NODES)
                        or err.has(consts.FAIL_NOT_FOUND_STOR_POOL)):
                    raise
        sf = self._place_filter(spec, None if skip_constraint else allowed)
        try:
            self.client.post(f"/v1/resource-definitions/{rd}/autoplace", deadline=deadline,
                             body={"select_filter": sf})
        except LinstorError as err:
            self._cleanup_failed_create(spec, deadline)
            raise self._placement_error(spec, err, deadline) from err

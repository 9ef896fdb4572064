"""One read of everything the operator commands need from LINSTOR, through the project's REST
client, plus the DRBD facts LINSTOR's REST API gives per replica.

What LINSTOR 1.33.3 reports over REST, and therefore what these commands can see (controller
rest/v1/serializer/Json.apiToResource): per resource ``state.in_use`` (absent when the satellite
does not report), per volume ``state.disk_state`` and ``replication_states``, and on the DRBD
layer object the connection to each peer (``connections{peer: {connected, message}}``). Quorum
and suspended IO are not in the REST API: quorum is derived here from the connections (DRBD's
rule: a node keeps quorum while it sees a majority of the resource's nodes, itself included);
suspended IO is seen only by ``drbdsetup status`` on the node itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError, LinstorUnavailable
from csi_linstor.linstor.models import (
    ControllerVersion,
    Node,
    Resource,
    ResourceDefinition,
    ResourceGroup,
    Snapshot,
    StoragePool,
)
from csi_linstor.ops.common import LinstorUnreachable, OpsError

READ_SECONDS = 30.0


@dataclass(frozen=True)
class Replica:
    """One resource (replica, diskless attachment or tiebreaker) with its DRBD facts."""

    rd: str
    node: str
    diskless: bool
    tiebreaker: bool
    drbd: bool  # DRBD is the top layer (storage-only resources have no DRBD state)
    reported: bool
    in_use: bool
    disk_states: tuple[str, ...]
    sync: tuple[str, ...]  # "SyncTarget 42%" style replication notes, when resyncing
    peers: dict[str, bool]  # peer node -> connected (DRBD layer only)
    pools: tuple[str, ...]
    flags: tuple[str, ...]

    @property
    def disk_state(self) -> str:
        states = [s for s in self.disk_states if s]
        if not states:
            return "" if self.drbd else "n/a (no DRBD)"
        return states[0] if len(set(states)) == 1 else ",".join(states)

    @property
    def role(self) -> str:
        if self.tiebreaker:
            return "tiebreaker"
        return "diskless" if self.diskless else "diskful"

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "role": self.role, "disk_state": self.disk_state,
                "in_use": self.in_use, "reported": self.reported,
                "connected_peers": sorted(p for p, ok in self.peers.items() if ok),
                "disconnected_peers": sorted(p for p, ok in self.peers.items() if not ok),
                "storage_pools": list(self.pools), "flags": list(self.flags)}


@dataclass
class LinstorState:
    version: str = ""
    nodes: list[Node] = field(default_factory=list)
    pools: list[StoragePool] = field(default_factory=list)
    rds: list[ResourceDefinition] = field(default_factory=list)
    groups: list[ResourceGroup] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name.lower() == name.lower()), None)

    def rd(self, name: str) -> ResourceDefinition | None:
        return next((r for r in self.rds if r.name.lower() == name.lower()), None)

    def group(self, name: str) -> ResourceGroup | None:
        return next((g for g in self.groups if g.name.lower() == name.lower()), None)

    def replicas_of(self, rd: str) -> list[Replica]:
        return [r for r in self.replicas if r.rd.lower() == rd.lower()]

    def snapshots_of(self, rd: str) -> list[Snapshot]:
        return [s for s in self.snapshots if s.resource_name.lower() == rd.lower()]

    def pool_names(self) -> set[str]:
        return {p.storage_pool_name for p in self.pools}


def replica_from_json(raw: dict[str, Any]) -> Replica:
    """A Replica from one ``/v1/view/resources`` entry (model-checked, plus the DRBD layer)."""
    res = Resource.from_json(raw)
    layer = raw.get("layer_object") if isinstance(raw.get("layer_object"), dict) else {}
    drbd_layer = layer.get("drbd") if layer.get("type") == "DRBD" else None
    peers: dict[str, bool] = {}
    if isinstance(drbd_layer, dict) and isinstance(drbd_layer.get("connections"), dict):
        for peer, conn in drbd_layer["connections"].items():
            peers[str(peer)] = bool(isinstance(conn, dict) and conn.get("connected") is True)
    top = res.top_layer or str(layer.get("type") or "")
    sync: list[str] = []
    for vol in raw.get("volumes") or []:
        reps = ((vol.get("state") or {}).get("replication_states") or {}) if isinstance(
            vol, dict) else {}
        for peer, rep in reps.items():
            if isinstance(rep, dict) and str(rep.get("replication_state", "")).startswith("Sync"):
                pct = rep.get("done_percentage")
                sync.append(f"{rep['replication_state']} from/to {peer}"
                            + (f" {float(pct):.0f}%" if isinstance(pct, (int, float)) else ""))
    return Replica(
        rd=res.name, node=res.node_name, diskless=res.is_diskless, tiebreaker=res.is_tiebreaker,
        drbd=top == "DRBD", reported=res.reported, in_use=res.in_use,
        disk_states=tuple(v.disk_state for v in res.volumes),
        sync=tuple(sync), peers=peers,
        pools=tuple(sorted({v.storage_pool_name for v in res.volumes if v.storage_pool_name})),
        flags=res.flags)


def make_client(endpoints: Iterable[str], *, bearer_token_file: Path | None = None,
                root_ca: str | None = None, user_certificate: str | None = None,
                user_key: str | None = None, skip_tls_verify: bool = False,
                timeout: float = READ_SECONDS) -> LinstorClient:
    eps = list(endpoints)
    if not eps:
        raise LinstorUnreachable("no LINSTOR controller configured: pass --linstor-endpoint URL "
                                 "or set LS_CONTROLLERS (as for the driver)")
    try:
        return LinstorClient(eps, pool_size=4, connect_timeout=5.0, read_timeout=timeout,
                             root_ca=root_ca, user_certificate=user_certificate,
                             user_key=user_key, skip_tls_verify=skip_tls_verify,
                             bearer_token_file=bearer_token_file, user_agent="csi-linstor-ops")
    except (ValueError, OSError) as err:
        raise LinstorUnreachable(f"cannot set up the LINSTOR client: {err}") from err


def linstor_failure(err: Exception, client: LinstorClient) -> OpsError:
    """The error to stop a command with when a read of LINSTOR fails."""
    where = ", ".join(client.endpoints)
    if isinstance(err, LinstorUnavailable):
        return LinstorUnreachable(str(err))
    if isinstance(err, LinstorError) and err.status in (401, 403):
        return LinstorUnreachable(f"LINSTOR at {where} refused the request ({err.status}): check "
                                  "--bearer-token / the client certificate")
    return LinstorUnreachable(f"reading LINSTOR at {where} failed: {err}")


def fetch(client: LinstorClient, seconds: float = 60.0) -> LinstorState:
    """Everything in seven GETs; LinstorUnreachable when the controller does not answer."""
    deadline = Deadline(seconds)
    try:
        version = ControllerVersion.from_json(client.version(deadline)).version
        nodes = Node.list_from_json(client.get("/v1/nodes", deadline=deadline))
        pools = StoragePool.list_from_json(client.get("/v1/view/storage-pools",
                                                      deadline=deadline))
        rds = ResourceDefinition.list_from_json(client.get(
            "/v1/resource-definitions", deadline=deadline,
            params={"with_volume_definitions": "true"}))
        groups = ResourceGroup.list_from_json(client.get("/v1/resource-groups",
                                                         deadline=deadline))
        raw = client.get("/v1/view/resources", deadline=deadline) or []
        snaps = Snapshot.list_from_json(client.get("/v1/view/snapshots", deadline=deadline))
    except CsiError as err:
        raise linstor_failure(err, client) from err
    replicas = [replica_from_json(r) for r in raw if isinstance(r, dict)]
    return LinstorState(version=version, nodes=nodes, pools=pools, rds=rds, groups=groups,
                        replicas=replicas, snapshots=snaps)

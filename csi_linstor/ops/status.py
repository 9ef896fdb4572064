"""``csi-linstor status``: the LINSTOR monitor. Nodes, storage pools, and every replica that is
not healthy, each abnormal line with what to do; exit 1 when anything is abnormal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from csi_linstor.ops.common import FAIL, INFO, WARN, Finding, human_kib
from csi_linstor.ops.linstor_view import LinstorState, Replica

LOW_FREE = 0.10  # a pool with less than this share free is reported
THIN_KINDS = ("LVM_THIN", "ZFS_THIN", "FILE_THIN")
TWO_PRIMARIES = "DrbdOptions/Net/allow-two-primaries"


@dataclass(frozen=True)
class PoolRow:
    node: str
    pool: str
    kind: str
    free_kib: int | None
    total_kib: int | None
    provisioned_kib: int  # sum of the volume sizes placed in the pool

    @property
    def thin(self) -> bool:
        return self.kind in THIN_KINDS

    @property
    def overprovision(self) -> float | None:
        """Provisioned size / capacity, for thin pools (1.0 = fully provisioned)."""
        if not self.thin or not self.total_kib:
            return None
        return self.provisioned_kib / self.total_kib

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "pool": self.pool, "kind": self.kind,
                "free_kib": self.free_kib, "total_kib": self.total_kib,
                "provisioned_kib": self.provisioned_kib, "overprovision": self.overprovision}


def pool_rows(state: LinstorState) -> list[PoolRow]:
    sizes = {rd.name.lower(): sum(vd.size_kib for vd in rd.volume_definitions)
             for rd in state.rds}
    provisioned: dict[tuple[str, str], int] = defaultdict(int)
    for rep in state.replicas:
        if rep.diskless:
            continue
        for pool in rep.pools:
            provisioned[(rep.node.lower(), pool.lower())] += sizes.get(rep.rd.lower(), 0)
    rows = []
    for p in sorted(state.pools, key=lambda p: (p.node_name, p.storage_pool_name)):
        rows.append(PoolRow(p.node_name, p.storage_pool_name, p.provider_kind,
                            p.free_capacity, p.total_capacity,
                            provisioned[(p.node_name.lower(), p.storage_pool_name.lower())]))
    return rows


def node_findings(state: LinstorState) -> list[Finding]:
    out = []
    for n in state.nodes:
        if not n.online:
            out.append(Finding(
                FAIL, "node", f"LINSTOR node {n.name} is {n.connection_status or 'not connected'}",
                f"start or fix the satellite on {n.name} (systemctl status linstor-satellite; "
                "the controller must reach it on port 3366); its replicas report no state "
                "until then", subject=f"node/{n.name}"))
        elif "EVICTED" in n.flags:
            out.append(Finding(FAIL, "node", f"LINSTOR node {n.name} is EVICTED",
                               f"linstor node restore {n.name} once the node is back",
                               subject=f"node/{n.name}"))
    return out


def pool_findings(state: LinstorState, rows: list[PoolRow]) -> list[Finding]:
    out = []
    online = {n.name.lower() for n in state.nodes if n.online}
    for row in rows:
        if row.kind == "DISKLESS" or not row.total_kib or row.free_kib is None:
            continue
        if row.node.lower() not in online:
            continue  # the node finding says it; its capacity is stale
        if row.free_kib / row.total_kib < LOW_FREE:
            what = "thin pool nearly full" if row.thin else "pool nearly full"
            out.append(Finding(
                FAIL if row.free_kib == 0 else WARN, "pool",
                f"{what}: {row.pool} on {row.node} has {human_kib(row.free_kib)} free of "
                f"{human_kib(row.total_kib)}",
                "grow the pool's backing storage or move volumes off it; a full thin pool "
                "fails writes inside every volume on it" if row.thin else
                "grow the pool or delete unused volumes; new volumes will not be placed here",
                subject=f"pool/{row.node}/{row.pool}"))
    return out


def quorum(rep: Replica, reps: list[Replica]) -> tuple[bool, int, int]:
    """(has quorum, voters seen, voters) for one replica, DRBD's rule as LINSTOR configures it:
    the diskful replicas vote, plus one diskless node (the tiebreaker) when their number is
    even; a node has quorum while it sees more than half of the voters (itself included)."""
    diskful = sorted(r.node for r in reps if not r.diskless)
    extra = sorted((r for r in reps if r.diskless), key=lambda r: (not r.tiebreaker, r.node))
    voters = set(diskful)
    if len(diskful) % 2 == 0 and extra:
        voters.add(extra[0].node)
    visible = {rep.node} | {p for p, ok in rep.peers.items() if ok}
    seen = len(voters & visible)
    return seen * 2 > len(voters), seen, len(voters)


def replica_findings(state: LinstorState,
                     attached: Mapping[str, set[str]] | None = None) -> list[Finding]:
    """Findings per replica. ``attached`` (rd -> nodes Kubernetes attached it to) enables the
    in-use-on-an-unexpected-node check."""
    out: list[Finding] = []
    offline = {n.name.lower() for n in state.nodes if not n.online}
    by_rd: dict[str, list[Replica]] = defaultdict(list)
    for rep in state.replicas:
        by_rd[rep.rd].append(rep)
    for rd_name, reps in sorted(by_rd.items()):
        rd = state.rd(rd_name)
        for rep in sorted(reps, key=lambda r: r.node):
            out.extend(_replica(rep, reps, offline))
        users = sorted(r.node for r in reps if r.in_use)
        two = rd is not None and rd.props.get(TWO_PRIMARIES) == "yes"
        if len(users) > 1:
            out.append(Finding(
                WARN if two else FAIL, "in-use",
                f"{rd_name} is in use (Primary) on {len(users)} nodes: {', '.join(users)}"
                + (" (allow-two-primaries is set: a live migration)" if two else ""),
                "a live migration should finish within minutes; otherwise find the pod still "
                "using it on the old node" if two else
                "only one node may use a ReadWriteOnce volume: find the pod or process that "
                "still has it open on the node Kubernetes did not attach it to",
                subject=f"resource/{rd_name}"))
        if attached is not None and rd_name.lower() in {k.lower() for k in attached}:
            expected = {n.lower() for k, v in attached.items() if k.lower() == rd_name.lower()
                        for n in v}
            stray = [u for u in users if u.lower() not in expected]
            if stray:
                out.append(Finding(
                    FAIL, "in-use",
                    f"{rd_name} is in use on {', '.join(stray)}, but Kubernetes attached it to "
                    f"{', '.join(sorted(expected)) or 'no node'}",
                    f"something outside Kubernetes (or a pod that was force-deleted) holds "
                    f"the device open on {', '.join(stray)}: check `drbdsetup status {rd_name}` "
                    "and mounts there", subject=f"resource/{rd_name}"))
        out.extend(_replica_count(state, rd_name, reps))
    return out


def _replica_count(state: LinstorState, rd_name: str, reps: list[Replica]) -> list[Finding]:
    rd = state.rd(rd_name)
    group = state.group(rd.resource_group_name) if rd is not None else None
    want = group.select_filter.place_count if group is not None else None
    have = sum(1 for r in reps if not r.diskless and "DELETE" not in r.flags)
    if want and have < want:
        return [Finding(
            WARN, "replicas", f"{rd_name} has {have} diskful replica(s), its resource group "
            f"{group.name if group else '?'} asks for {want}",
            f"linstor resource-definition auto-place {rd_name} (needs {want - have} more node(s)"
            " with free space in the group's pool)", subject=f"resource/{rd_name}")]
    return []


def _replica(rep: Replica, reps: list[Replica], offline: set[str]) -> list[Finding]:
    subject = f"resource/{rep.rd}@{rep.node}"
    if "DELETE" in rep.flags:
        return [Finding(WARN, "replica", f"{rep.rd} on {rep.node} is being deleted",
                        "LINSTOR removes it once the satellite confirms; if it stays, check "
                        f"that {rep.node} is online", subject=subject)]
    if not rep.reported:
        if rep.node.lower() in offline:
            return [Finding(FAIL, "replica", f"{rep.rd} on {rep.node}: state unknown, the "
                            "satellite is offline",
                            f"bring the LINSTOR satellite on {rep.node} back", subject=subject)]
        return [Finding(WARN, "replica", f"{rep.rd} on {rep.node}: no state reported yet",
                        "normal for a few seconds after creation; otherwise check the "
                        "satellite's log", subject=subject)]
    if not rep.drbd:
        return []  # storage layer only: no DRBD states to judge
    out = []
    if not rep.diskless:
        bad = [s for s in rep.disk_states if s != "UpToDate"]
        if bad:
            state = rep.disk_state
            syncing = bool(rep.sync) and state == "Inconsistent"
            out.append(Finding(
                WARN if syncing else FAIL, "disk-state",
                f"{rep.rd} on {rep.node} is {state}" + (f" ({'; '.join(rep.sync)})"
                                                        if rep.sync else ""),
                "a resync is running; wait for it to reach UpToDate" if syncing else
                _disk_advice(state, rep), subject=subject,
                details={"disk_state": state}))
    elif rep.disk_states and any(s and s != "Diskless" for s in rep.disk_states):
        out.append(Finding(FAIL, "disk-state", f"diskless {rep.rd} on {rep.node} is "
                           f"{rep.disk_state}", _disk_advice(rep.disk_state, rep),
                           subject=subject))
    if len(reps) > 1 and rep.peers:
        has, seen, voters = quorum(rep, reps)
        if not has:
            out.append(Finding(
                FAIL, "quorum",
                f"{rep.rd} on {rep.node} has no quorum: it sees {seen} of {voters} nodes "
                f"(disconnected from {', '.join(sorted(p for p, ok in rep.peers.items() if not ok))})",
                "IO on this node is suspended or fails (DRBD on-no-quorum); restore the network "
                "or the satellites of the disconnected peers", subject=subject))
        if rep.diskless and not rep.tiebreaker:
            diskful = {r.node for r in reps if not r.diskless}
            if diskful and not any(rep.peers.get(n) for n in diskful):
                out.append(Finding(
                    FAIL, "data-access",
                    f"diskless {rep.rd} on {rep.node} is connected to none of its diskful "
                    f"replicas ({', '.join(sorted(diskful))})",
                    "a diskless node reads and writes over the network: fix the connection to "
                    "a diskful replica (satellite online, DRBD port reachable)", subject=subject))
    return out


def _disk_advice(state: str, rep: Replica) -> str:
    if state in ("Outdated", "Inconsistent"):
        return (f"this replica missed writes; it resyncs once connected to an UpToDate peer "
                f"(check `linstor resource list -r {rep.rd}` and the peers' connections)")
    if state in ("Failed", "Detaching", "Detached"):
        return (f"the backing disk on {rep.node} failed: check the storage pool there, then "
                f"`drbdadm adjust {rep.rd}` or replace the replica")
    if state in ("DUnknown", "Unknown", ""):
        return f"LINSTOR does not know this disk's state: check the satellite on {rep.node}"
    return f"check `drbdsetup status {rep.rd}` on {rep.node}"


def abnormal_replicas(state: LinstorState, findings: list[Finding]) -> list[Replica]:
    hit = {f.subject for f in findings}
    return [r for r in state.replicas
            if f"resource/{r.rd}@{r.node}" in hit or f"resource/{r.rd}" in hit]


def status_json(state: LinstorState, rows: list[PoolRow], findings: list[Finding],
                ) -> dict[str, Any]:
    return {
        "linstor_version": state.version,
        "nodes": [{"name": n.name, "type": n.type, "connection_status": n.connection_status,
                   "flags": list(n.flags)} for n in state.nodes],
        "storage_pools": [r.as_json() for r in rows],
        "resources": {"total": len({r.rd for r in state.replicas}),
                      "abnormal": [dict(rd=r.rd, **r.as_json())
                                   for r in abnormal_replicas(state, findings)]},
        "findings": [f.as_json() for f in findings],
        "abnormal": any(f.abnormal for f in findings),
    }


def status_findings(state: LinstorState, attached: Mapping[str, set[str]] | None
                    ) -> tuple[list[PoolRow], list[Finding]]:
    rows = pool_rows(state)
    findings = node_findings(state) + pool_findings(state, rows) + replica_findings(
        state, attached)
    if attached is None:
        findings.append(Finding(INFO, "kubernetes", "no Kubernetes API configured: the check "
                                "for volumes in use on a node Kubernetes did not attach them "
                                "to was skipped"))
    return rows, findings


def status_text(state: LinstorState, rows: list[PoolRow], findings: list[Finding]) -> str:
    from csi_linstor.ops.output import findings_text, table

    online = sum(1 for n in state.nodes if n.online)
    parts = [f"LINSTOR {state.version or '?'}: {online}/{len(state.nodes)} nodes online, "
             f"{len(state.pools)} storage pools, {len({r.rd for r in state.replicas})} "
             "resources", ""]
    parts.append(table(["NODE", "TYPE", "STATE"], [
        [("! " if not n.online else "  ") + n.name, n.type, n.connection_status]
        for n in sorted(state.nodes, key=lambda n: n.name)]))
    parts.append("")
    parts.append(table(["NODE", "POOL", "KIND", "FREE", "TOTAL", "USED%", "PROVISIONED"], [
        [r.node, r.pool, r.kind, human_kib(r.free_kib), human_kib(r.total_kib),
         _used(r), human_kib(r.provisioned_kib) + (
             f" ({r.overprovision:.0%} of total)" if r.overprovision is not None else "")]
        for r in rows if r.kind != "DISKLESS"]))
    bad = abnormal_replicas(state, findings)
    parts.append("")
    if bad:
        parts.append(table(["RESOURCE", "NODE", "ROLE", "DISK", "IN-USE", "PEERS-CONNECTED"], [
            [r.rd, r.node, r.role, r.disk_state if r.reported else "unknown",
             "yes" if r.in_use else "", f"{sum(r.peers.values())}/{len(r.peers)}"
             if r.peers else ""] for r in sorted(bad, key=lambda r: (r.rd, r.node))]))
    else:
        parts.append("every resource is UpToDate (or Diskless and connected)")
    shown = [f for f in findings if f.level != INFO]
    parts.append("")
    parts.append(findings_text(shown) if shown else "no problems found")
    return "\n".join(parts)


def _used(r: PoolRow) -> str:
    if not r.total_kib or r.free_kib is None:
        return ""
    return f"{100 * (r.total_kib - r.free_kib) / r.total_kib:.0f}%"

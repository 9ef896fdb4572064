"""Which replicas keep LINSTOR from acting, for error messages (LINSTOR's own refusal does not
name them: CtrlVlmDfnModifyApiCallHandler answers FAIL_NOT_ALL_UPTODATE "Cannot resize volume,
because we have a non-UpToDate DRBD device.")."""

from __future__ import annotations

from collections.abc import Callable

from csi_linstor.errors import CsiError
from csi_linstor.linstor.models import Node, Resource


def describe_not_uptodate(fetch: Callable[[], list[Resource]]) -> str:
    """``' (node-2: Outdated; node-3: no state reported, satellite offline?)'`` for the diskful
    replicas that are not UpToDate, or ``''`` when none is found or they cannot be read (the
    message is then LINSTOR's alone; this is a best-effort detail, never a second failure)."""
    try:
        resources = fetch()
    except CsiError:
        return ""
    bad: list[str] = []
    for res in resources:
        if res.is_diskless or res.deleting:
            continue
        if not res.reported:
            bad.append(f"{res.node_name}: no state reported, satellite offline?")
            continue
        states = sorted({v.disk_state or "unknown" for v in res.volumes} - {"UpToDate"})
        if states:
            bad.append(f"{res.node_name}: {', '.join(states)}")
    return f" ({'; '.join(bad)})" if bad else ""


def describe_offline_satellites(fetch: Callable[[], list[Node]]) -> str:
    """``'; satellites not ONLINE: node-2 (OFFLINE), ...: LINSTOR places nothing there until
    they reconnect'`` or ``''`` (none, or the nodes cannot be read). LINSTOR's own
    FAIL_NOT_ENOUGH_NODES message names the criterion ("the node is online") only in its
    details, and no node."""
    try:
        nodes = fetch()
    except CsiError:
        return ""
    down = [f"{n.name} ({n.connection_status or 'unknown'})" for n in nodes
            if n.connection_status != "ONLINE"]
    if not down:
        return ""
    return (f"; satellites not ONLINE: {', '.join(down)}: LINSTOR places nothing there until "
            "they reconnect (start the satellite or fix its network)")

"""DRBD state of a resource on this node, from ``drbdsetup status --json <resource>``.

The command is configurable (an argv prefix, default ``["drbdsetup"]``), so the simulator's stand-in
(``python -m csi_linstor.sim.drbdsetup --sim-url URL --node NODE``) answers the same questions in
tests. When drbdsetup is not installed at all, DRBD state is unknown: that is logged once and never
fails an RPC on its own (a storage-only resource has no DRBD layer either). Any other failure of the
command (it cannot reach the kernel module, it timed out) is UNAVAILABLE, naming the command and its
stderr: the caller retries, and the message says where to look.

drbdsetup talks to the kernel module over generic netlink, and DRBD registers its netlink family
with ``netnsok = false`` (drbd-headers ``genl_magic_func.h``): the family is visible only in the
host's initial network namespace. The node plugin therefore needs ``hostNetwork: true``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CommandError, Internal, Unavailable
from csi_linstor.nodeops import runner

log = logging.getLogger(__name__)

# drbdsetup's exit status for "<res>: No such resource".
NO_SUCH_RESOURCE = 10

_SUSPEND_KEYS = ("suspended-user", "suspended-no-data", "suspended-fencing", "suspended-quorum")


@dataclass(frozen=True)
class PeerDevice:
    peer: str
    connection_state: str
    volume: int
    replication_state: str
    peer_disk_state: str


@dataclass(frozen=True)
class DrbdDevice:
    volume: int
    minor: int | None
    disk_state: str
    client: bool
    quorum: bool
    open: bool | None


@dataclass(frozen=True)
class DrbdResourceState:
    name: str
    role: str
    suspended: bool
    suspend_reasons: tuple[str, ...]
    devices: tuple[DrbdDevice, ...]
    peers: tuple[PeerDevice, ...] = field(default=())

    def device(self, volume: int) -> DrbdDevice | None:
        for d in self.devices:
            if d.volume == volume:
                return d
        return None

    def up_to_date_peers(self, volume: int) -> list[str]:
        return [
            p.peer
            for p in self.peers
            if p.volume == volume
            and p.connection_state == "Connected"
            and p.peer_disk_state == "UpToDate"
        ]

    def problem(self, volume: int) -> str | None:
        """Why volume ``volume`` cannot serve I/O here, or None when it can."""
        if self.suspended:
            why = ", ".join(self.suspend_reasons) or "suspended"
            return f"DRBD resource {self.name} has I/O suspended ({why})"
        dev = self.device(volume)
        if dev is None:
            return f"DRBD resource {self.name} has no volume {volume} on this node"
        if not dev.quorum:
            return f"DRBD resource {self.name} volume {volume} has no quorum on this node"
        if dev.disk_state == "UpToDate":
            return None
        peers = self.up_to_date_peers(volume)
        if peers:
            return None  # diskless client or resyncing replica: I/O goes to an UpToDate peer
        local = "diskless client" if dev.disk_state == "Diskless" else f"disk {dev.disk_state}"
        return (
            f"DRBD resource {self.name} volume {volume} is not usable on this node: local "
            f"{local} and no connected peer with UpToDate data"
        )


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "yes", "1")
    return bool(value)


def parse_status(text: str, resource: str) -> DrbdResourceState | None:
    """Parse ``drbdsetup status --json`` output; None when ``resource`` is not in it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise Internal(f"drbdsetup status --json {resource} printed invalid JSON: {e}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise Internal(f"drbdsetup status --json {resource}: expected a JSON list")
    for obj in data:
        if not isinstance(obj, dict) or obj.get("name") != resource:
            continue
        reasons = tuple(k.removeprefix("suspended-") for k in _SUSPEND_KEYS if _bool(obj.get(k)))
        devices = tuple(
            DrbdDevice(
                volume=int(d.get("volume", 0)),
                minor=int(d["minor"]) if d.get("minor") is not None else None,
                disk_state=str(d.get("disk-state", "Unknown")),
                client=_bool(d.get("client", False)),
                quorum=_bool(d.get("quorum", True)),
                open=_bool(d["open"]) if "open" in d else None,
            )
            for d in obj.get("devices") or []
        )
        peers = tuple(
            PeerDevice(
                peer=str(c.get("name", c.get("peer-node-id", "?"))),
                connection_state=str(c.get("connection-state", "Unknown")),
                volume=int(pd.get("volume", 0)),
                replication_state=str(pd.get("replication-state", "Off")),
                peer_disk_state=str(pd.get("peer-disk-state", "DUnknown")),
            )
            for c in obj.get("connections") or []
            for pd in c.get("peer_devices") or []
        )
        return DrbdResourceState(
            name=resource,
            role=str(obj.get("role", "Unknown")),
            suspended=_bool(obj.get("suspended", False)) or bool(reasons),
            suspend_reasons=reasons,
            devices=devices,
            peers=peers,
        )
    return None


class Drbd:
    """Queries DRBD state through a configurable drbdsetup command."""

    def __init__(self, argv_prefix: Sequence[str] = ("drbdsetup",)) -> None:
        self.argv_prefix = list(argv_prefix) or ["drbdsetup"]
        self._warned = False
        self._lock = threading.Lock()

    def query(self, resource: str, deadline: Deadline) -> DrbdResourceState | None:
        """The resource's state on this node; None when unknown (no DRBD, or no such resource)."""
        argv = [*self.argv_prefix, "status", "--json", resource]
        try:
            res = runner.run(
                argv, deadline, cap=15.0, what="drbdsetup status", ok=(0, NO_SUCH_RESOURCE)
            )
        except FileNotFoundError:
            with self._lock:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "%s is not installed: DRBD state is unknown and not checked", argv[0]
                    )
            return None
        except CommandError as e:
            if "no such resource" in e.stderr.lower():
                return None
            raise Unavailable(
                f"cannot read the DRBD state of {resource}: {e}; retry. If every node RPC fails "
                "this way, check that drbdsetup can reach the DRBD kernel module: the node "
                "plugin must run in the host network namespace (hostNetwork: true), because "
                "DRBD's generic netlink family exists only there"
            ) from None
        if res.returncode == NO_SUCH_RESOURCE or not res.stdout.strip():
            return None
        return parse_status(res.stdout, resource)

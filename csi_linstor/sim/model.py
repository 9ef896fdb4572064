"""The simulated LINSTOR's state model: constants, the objects (nodes, pools, groups,
definitions, resources, snapshots), requests, replies and ApiCallRc entries.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import secrets
import threading
import time
import uuid as _uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import consts as C
from .devices import Device

log = logging.getLogger("csi_linstor.sim")

DISKLESS_POOL = "DfltDisklessStorPool"
DEFAULT_POOL = "DfltStorPool"
DEFAULT_RG = "DfltRscGrp"
# DeviceProviderKind.isSnapshotSupported (linstor-server 1.33.3): not LVM, EBS_INIT, DISKLESS.
SNAPSHOT_PROVIDERS = {"LVM_THIN", "ZFS", "ZFS_THIN", "FILE", "FILE_THIN", "SPDK", "EBS_TARGET"}
THIN_PROVIDERS = {"LVM_THIN", "ZFS_THIN", "FILE_THIN"}
# DeviceProviderKind.isCloneSupported (linstor-server 1.33.3): LVM, LVM_THIN, ZFS, ZFS_THIN (and
# DISKLESS); FILE, FILE_THIN, SPDK, REMOTE_SPDK, EBS_* and STORAGE_SPACES* cannot clone.
CLONE_PROVIDERS = {"LVM", "LVM_THIN", "ZFS", "ZFS_THIN"}
LAYER_TYPES = {"DRBD", "LUKS", "STORAGE", "NVME", "WRITECACHE", "CACHE", "BCACHE"}
PROVIDER_KINDS = {"DISKLESS", "LVM", "LVM_THIN", "ZFS", "ZFS_THIN", "FILE", "FILE_THIN", "SPDK",
                  "EBS_TARGET", "EBS_INIT"}
DISK_STATES = {"Diskless", "Attaching", "Detaching", "Failed", "Negotiating", "Inconsistent",
               "Outdated", "DUnknown", "Consistent", "UpToDate"}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{1,47}$")
# Non-Aux property keys the simulator accepts (the real controller has a larger whitelist).
PROP_ALLOW_EXACT = {
    "StorPoolName", "StorPoolNameDiskless", "FileSystem/Type", "FileSystem/MkfsParams",
    "PeerSlotsNewResource", "BalanceResourcesEnabled", "PrefNic", "MinorNrAutoRange",
    "TcpPortAutoRange", "DrbdPrimarySetOn", "NodeUname",
}
PROP_ALLOW_PREFIX = ("Aux/", "DrbdOptions/", "Autoplacer/", "StorDriver/", "sys/fs/",
                     "Writecache/", "Cache/", "BCache/", "NVMe/", "Internal/")
MIB = 1024 * 1024
LOCAL_REMOTE = "local-remote-generated-by-linstor"
VD_INTERNAL_PROPS = ("DrbdCurrentGi", "DrbdOptions/Disk/block-size")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_now() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="milliseconds")


def new_uuid() -> str:
    return str(_uuid.uuid4())


def prune(obj: Any) -> Any:
    """Jackson NON_EMPTY: drop None, empty dicts/lists/strings, recursively; but the values
    inside a props map are kept even when empty (NON_EMPTY applies to the map, not to its
    entries: ``"FileSystem/MkfsParams": ""`` comes back, linstor-facts §9 C10)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, dict) and k.endswith("props"):
                if v:
                    out[k] = {pk: pv for pk, pv in v.items() if pv is not None}
                continue
            v = prune(v)
            if v is None or (isinstance(v, (dict, list, str)) and len(v) == 0):
                continue
            out[k] = v
        return out
    if isinstance(obj, list):
        return [prune(v) for v in obj]
    return obj


class ApiError(Exception):
    def __init__(self, entries: list[dict], status: int | None = None, body: Any = None):
        super().__init__(entries[0]["message"] if entries else "error")
        self.entries = entries
        self.status = status
        self.body = body


# ---------------------------------------------------------------------------------------------
# model


@dataclass
class Pool:
    node: str
    name: str
    kind: str
    total_kib: int = 0
    used_kib: int = 0
    props: dict[str, str] = field(default_factory=dict)
    uuid: str = field(default_factory=new_uuid)

    @property
    def key(self) -> str:
        return self.name.upper()

    @property
    def free_kib(self) -> int:
        return max(0, self.total_kib - self.used_kib)


@dataclass
class Node:
    name: str
    props: dict[str, str] = field(default_factory=dict)
    online: bool = True
    pools: dict[str, Pool] = field(default_factory=dict)
    address: str = "127.0.0.1"
    uuid: str = field(default_factory=new_uuid)


@dataclass
class VolumeGroup:
    nr: int
    props: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    uuid: str = field(default_factory=new_uuid)


@dataclass
class ResourceGroup:
    name: str
    description: str = ""
    props: dict[str, str] = field(default_factory=dict)
    select_filter: dict[str, Any] = field(default_factory=dict)
    peer_slots: int | None = None
    vgs: dict[int, VolumeGroup] = field(default_factory=dict)
    uuid: str = field(default_factory=new_uuid)


@dataclass
class VolumeDef:
    nr: int
    size_kib: int
    minor: int
    device: Device | None
    props: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    seed: Path | None = None
    uuid: str = field(default_factory=new_uuid)


@dataclass
class Resource:
    rd: str  # RD key
    node: str  # node display name
    pool: str  # pool display name (DfltDisklessStorPool for diskless)
    node_id: int
    flags: list[str] = field(default_factory=list)
    props: dict[str, str] = field(default_factory=dict)
    in_use: bool = False
    disk_state: str | None = None  # knob override
    quorum: bool = True
    suspended: bool = False
    reported: bool = True
    create_timestamp: int = field(default_factory=now_ms)
    uuid: str = field(default_factory=new_uuid)
    # STORAGE-only volumes (no DRBD layer): a replica other than the first has storage of its
    # own, empty when created (minor -> device per volume number); the first uses the VD's.
    own_minor: dict[int, int] = field(default_factory=dict)
    own_device: dict[int, Any] = field(default_factory=dict)

    @property
    def diskless(self) -> bool:
        return "DISKLESS" in self.flags


@dataclass
class Snapshot:
    name: str
    rd_name: str
    nodes: list[str]
    pools: dict[str, str]  # node key -> pool name
    sizes: dict[int, int]
    files: dict[int, Path]
    timestamps: dict[str, int]
    props: dict[str, str] = field(default_factory=dict)
    rd_props: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=lambda: ["SUCCESSFUL"])
    uuid: str = field(default_factory=new_uuid)
    vd_props: dict[int, dict[str, str]] = field(default_factory=dict)
    delete_at: float | None = None  # flagged DELETE, gone from LINSTOR at this monotonic time


@dataclass
class ResourceDef:
    name: str
    rg: str  # RG key
    port: int
    secret: str
    props: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    external_name: str | None = None
    layer_stack: list[str] = field(default_factory=lambda: ["DRBD", "STORAGE"])
    peer_slots: int = 7
    vds: dict[int, VolumeDef] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    uuid: str = field(default_factory=new_uuid)

    @property
    def key(self) -> str:
        return self.name.upper()

    def diskful(self) -> list[Resource]:
        return [r for r in self.resources.values() if not r.diskless]


@dataclass
class Clone:
    src: str
    dst: str
    polls_left: int
    fail: bool


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    raw_body: bytes
    template: str = ""
    after: list[Callable[[], None]] = field(default_factory=list)

    def q1(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[0] if v else default

    def qbool(self, name: str) -> bool:
        return (self.q1(name, "false") or "false").lower() == "true"


# ---------------------------------------------------------------------------------------------
# helpers for ApiCallRc entries


class Reply:
    """Collects ApiCallRc entries with the handler's op/object context masks."""

    def __init__(self, op: int = 0, obj: int = 0) -> None:
        self.op = op
        # Reads (op 0) answer a bare ret code: RequestHelper.notFoundResponse/queryRequestResponse
        # build ApiCallRcImpl.simpleEntry(retcode, message) with no operation or object mask.
        self.obj = obj if op else 0
        self.entries: list[dict] = []

    def add(self, code: int, message: str, **kw: Any) -> dict:
        kw.setdefault("op", self.op)
        kw.setdefault("obj", self.obj)
        e = make_rc(code, message, **kw)
        self.entries.append(e)
        return e

    def error(self, code: int, message: str, status: int | None = None, **kw: Any) -> ApiError:
        return ApiError([make_rc(code, message, op=self.op, obj=self.obj, **kw)], status)


_report_counter = [0]
_report_lock = threading.Lock()
_boot = secrets.token_hex(4).upper()


def next_error_report_id() -> str:
    with _report_lock:
        _report_counter[0] += 1
        return f"{_boot}-00000-{_report_counter[0]:06d}"


def make_rc(code: int, message: str, *, op: int = 0, obj: int = 0,
            refs: dict[str, str] | None = None, cause: str | None = None,
            details: str | None = None, correction: str | None = None,
            report: bool = False) -> dict:
    full = C.with_context(code, op, obj) if code else 0  # a bare MASK_SUCCESS stays 0
    e: dict[str, Any] = {"ret_code": C.to_wire(full), "message": message}
    if cause:
        e["cause"] = cause
    if details:
        e["details"] = details
    if correction:
        e["correction"] = correction
    if report or (full & (C.MASK_BITS_TYPE | C.MASK_BITS_CODE)) == C.FAIL_UNKNOWN_ERROR:
        e["error_report_ids"] = [next_error_report_id()]
    if refs:
        e["obj_refs"] = {k: str(v) for k, v in refs.items()}
    e["created_at"] = iso_now()
    return e


def check_name(name: Any, code: int, what: str, r: Reply) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or not re.search(r"[A-Za-z]", name):
        raise r.error(code, f"The specified {what} name '{name}' is invalid.",
                      cause="Names must be 2-48 characters, start with a letter or '_' "
                            "and contain only letters, digits, '_' and '-'.")
    return name

"""The simulated LINSTOR controller: state model and REST handlers (no HTTP here).

Every handler runs under ``Controller.lock`` and returns ``(status, body)``. Slow device work that
does not need the model (attaching loop devices) is queued on ``Request.after`` and run by the
server after the lock is released, before the reply is sent.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import secrets
import shlex
import subprocess
import threading
import time
import uuid as _uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import consts as C
from . import opens
from .backup_routes import BackupRoutes
from .devices import Device, DeviceManager
from .schemas import ParseError, check_body, parse_version

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


# ---------------------------------------------------------------------------------------------


class Controller(BackupRoutes):  # remotes and backups: sim/backup_routes.py
    def __init__(self, cfg: Any, devices: DeviceManager) -> None:
        self.cfg = cfg
        self.devices = devices
        self.lock = threading.RLock()
        self.rest_version = parse_version(cfg.rest_api_version)
        self.nodes: dict[str, Node] = {}
        self.rgs: dict[str, ResourceGroup] = {}
        self.rds: dict[str, ResourceDef] = {}
        self.clones: dict[str, Clone] = {}
        self.kvs: dict[str, dict[str, str]] = {}
        self.linstor_remotes: dict[str, dict[str, str]] = {}
        self.ctrl_props: dict[str, str] = {}
        self.minors_used: set[int] = set()
        self.ports_used: set[int] = set()
        self.clone_polls = cfg.clone_polls
        self.clone_fail = False
        self.snapshot_fail = False
        self.snapshot_delete_seconds = 0.0
        # auto-promote from real opens: rdev -> nodes holding it open for writing, read once
        # per request (sim/opens.py); two nodes at once is what DRBD would have refused
        self._openers: dict[int, set[str]] | None = None
        self.double_opens: list[tuple[str, list[str]]] = []
        self._build(cfg)

    def begin_request(self) -> None:
        self._openers = None

    def _opened_on(self, rd: ResourceDef, res: Resource) -> bool:
        """DRBD 9 auto-promote: the resource is Primary where its device is open for writing
        (a rw mount or a write open under the node's path prefixes, SimConfig.node_roots)."""
        roots = getattr(self.cfg, "node_roots", None) or {}
        if not roots or self._storage_only(rd):
            return False
        if self._openers is None:
            rdevs = {vd.device.rdev for o in self.rds.values() if not self._storage_only(o)
                     for vd in o.vds.values() if vd.device is not None and vd.device.rdev}
            self._openers = opens.openers({n.upper(): list(p) for n, p in roots.items()}, rdevs)
            for o in self.rds.values():
                for vd in o.vds.values():
                    if vd.device is None or vd.device.rdev is None:
                        continue
                    nodes = sorted(self._openers.get(vd.device.rdev, ()))
                    if len(nodes) > 1 and o.props.get(
                            "DrbdOptions/Net/allow-two-primaries") != "yes":
                        log.warning("%s is open for writing on %s at once: DRBD would have "
                                    "refused all but the first", o.name, ", ".join(nodes))
                        self.double_opens.append((o.name, nodes))
        if not self._reported(res):
            return False  # an offline satellite reports no state (LINSTOR: no in_use)
        key = res.node.upper()
        return any(vd.device is not None and vd.device.rdev is not None
                   and key in self._openers.get(vd.device.rdev, ()) for vd in rd.vds.values())

    def _in_use(self, rd: ResourceDef, res: Resource) -> bool:
        return res.in_use or self._opened_on(rd, res)

    # -- setup ---------------------------------------------------------------------------------

    @staticmethod
    def _pool_props(spec: Any) -> dict[str, str]:
        """What a satellite stores on a new pool: the backing store's name under
        StorDriver/StorPoolName (the FileDir, VG, VG/thin pool or zpool the create request
        named), and for file pools a 1 KiB allocation granularity (StorDriver/internal/
        AllocationGranularity, as LINSTOR 1.33.3 reports it for FILE_THIN)."""
        kind = spec.provider_kind
        if kind in ("FILE", "FILE_THIN"):
            return {"StorDriver/StorPoolName": f"/var/lib/linstor-pools/{spec.name}",
                    "StorDriver/internal/AllocationGranularity": "1"}
        if kind == "LVM_THIN":
            return {"StorDriver/StorPoolName": f"vg_{spec.name}/thin"}
        if kind == "DISKLESS":
            return {}
        return {"StorDriver/StorPoolName": f"vg_{spec.name}" if kind == "LVM"
                else f"zpool_{spec.name}"}

    def _build(self, cfg: Any) -> None:
        for i, name in enumerate(cfg.node_names()):
            node = Node(name=name, props=dict(cfg.node_props.get(name, {})),
                        address=f"127.0.0.{10 + i}")
            self.nodes[name.upper()] = node
            for spec in cfg.pools:
                if spec.nodes is not None and name not in spec.nodes:
                    continue
                p = Pool(node=name, name=spec.name, kind=spec.provider_kind,
                         total_kib=spec.capacity_kib, props=self._pool_props(spec))
                node.pools[p.key] = p
            dl = Pool(node=name, name=DISKLESS_POOL, kind="DISKLESS")
            node.pools[dl.key] = dl
        self.rgs[DEFAULT_RG.upper()] = ResourceGroup(name=DEFAULT_RG)

    # -- lookups ------------------------------------------------------------------------------

    def _node(self, name: str, r: Reply) -> Node:
        n = self.nodes.get(name.upper())
        if n is None:
            raise r.error(C.FAIL_NOT_FOUND_NODE, f"Node '{name}' not found.", refs={"Node": name})
        return n

    def _rd(self, name: str, r: Reply) -> ResourceDef:
        rd = self.rds.get(name.upper())
        if rd is None:
            raise r.error(C.FAIL_NOT_FOUND_RSC_DFN,
                          f"Resource definition '{name}' not found.", refs={"RscDfn": name})
        return rd

    def _rg(self, name: str, r: Reply) -> ResourceGroup:
        rg = self.rgs.get(name.upper())
        if rg is None:
            raise r.error(C.FAIL_NOT_FOUND_RSC_GRP, f"Resource group '{name}' not found.",
                          refs={"RscGrp": name})
        return rg

    def _vd(self, rd: ResourceDef, nr: int, r: Reply) -> VolumeDef:
        vd = rd.vds.get(nr)
        if vd is None:
            raise r.error(C.FAIL_NOT_FOUND_VLM_DFN,
                          f"Volume definition {nr} of '{rd.name}' not found.",
                          refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        return vd

    def _snap(self, rd: ResourceDef, name: str, r: Reply) -> Snapshot:
        s = rd.snapshots.get(name.upper())
        if s is None:
            # GET .../snapshots/{snap} answers FAIL_NOT_FOUND_SNAPSHOT (rest/v1/Snapshots.java
            # queryRequestResponse); the create/delete/restore handlers name the definition.
            code = C.FAIL_NOT_FOUND_SNAPSHOT if not r.op else C.FAIL_NOT_FOUND_SNAPSHOT_DFN
            raise r.error(code,
                          f"Snapshot '{name}' of resource '{rd.name}' not found.",
                          refs={"RscDfn": rd.name, "Snapshot": name})
        return s

    def _body(self, req: Request, schema: str, sync: bool = False, default: Any = None) -> Any:
        if not req.raw_body.strip():
            if default is not None:
                return default
            body: Any = None
        else:
            try:
                body = json.loads(req.raw_body)
            except ValueError as e:
                raise self._parse_error(f"Malformed JSON: {e}", sync) from None
        if body is None:
            if default is not None:
                return default
            raise self._parse_error("No content to map due to end-of-input", sync)
        try:
            check_body(schema, body, self.rest_version)
        except ParseError as e:
            raise self._parse_error(str(e), sync) from None
        return body

    @staticmethod
    def _parse_error(msg: str, sync: bool) -> ApiError:
        return ApiError([make_rc(C.API_CALL_PARSE_ERROR, "Unable to parse input json.",
                                 details=msg, report=True)], status=400 if sync else 500)

    # -- allocation ---------------------------------------------------------------------------

    def _alloc_minor(self, wanted: int | None = None) -> int:
        if wanted is not None:
            if wanted in self.minors_used:
                raise ApiError([make_rc(C.FAIL_INVLD_REQUEST | 0,
                                        f"Minor number {wanted} is already in use.")])
            self.minors_used.add(wanted)
            return wanted
        m = 1000
        while m in self.minors_used or (self.devices.enabled and self.devices.node_path_taken(m)):
            m += 1
        self.minors_used.add(m)
        return m

    def _alloc_port(self) -> int:
        p = 7000
        while p in self.ports_used:
            p += 1
        self.ports_used.add(p)
        return p

    def _new_device(self, minor: int, size_kib: int, seed: Device | Path | None = None,
                    tag: str = "vol") -> Device | None:
        if not self.devices.enabled:
            return None
        dev = self.devices.create(minor, size_kib * 1024, seed=seed, tag=tag)
        dev.check_fs = seed is None
        return dev

    def _schedule_attach(self, req: Request | None, rd: ResourceDef) -> None:
        devs = [vd.device for vd in rd.vds.values() if vd.device is not None]
        devs += [d for res in rd.resources.values() for d in res.own_device.values()
                 if d is not None]
        if not devs:
            return
        mkfs = self._mkfs_plan(rd)

        def attach() -> None:
            for d in devs:
                d.ensure()
            for dev, fstype, params in mkfs:
                self._satellite_mkfs(rd.name, dev, fstype, params)

        if req is None:
            attach()
        else:
            req.after.append(attach)

    def _mkfs_plan(self, rd: ResourceDef) -> list[tuple[Device, str, str]]:
        """New storage that the satellite formats (MkfsUtils.makeFileSystemOnMarked): when
        FileSystem/Type is set on the resource, VD, volume group, RD or RG (first wins), for
        each diskful replica's new volume; (device, fs type, FileSystem/MkfsParams)."""
        rg = self.rgs.get(rd.rg)
        plan = []
        for res in rd.resources.values():
            if res.diskless:
                continue
            for vd in rd.vds.values():
                dev = res.own_device.get(vd.nr) if vd.nr in res.own_minor else vd.device
                if dev is None or not dev.check_fs:
                    continue
                vg = rg.vgs.get(vd.nr) if rg is not None else None
                chain = [res.props, vd.props, vg.props if vg else {}, rd.props,
                         rg.props if rg else {}]
                fstype = next((c["FileSystem/Type"] for c in chain if "FileSystem/Type" in c), "")
                if fstype:
                    params = next((c["FileSystem/MkfsParams"] for c in chain
                                   if "FileSystem/MkfsParams" in c), "")
                    plan.append((dev, fstype, params))
                dev.check_fs = False
        return plan

    @staticmethod
    def _satellite_mkfs(rd: str, dev: Device, fstype: str, params: str) -> None:
        """blkid first, never over an existing signature; then ``mkfs.<fs> -q <params>`` with
        ``-F -E nodiscard`` (ext4) or ``-f -K`` (xfs), as MkfsUtils runs them. A failure is
        logged as the satellite reports it (the resource stays, unformatted)."""
        path = str(dev.node_path)
        found = subprocess.run(["blkid", "-o", "export", path], capture_output=True, text=True,
                               timeout=60, check=False)
        if "TYPE=" in found.stdout:
            return
        extra = {"ext4": ["-F", "-E", "nodiscard"], "xfs": ["-f", "-K"]}.get(fstype, [])
        argv = [f"mkfs.{fstype}", "-q", *shlex.split(params), *extra, path]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            log.error("satellite mkfs of %s failed: %s: %s", rd, " ".join(argv),
                      done.stderr.strip())

    def _ensure_devices(self, rd: ResourceDef) -> None:
        if rd.resources:
            for vd in rd.vds.values():
                if vd.device is not None:
                    vd.device.ensure()
            for res in rd.resources.values():
                for dev in res.own_device.values():
                    if dev is not None:
                        dev.ensure()

    # -- props --------------------------------------------------------------------------------

    def _validate_props(self, props: dict[str, str], r: Reply) -> None:
        for k, v in props.items():
            if k.startswith("Aux/"):
                if len(k) > 256 or k == "Aux/":
                    raise r.error(C.FAIL_INVLD_PROP, f"Invalid property key '{k}'")
                continue
            if k not in PROP_ALLOW_EXACT and not k.startswith(PROP_ALLOW_PREFIX):
                raise r.error(C.FAIL_INVLD_PROP,
                              f"The key '{k}' is not whitelisted.",
                              cause=f"Property '{k}' is not whitelisted.")
            if k == "FileSystem/Type" and v not in ("ext4", "xfs"):
                raise r.error(C.FAIL_INVLD_PROP, f"Invalid property value '{v}' for key '{k}'")

    def _modify_props(self, target: dict[str, str], body: dict, r: Reply) -> bool:
        """Apply override/delete/delete_namespaces. Returns True if anything changed."""
        over = body.get("override_props") or {}
        dels = body.get("delete_props") or []
        nss = body.get("delete_namespaces") or []
        self._validate_props(over, r)
        changed = False
        for k in dels:
            if k in target:
                del target[k]
                changed = True
            else:
                r.add(C.WARN_DEL_UNSET_PROP, f"Could not delete property '{k}' as it did not "
                      "exist.", refs={})
        for ns in nss:
            pre = ns.rstrip("/") + "/"
            keys = [k for k in target if k.startswith(pre)]
            if not keys:
                r.add(C.WARN_DEL_UNSET_PROP, f"Could not delete namespace '{ns}' as it did "
                      "not exist.")
            for k in keys:
                del target[k]
                changed = True
        if over:
            target.update(over)
            changed = True
            r.add(C.MODIFIED, "Successfully set property key(s): " + ",".join(sorted(over)))
        return changed

    # -- filters ------------------------------------------------------------------------------

    @staticmethod
    def _props_match(props: dict[str, str], filters: list[str]) -> bool:
        for f in filters:
            if "=" in f:
                k, v = f.split("=", 1)
                if props.get(k) != v:
                    return False
            elif f not in props:
                return False
        return True

    @staticmethod
    def _page(items: list, req: Request) -> list:
        try:
            limit = int(req.q1("limit", "0") or 0)
            offset = int(req.q1("offset", "0") or 0)
        except ValueError:
            return items
        if limit > 0:
            return items[offset:offset + limit]
        return items

    @staticmethod
    def _names(req: Request, key: str) -> set[str] | None:
        vals = [v for v in req.query.get(key, []) if v]
        return {v.upper() for v in vals} if vals else None

    # ==========================================================================================
    # serialisation

    def _pool_json(self, p: Pool) -> dict:
        node = self.nodes[p.node.upper()]
        d: dict[str, Any] = {
            "storage_pool_name": p.name,
            "node_name": p.node,
            "provider_kind": p.kind,
            "props": dict(p.props),
            "static_traits": {"SupportsSnapshots": str(p.kind in SNAPSHOT_PROVIDERS).lower()},
            "free_space_mgr_name": f"{p.node}:{p.name}",
            "uuid": p.uuid,
            "supports_snapshots": p.kind in SNAPSHOT_PROVIDERS,
            "external_locking": False,
        }
        if p.kind != "DISKLESS":
            d["static_traits"]["Provisioning"] = "Thin" if p.kind in THIN_PROVIDERS else "Fat"
            if node.online:
                d["free_capacity"] = p.free_kib
                d["total_capacity"] = p.total_kib
        if not node.online:
            d["reports"] = [make_rc(C.WARN_NOT_CONNECTED,
                                    f"No active connection to satellite '{p.node}'",
                                    obj=C.MASK_STOR_POOL, refs={"Node": p.node})]
        return prune(d)

    def _node_json(self, n: Node) -> dict:
        kinds = sorted({p.kind for p in n.pools.values()})
        return prune({
            "name": n.name,
            "type": "SATELLITE",
            "props": {"CurStltConnName": "default", "NodeUname": n.name, **n.props},
            "net_interfaces": [{"name": "default", "address": n.address,
                                "satellite_port": 3366, "satellite_encryption_type": "PLAIN",
                                "is_active": True, "uuid": new_uuid()}],
            "connection_status": "ONLINE" if n.online else "OFFLINE",
            "uuid": n.uuid,
            # A production Linux satellite with DRBD, LVM and ZFS installed: every provider
            # but SPDK (no rpc.py) and Windows' storage spaces, reported as LINSTOR 1.33.3 does
            # (StltExtToolsChecker: supported kinds listed, the others with their reasons).
            # LINSTOR also lists REMOTE_SPDK, which the OpenAPI enum lacks: left out here.
            "storage_providers": sorted({"DISKLESS", "LVM", "LVM_THIN", "ZFS", "ZFS_THIN",
                                         "FILE", "FILE_THIN", "EBS_INIT", "EBS_TARGET",
                                         *kinds}),
            "resource_layers": ["DRBD", "LUKS", "NVME", "WRITECACHE", "CACHE", "BCACHE",
                                "STORAGE"],
            "unsupported_providers": {
                "SPDK": ["IO exception occured when running 'rpc.py spdk_get_version': Cannot "
                         "run program \"rpc.py\": error=2, No such file or directory"],
                "STORAGE_SPACES": ["This tool does not exist on the Linux platform."],
                "STORAGE_SPACES_THIN": ["This tool does not exist on the Linux platform."],
            },
        })

    def _rg_json(self, rg: ResourceGroup) -> dict:
        return prune({"name": rg.name, "description": rg.description, "props": dict(rg.props),
                      "select_filter": dict(rg.select_filter), "uuid": rg.uuid,
                      "peer_slots": rg.peer_slots})

    @staticmethod
    def _vg_json(vg: VolumeGroup) -> dict:
        return prune({"volume_number": vg.nr, "props": dict(vg.props), "flags": list(vg.flags),
                      "uuid": vg.uuid})

    def _vd_json(self, rd: ResourceDef, vd: VolumeDef) -> dict:
        # Layer data (and the block size derived from the backing storage) exist once a
        # resource is deployed; a bare definition has neither (LINSTOR 1.33.3).
        deployed = bool(rd.resources)
        props = {**vd.props, "DrbdOptions/Disk/block-size": "512"} if deployed else vd.props
        return prune({
            "volume_number": vd.nr, "size_kib": vd.size_kib, "props": dict(props),
            "flags": list(vd.flags),
            "layer_data": None if not deployed else [{"type": "STORAGE"}]
            if self._storage_only(rd) else [
                {"type": "DRBD", "data": {"volume_number": vd.nr, "minor_number": vd.minor}},
                {"type": "STORAGE"},
            ],
            "uuid": vd.uuid,
        })

    def _rd_json(self, rd: ResourceDef, with_vds: bool) -> dict:
        d = {
            "name": rd.name,
            "external_name": rd.external_name,
            "props": dict(rd.props),
            "flags": list(rd.flags),
            "layer_data": None if not rd.resources else [{"type": "STORAGE"}]
            if self._storage_only(rd) else [
                {"type": "DRBD", "data": {"peer_slots": rd.peer_slots, "al_stripes": 1,
                                          "al_stripe_size_kib": 32, "port": rd.port,
                                          "transport_type": "IP", "secret": rd.secret,
                                          "down": False}},
                {"type": "STORAGE"},
            ],
            "uuid": rd.uuid,
            "resource_group_name": self.rgs[rd.rg].name if rd.rg in self.rgs else rd.rg,
        }
        if with_vds:
            d["volume_definitions"] = [self._vd_json(rd, v) for v in sorted(
                rd.vds.values(), key=lambda v: v.nr)]
        return prune(d)

    def _dev_path(self, vd: VolumeDef, res: Resource | None = None) -> str:
        if res is not None and vd.nr in res.own_minor:
            return str(self.devices.device_dir / f"drbd{res.own_minor[vd.nr]}")
        return str(self.devices.device_dir / f"drbd{vd.minor}")

    @staticmethod
    def _storage_only(rd: ResourceDef) -> bool:
        """No DRBD layer: each replica is a plain storage device of its own (linstor-facts
        §9 C6; the layer stack follows the RD's layer_list, CtrlRscLayerDataFactory)."""
        return "DRBD" not in rd.layer_stack

    def _disk_state(self, res: Resource) -> str:
        if res.diskless:
            return "Diskless"
        return res.disk_state or "UpToDate"

    def _reported(self, res: Resource) -> bool:
        return res.reported and self.nodes[res.node.upper()].online

    def _may_promote(self, rd: ResourceDef, res: Resource) -> bool:
        if not self._reported(res) or not res.quorum or self._in_use(rd, res):
            return False
        # a peer that cannot be reached has role Unknown: it does not block promotion
        if any(self._in_use(rd, o) for o in rd.resources.values()
               if o is not res and self._reported(o)):
            two = rd.props.get("DrbdOptions/Net/allow-two-primaries") == "yes"
            if not two:
                return False
        if not res.diskless:
            return self._disk_state(res) == "UpToDate"
        return any(not o.diskless and self._disk_state(o) == "UpToDate"
                   and self._reported(o) for o in rd.resources.values())

    def _storage_dev(self, rd: ResourceDef, res: Resource, vd: VolumeDef) -> str:
        return f"/dev/{res.pool.lower()}/{rd.name}_{vd.nr:05d}"

    def _storage_volume_json(self, rd: ResourceDef, res: Resource, vd: VolumeDef) -> dict:
        """The STORAGE layer's volume of a STORAGE-only resource: the device is the storage
        device itself; LINSTOR 1.33.3 reports its disk_state as the string "[]"."""
        return {"volume_number": vd.nr, "device_path": self._dev_path(vd, res),
                "allocated_size_kib": vd.size_kib, "usable_size_kib": vd.size_kib,
                "disk_state": "[]"}

    def _volume_json(self, rd: ResourceDef, res: Resource, vd: VolumeDef) -> dict:
        pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
        kind = pool.kind if pool else "DISKLESS"
        if self._storage_only(rd):
            # No DRBD: no volume state and no top-level usable size (Json.apiToVolume fills
            # them from the DRBD layer's satellite state), the device is the storage device.
            st = self._storage_volume_json(rd, res, vd)
            return prune({"volume_number": vd.nr, "storage_pool_name": res.pool,
                          "provider_kind": kind, "device_path": st["device_path"],
                          "allocated_size_kib": vd.size_kib,
                          "layer_data_list": [{"type": "STORAGE", "data": st}],
                          "uuid": vd.uuid})
        dev = self._dev_path(vd)
        reported = self._reported(res)
        ds = self._disk_state(res)
        drbd_data: dict[str, Any] = {
            "drbd_volume_definition": {"volume_number": vd.nr, "minor_number": vd.minor},
            "device_path": dev,
            "usable_size_kib": vd.size_kib,
        }
        layers = [{"type": "DRBD", "data": drbd_data}]
        if reported:
            drbd_data["disk_state"] = ds
        if not res.diskless:
            drbd_data["backing_device"] = self._storage_dev(rd, res, vd)
            drbd_data["meta_disk"] = "internal"
            drbd_data["allocated_size_kib"] = vd.size_kib + 4
            st: dict[str, Any] = {"volume_number": vd.nr,
                                  "device_path": self._storage_dev(rd, res, vd),
                                  "allocated_size_kib": vd.size_kib + 4,
                                  "usable_size_kib": vd.size_kib + 4}
            layers.append({"type": "STORAGE", "data": st})
        v: dict[str, Any] = {
            "volume_number": vd.nr,
            "storage_pool_name": res.pool,
            "provider_kind": kind,
            "device_path": dev,
            "usable_size_kib": vd.size_kib,
            "layer_data_list": layers,
            "uuid": vd.uuid,
        }
        if not res.diskless:
            v["allocated_size_kib"] = vd.size_kib
        if reported:
            state: dict[str, Any] = {"disk_state": ds}
            if self.rest_version >= (1, 25, 0):
                reps = {}
                for o in rd.resources.values():
                    if o is res:
                        continue
                    on = self._reported(o)
                    reps[o.node] = {"replication_state": "Established" if on else "Off"}
                state["replication_states"] = reps
            v["state"] = state
        return prune(v)

    def _resource_json(self, rd: ResourceDef, res: Resource, with_volumes: bool) -> dict:
        vds = sorted(rd.vds.values(), key=lambda v: v.nr)
        reported = self._reported(res)
        if self._storage_only(rd):
            # No DRBD layer: a STORAGE layer object only, and a state object with nothing in it
            # (in_use comes from DRBD; Jackson keeps the empty bean: "state": {}).
            d = prune({
                "name": rd.name, "node_name": res.node,
                "props": {"StorPoolName": res.pool, **res.props}, "flags": list(res.flags),
                "layer_object": {"type": "STORAGE", "storage": {"storage_volumes": [
                    self._storage_volume_json(rd, res, vd) for vd in vds]}},
                "uuid": res.uuid, "create_timestamp": res.create_timestamp,
                "volumes": [self._volume_json(rd, res, vd) for vd in vds] if with_volumes
                else None,
            })
            if reported:
                d["state"] = {}
            return d
        conns = {}
        for o in rd.resources.values():
            if o is res:
                continue
            ok = reported and self._reported(o)
            conns[o.node] = {"connected": ok, "message": "Connected" if ok else "Connecting"}
        drbd_vols = []
        storage_vols = []
        for vd in vds:
            dv: dict[str, Any] = {
                "drbd_volume_definition": {"volume_number": vd.nr, "minor_number": vd.minor},
                "device_path": self._dev_path(vd), "usable_size_kib": vd.size_kib}
            if reported:
                dv["disk_state"] = self._disk_state(res)
            if not res.diskless:
                dv["backing_device"] = self._storage_dev(rd, res, vd)
                dv["meta_disk"] = "internal"
                dv["allocated_size_kib"] = vd.size_kib + 4
                storage_vols.append({"volume_number": vd.nr,
                                     "device_path": self._storage_dev(rd, res, vd),
                                     "allocated_size_kib": vd.size_kib + 4,
                                     "usable_size_kib": vd.size_kib + 4})
            drbd_vols.append(dv)
        may = self._may_promote(rd, res)
        drbd = {
            "drbd_resource_definition": {"peer_slots": rd.peer_slots, "al_stripes": 1,
                                         "al_stripe_size_kib": 32, "port": rd.port,
                                         "transport_type": "IP", "secret": rd.secret,
                                         "down": False},
            "node_id": res.node_id,
            "tcp_ports": [rd.port] if self.rest_version >= (1, 26, 0) else None,
            "peer_slots": rd.peer_slots,
            "al_stripes": 1,
            "al_size": 32,
            "flags": ["DISKLESS", "INITIALIZED"] if res.diskless else ["INITIALIZED"],
            "drbd_volumes": drbd_vols,
            "connections": conns,
            "promotion_score": (10102 if not res.diskless else 10101) if may else 0,
            "may_promote": may,
        }
        layer: dict[str, Any] = {"type": "DRBD", "drbd": drbd}
        if not res.diskless:
            layer["children"] = [{"type": "STORAGE",
                                  "storage": {"storage_volumes": storage_vols}}]
        d: dict[str, Any] = {
            "name": rd.name,
            "node_name": res.node,
            "props": {"StorPoolName": res.pool, **res.props},
            "flags": list(res.flags),
            "layer_object": layer,
            "uuid": res.uuid,
            "create_timestamp": res.create_timestamp,
        }
        if reported:
            d["state"] = {"in_use": self._in_use(rd, res)}
        if with_volumes:
            d["volumes"] = [self._volume_json(rd, res, vd) for vd in vds]
        return prune(d)

    def _snapshot_json(self, rd: ResourceDef, s: Snapshot) -> dict:
        # Json.apiToSnapshot: "props" is the merged view of the snapshot definition's and the
        # copied RD's props; per node the copied resource props; per volume the copied VD
        # props; a snapshot volume's state only for EBS (EbsStatusManagerService), so none.
        return prune({
            "name": s.name,
            "resource_name": rd.name,
            "nodes": list(s.nodes),
            "props": {**s.rd_props, **s.props},
            "snapshot_definition_props": dict(s.props),
            "resource_definition_props": dict(s.rd_props),
            "flags": list(s.flags),
            "volume_definitions": [{"volume_number": nr, "size_kib": size,
                                    "volume_definition_props": dict(s.vd_props.get(nr, {}))}
                                   for nr, size in sorted(s.sizes.items())],
            "uuid": s.uuid,
            "snapshots": [{"snapshot_name": s.name, "node_name": n,
                           "create_timestamp": s.timestamps.get(n.upper()),
                           "resource_props": {"StorPoolName": s.pools.get(n.upper(), "")},
                           "uuid": new_uuid(),
                           "snapshot_volumes": [{"vlm_nr": nr, "uuid": new_uuid()}
                                                for nr in sorted(s.sizes)]}
                          for n in s.nodes],
        })

    # ==========================================================================================
    # controller / nodes / pools

    def h_health(self, req: Request) -> tuple[int, Any]:
        return 200, None

    def h_version(self, req: Request) -> tuple[int, Any]:
        return 200, {"version": self.cfg.version, "git_hash": "simulator",
                     "build_time": "2026-01-01T00:00:00+00:00",
                     "rest_api_version": self.cfg.rest_api_version}

    def h_ctrl_props(self, req: Request) -> tuple[int, Any]:
        return 200, dict(self.ctrl_props)

    def h_ctrl_props_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ControllerPropsModify")
        r = Reply(C.MASK_MOD, C.MASK_CTRL_CONF)
        self._modify_props(self.ctrl_props, body, r)
        return 201, r.entries

    def h_nodes(self, req: Request) -> tuple[int, Any]:
        names = self._names(req, "nodes")
        props = req.query.get("props", [])
        out = [self._node_json(n) for n in self.nodes.values()
               if (names is None or n.name.upper() in names)
               and self._props_match(n.props, props)]
        return 200, self._page(out, req)

    def h_node(self, req: Request) -> tuple[int, Any]:
        return 200, self._node_json(self._node(req.params["node"], Reply(0, C.MASK_NODE)))

    def h_node_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "NodeModify")
        r = Reply(C.MASK_MOD, C.MASK_NODE)
        node = self._node(req.params["node"], r)
        self._modify_props(node.props, body, r)
        r.add(C.MODIFIED, f"Node '{node.name}' modified.", refs={"Node": node.name})
        return 200, r.entries

    def _pools_list(self, req: Request, nodes: list[Node]) -> list[dict]:
        pnames = self._names(req, "storage_pools")
        props = req.query.get("props", [])
        out = []
        for n in nodes:
            for p in sorted(n.pools.values(), key=lambda p: p.name):
                if pnames is not None and p.key not in pnames:
                    continue
                if not self._props_match(p.props, props):
                    continue
                out.append(self._pool_json(p))
        return self._page(out, req)

    def h_view_pools(self, req: Request) -> tuple[int, Any]:
        names = self._names(req, "nodes")
        nodes = [n for n in self.nodes.values() if names is None or n.name.upper() in names]
        return 200, self._pools_list(req, nodes)

    def h_node_pools(self, req: Request) -> tuple[int, Any]:
        node = self._node(req.params["node"], Reply(0, C.MASK_STOR_POOL))
        return 200, self._pools_list(req, [node])

    def h_node_pool(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_STOR_POOL)
        node = self._node(req.params["node"], r)
        p = node.pools.get(req.params["sp"].upper())
        if p is None:
            raise r.error(C.FAIL_NOT_FOUND_STOR_POOL,
                          f"Storage pool '{req.params['sp']}' on node '{node.name}' not found.",
                          refs={"Node": node.name, "StorPoolDfn": req.params["sp"]})
        return 200, self._pool_json(p)

    # ==========================================================================================
    # resource groups

    def h_rgs(self, req: Request) -> tuple[int, Any]:
        names = self._names(req, "resource_groups")
        props = req.query.get("props", [])
        out = [self._rg_json(g) for g in self.rgs.values()
               if (names is None or g.name.upper() in names) and self._props_match(g.props, props)]
        return 200, self._page(out, req)

    def h_rg(self, req: Request) -> tuple[int, Any]:
        return 200, self._rg_json(self._rg(req.params["rg"], Reply(0, C.MASK_RSC_GRP)))

    def _check_filter(self, sf: dict, r: Reply) -> dict:
        sf = {k: v for k, v in (sf or {}).items() if v is not None}
        for lt in sf.get("layer_stack") or []:
            if lt not in LAYER_TYPES:
                raise r.error(C.FAIL_INVLD_LAYER_STACK, f"Unknown layer type '{lt}'")
        for pk in sf.get("provider_list") or []:
            if pk not in PROVIDER_KINDS:
                raise r.error(C.FAIL_INVLD_REQUEST, f"Unknown provider kind '{pk}'")
        if "place_count" in sf and sf["place_count"] < 0:
            raise r.error(C.FAIL_INVLD_REQUEST, "place_count must not be negative")
        if sf.get("not_place_with_rsc_regex"):
            try:
                re.compile(sf["not_place_with_rsc_regex"])
            except re.error:
                raise r.error(C.FAIL_INVLD_REQUEST, "Invalid not_place_with_rsc_regex") from None
        if sf.get("storage_pool") and not sf.get("storage_pool_list"):
            # rest/v1/ResourceGroups.selectFilterToApi and Json.AutoSelectFilterData: a filter
            # naming only storage_pool is stored (and answered) with storage_pool_list = [it].
            sf["storage_pool_list"] = [sf["storage_pool"]]
        return sf

    def h_rg_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceGroup", sync=True)
        r = Reply(C.MASK_CRT, C.MASK_RSC_GRP)
        name = check_name(body.get("name"), C.FAIL_INVLD_RSC_NAME, "resource group", r)
        if name.upper() in self.rgs:
            raise r.error(C.FAIL_EXISTS_RSC_GRP,
                          f"A resource group with the name '{name}' already exists.",
                          refs={"RscGrp": name})
        props = body.get("props") or {}
        self._validate_props(props, r)
        rg = ResourceGroup(name=name, description=body.get("description") or "",
                           props=dict(props),
                           select_filter=self._check_filter(body.get("select_filter") or {}, r),
                           peer_slots=body.get("peer_slots"))
        self.rgs[name.upper()] = rg
        r.add(C.CREATED, f"New resource group '{name}' created.", refs={"RscGrp": name})
        return 201, r.entries

    def h_rg_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceGroupModify")
        r = Reply(C.MASK_MOD, C.MASK_RSC_GRP)
        rg = self._rg(req.params["rg"], r)
        self._modify_props(rg.props, body, r)
        if body.get("description") is not None:
            rg.description = body["description"]
        if body.get("select_filter") is not None:
            sf = self._check_filter(body["select_filter"], r)
            rg.select_filter.update(sf)
        if body.get("peer_slots") is not None:
            rg.peer_slots = body["peer_slots"]
        r.add(C.MODIFIED, f"Resource group '{rg.name}' modified.", refs={"RscGrp": rg.name})
        return 200, r.entries

    def h_rg_delete(self, req: Request) -> tuple[int, Any]:
        # CtrlRscGrpApiCallHandler.delete reports under ApiOperation.makeCreateOperation() (sic):
        # its entries carry MASK_CRT, not MASK_DEL.
        r = Reply(C.MASK_CRT, C.MASK_RSC_GRP)
        name = req.params["rg"]
        rg = self.rgs.get(name.upper())
        if rg is None:
            r.add(C.WARN_NOT_FOUND, f"Resource group '{name}' not found.", refs={"RscGrp": name})
            return 200, r.entries
        users = [rd.name for rd in self.rds.values() if rd.rg == name.upper()]
        if users:
            raise r.error(C.FAIL_EXISTS_RSC_DFN,
                          f"Cannot delete resource group '{rg.name}' because it has existing "
                          "resource definitions.", details="Used by: " + ", ".join(users[:10]),
                          refs={"RscGrp": rg.name})
        if name.upper() == DEFAULT_RG.upper():
            raise r.error(C.FAIL_INVLD_REQUEST, "The default resource group cannot be deleted.")
        del self.rgs[name.upper()]
        r.add(C.DELETED, f"Resource group '{rg.name}' deleted.", refs={"RscGrp": rg.name})
        return 200, r.entries

    def h_vgs(self, req: Request) -> tuple[int, Any]:
        rg = self._rg(req.params["rg"], Reply(0, C.MASK_VLM_GRP))
        return 200, [self._vg_json(v) for v in sorted(rg.vgs.values(), key=lambda v: v.nr)]

    def h_vg(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_VLM_GRP)
        rg = self._rg(req.params["rg"], r)
        vg = rg.vgs.get(int(req.params["vnr"]))
        if vg is None:
            raise r.error(C.FAIL_NOT_FOUND_VLM_GRP, "Volume group not found.",
                          refs={"RscGrp": rg.name, "VlmNr": req.params["vnr"]})
        return 200, self._vg_json(vg)

    def h_vg_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "VolumeGroup", sync=True, default={})
        r = Reply(C.MASK_CRT, C.MASK_VLM_GRP)
        rg = self._rg(req.params["rg"], r)
        nr = body.get("volume_number")
        if nr is None:
            nr = 0
            while nr in rg.vgs:
                nr += 1
        if nr in rg.vgs:
            raise r.error(C.FAIL_EXISTS_VLM_GRP, f"Volume group {nr} already exists.",
                          refs={"RscGrp": rg.name, "VlmNr": str(nr)})
        props = body.get("props") or {}
        self._validate_props(props, r)
        rg.vgs[nr] = VolumeGroup(nr=nr, props=dict(props), flags=list(body.get("flags") or []))
        r.add(C.CREATED, f"New volume group {nr} of '{rg.name}' created.",
              refs={"RscGrp": rg.name, "VlmNr": str(nr)})
        return 201, r.entries

    def h_vg_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_VLM_GRP)
        rg = self._rg(req.params["rg"], r)
        nr = int(req.params["vnr"])
        if rg.vgs.pop(nr, None) is None:
            r.add(C.WARN_NOT_FOUND, f"Volume group {nr} not found.")
        else:
            r.add(C.DELETED, f"Volume group {nr} of '{rg.name}' deleted.")
        return 200, r.entries

    # ==========================================================================================
    # placement

    def _merged_filter(self, rd: ResourceDef | None, rg: ResourceGroup | None,
                       sf: dict | None) -> dict:
        merged: dict[str, Any] = {}
        if rg is not None:
            merged.update({k: v for k, v in rg.select_filter.items() if v is not None})
        merged.update({k: v for k, v in (sf or {}).items() if v is not None})
        return merged

    def _node_rsc_count(self, node: str) -> int:
        nk = node.upper()
        return sum(1 for rd in self.rds.values() if nk in rd.resources)

    def _pool_fits(self, p: Pool, need_kib: int, sf: dict) -> bool:
        if p.kind in THIN_PROVIDERS:
            factor = float(sf.get("overprovision") or 1.0)
            return p.free_kib * factor >= need_kib
        return p.free_kib >= need_kib

    def _candidates(self, rd: ResourceDef | None, sf: dict, need_kib: int,
                    exclude: set[str]) -> list[tuple[Node, Pool]]:
        """Best pool per eligible node, ranked: most free space, fewest resources, name."""
        # The autoplacer reads the list only (AutoSelectFilterApi.getStorPoolNameList); a lone
        # storage_pool was turned into a one-element list when the filter was parsed.
        pool_names = list(sf.get("storage_pool_list") or [])
        if not pool_names and sf.get("storage_pool"):
            pool_names.append(sf["storage_pool"])
        if not pool_names and rd is not None:
            spn = rd.props.get("StorPoolName") or self.rgs.get(rd.rg, ResourceGroup("")).props.get(
                "StorPoolName")
            if spn:
                pool_names = [spn]
        pool_keys = {p.upper() for p in pool_names}
        node_keys = {n.upper() for n in sf.get("node_name_list") or []}
        providers = set(sf.get("provider_list") or [])
        avoid: set[str] = set()
        for other in sf.get("not_place_with_rsc") or []:
            ord_ = self.rds.get(other.upper())
            if ord_ is not None:
                avoid.update(ord_.resources.keys())
        rx = sf.get("not_place_with_rsc_regex")
        if rx:
            pat = re.compile(rx, re.IGNORECASE)
            for ord_ in self.rds.values():
                if (rd is None or ord_ is not rd) and pat.fullmatch(ord_.name):
                    avoid.update(ord_.resources.keys())
        out = []
        for nk, node in self.nodes.items():
            if not node.online or nk in exclude or nk in avoid:
                continue
            if node_keys and nk not in node_keys:
                continue
            best = None
            for p in node.pools.values():
                if p.kind == "DISKLESS":
                    continue
                if pool_keys and p.key not in pool_keys:
                    continue
                if providers and p.kind not in providers:
                    continue
                if not self._pool_fits(p, need_kib, sf):
                    continue
                if best is None or (-p.free_kib, p.name) < (-best.free_kib, best.name):
                    best = p
            if best is not None:
                out.append((node, best))
        out.sort(key=lambda np: (-np[1].free_kib, self._node_rsc_count(np[0].name),
                                 np[0].name))
        return out

    @staticmethod
    def _prop_cond(key: str) -> tuple[str, str | None]:
        if "=" in key:
            k, v = key.split("=", 1)
            return k, v
        return key, None

    def _select(self, cands: list[tuple[Node, Pool]], count: int, sf: dict,
                existing: list[Node]) -> list[tuple[Node, Pool]] | None:
        same = [self._prop_cond(k) for k in sf.get("replicas_on_same") or []]
        diff = [self._prop_cond(k)[0] for k in sf.get("replicas_on_different") or []]

        def group_ok(node: Node, ref: dict[str, str | None]) -> bool:
            for k, v in same:
                val = node.props.get(k)
                if val is None:
                    return False
                if v is not None and val != v:
                    return False
                if ref.get(k) is not None and ref[k] != val:
                    return False
            return True

        ref: dict[str, str | None] = {}
        for n in existing:
            for k, _v in same:
                ref.setdefault(k, n.props.get(k))
        groups: list[dict[str, str | None]] = []
        if same and not all(ref.get(k) is not None for k, _ in same):
            seen = set()
            for node, _p in cands:
                g = tuple((k, node.props.get(k)) for k, _ in same)
                if g not in seen and group_ok(node, ref):
                    seen.add(g)
                    groups.append({**ref, **dict(g)})
        else:
            groups.append(ref)
        for g in groups:
            used: dict[str, set[str]] = {k: set() for k in diff}
            for n in existing:
                for k in diff:
                    if n.props.get(k) is not None:
                        used[k].add(n.props[k])
            chosen = []
            for node, p in cands:
                if len(chosen) >= count:
                    break
                if same and not group_ok(node, g):
                    continue
                if any(node.props.get(k) is not None and node.props[k] in used[k]
                       for k in diff):
                    continue
                chosen.append((node, p))
                for k in diff:
                    if node.props.get(k) is not None:
                        used[k].add(node.props[k])
            if len(chosen) >= count:
                return chosen
        return None

    def _next_node_id(self, rd: ResourceDef) -> int:
        used = {r.node_id for r in rd.resources.values()}
        i = 0
        while i in used:
            i += 1
        return i

    def _need_kib(self, rd: ResourceDef) -> int:
        return sum(vd.size_kib for vd in rd.vds.values())

    def _consume(self, pool: Pool, size_kib: int, sign: int = 1) -> None:
        if pool.kind == "DISKLESS":
            return
        if pool.kind in THIN_PROVIDERS:
            amount = int(size_kib * self.cfg.thin_alloc_fraction)
        else:
            amount = size_kib
        pool.used_kib = max(0, pool.used_kib + sign * amount)

    def _add_resource(self, rd: ResourceDef, node: Node, pool: Pool | None, r: Reply,
                      flags: list[str] | None = None) -> Resource:
        pname = pool.name if pool is not None else DISKLESS_POOL
        res = Resource(rd=rd.key, node=node.name, pool=pname, node_id=self._next_node_id(rd),
                       flags=list(flags or []))
        if pool is not None and pool.kind != "DISKLESS":
            self._consume(pool, self._need_kib(rd))
            if self._storage_only(rd) and any(not o.diskless and not o.own_minor
                                              for o in rd.resources.values()):
                for vd in rd.vds.values():
                    m = self._alloc_minor(None)
                    res.own_minor[vd.nr] = m
                    res.own_device[vd.nr] = self._new_device(m, vd.size_kib)
        rd.resources[node.name.upper()] = res
        r.add(C.CREATED, f"Resource '{rd.name}' on node '{node.name}' created.",
              op=C.MASK_CRT, obj=C.MASK_RSC, refs={"RscDfn": rd.name, "Node": node.name})
        if not node.online:
            r.add(C.WARN_NOT_CONNECTED, f"No active connection to satellite '{node.name}'",
                  op=C.MASK_CRT, obj=C.MASK_RSC, refs={"Node": node.name})
        return res

    def _make_diskful(self, rd: ResourceDef, res: Resource, pool: Pool) -> None:
        res.flags = [f for f in res.flags if f not in ("DISKLESS", "DRBD_DISKLESS",
                                                       "TIE_BREAKER")]
        res.pool = pool.name
        self._consume(pool, self._need_kib(rd))

    def _make_diskless(self, rd: ResourceDef, res: Resource, pool_name: str | None) -> None:
        pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
        if pool is not None:
            self._consume(pool, self._need_kib(rd), -1)
        res.flags = ["DISKLESS", "DRBD_DISKLESS"] + [
            f for f in res.flags if f not in ("DISKLESS", "DRBD_DISKLESS")]
        res.pool = pool_name or DISKLESS_POOL

    def _autoplace(self, rd: ResourceDef, sf: dict, r: Reply, req: Request | None,
                   diskless_on_remaining: bool = False) -> None:
        place_count = sf.get("place_count")
        if place_count is None:
            place_count = 2
        existing = [res for res in rd.diskful() if "DELETE" not in res.flags]
        additional = place_count - len(existing)
        if sf.get("additional_place_count"):
            additional = int(sf["additional_place_count"])
        if additional < 0:
            r.add(C.WARN_RSC_ALREADY_DEPLOYED,
                  f"Resource '{rd.name}' is already deployed on {len(existing)} nodes, "
                  f"{-additional} would have to be deleted.", refs={"RscDfn": rd.name})
            return
        if additional == 0 and not diskless_on_remaining:
            r.add(C.WARN_RSC_ALREADY_DEPLOYED,
                  f"Resource '{rd.name}' was already deployed on {len(existing)} nodes. "
                  "Skipping.", refs={"RscDfn": rd.name})
            return
        exclude = {res.node.upper() for res in existing}
        chosen: list[tuple[Node, Pool]] = []
        if additional > 0:
            cands = self._candidates(rd, sf, self._need_kib(rd), exclude)
            sel = self._select(cands, additional, sf,
                               [self.nodes[res.node.upper()] for res in existing])
            if sel is None:
                raise r.error(
                    C.FAIL_NOT_ENOUGH_NODES,
                    f"Not enough available nodes for resource '{rd.name}'",
                    details=(f"Not enough available nodes. Needed {additional} additional "
                             f"replica(s), {len(cands)} candidate(s) matched. Criteria: "
                             + json.dumps(sf, sort_keys=True)),
                    refs={"RscDfn": rd.name})
            chosen = sel
        for node, pool in chosen:
            cur = rd.resources.get(node.name.upper())
            if cur is not None:  # diskless / tiebreaker there: toggle into diskful
                self._make_diskful(rd, cur, pool)
                r.add(C.MODIFIED, f"Resource '{rd.name}' on '{node.name}' toggled to diskful.",
                      obj=C.MASK_RSC, refs={"RscDfn": rd.name, "Node": node.name})
            else:
                self._add_resource(rd, node, pool, r)
        if diskless_on_remaining or sf.get("diskless_on_remaining"):
            for nk, node in self.nodes.items():
                cur = rd.resources.get(nk)
                if cur is not None and "TIE_BREAKER" in cur.flags:
                    # CtrlRscAutoPlaceApiCallHandler: a tiebreaker's node is "remaining" too;
                    # createResourceDb takes it over as a wanted diskless resource
                    cur.flags.remove("TIE_BREAKER")
                    continue
                if nk in rd.resources or not node.online:
                    continue
                self._add_resource(rd, node, None, r, flags=["DISKLESS", "DRBD_DISKLESS"])
        self._tb_manage(rd, r, req_sf=sf)
        self._schedule_attach(req, rd)

    # ==========================================================================================
    # automatic quorum tiebreaker (linstor-facts §9 C5)

    TB_KEY = "DrbdOptions/auto-add-quorum-tiebreaker"

    def _prio_prop(self, rd: ResourceDef, key: str) -> str | None:
        """PriorityProps(RD, RG, controller): the first level that sets the key wins."""
        rg = self.rgs.get(rd.rg)
        for props in (rd.props, rg.props if rg is not None else {}, self.ctrl_props):
            if key in props:
                return props[key]
        return None

    def _tb_enabled(self, rd: ResourceDef) -> bool:
        # CtrlRscAutoTieBreakerHelper.isAutoTieBreakerEnabled: "True" (ignoring case) on the
        # first of RD, RG, controller; the controller's value is "True" from the first DB
        # migration on (Migration_00_Init: /CTRLCFG DrbdOptions/auto-add-quorum-tiebreaker).
        val = self._prio_prop(rd, self.TB_KEY)
        return (val if val is not None else "True").lower() == "true"

    def _tb_quorum_on(self, rd: ResourceDef) -> bool:
        # CtrlRscAutoQuorumHelper.isQuorumEnabled (DrbdOptions/Resource/quorum, default
        # "majority") or isAutoQuorumEnabled (Internal/Drbd/QuorumSetBy, default "linstor";
        # setting the quorum prop on RD, RG or controller sets it to "user",
        # CtrlRscDfnApiCallHandler / CtrlRscGrpApiCallHandler / CtrlConfApiCallHandler).
        quorum = self._prio_prop(rd, "DrbdOptions/Resource/quorum")
        return quorum is None or quorum.lower() == "majority"

    @staticmethod
    def _tb_node_ok(node: Node) -> bool:
        """Could the autoplacer put a DRBD-diskless tiebreaker on this node? Online (the
        satellite must report DRBD 9.0.19+, supportsTieBreaker) with a diskless pool. A node
        list in the filters does not apply: getStorPoolForTieBreaker's own (empty) node list
        comes first in AutoSelectFilterPojo.merge, where the first non-null value wins."""
        return node.online and any(p.kind == "DISKLESS" for p in node.pools.values())

    def _tb_should_exist(self, rd: ResourceDef, gone: Resource | None) -> bool:
        """shouldTieBreakerExist: quorum on, an even number (>= 2) of diskful DRBD resources
        and no diskless one that is not the tiebreaker; resources being deleted do not count
        (isDrbdResource skips DELETE / DRBD_DELETE)."""
        if self._storage_only(rd) or not self._tb_quorum_on(rd):
            return False
        live = [o for o in rd.resources.values() if o is not gone and "DELETE" not in o.flags]
        diskful = sum(1 for o in live if not o.diskless)
        diskless = sum(1 for o in live if o.diskless and "TIE_BREAKER" not in o.flags)
        return diskful >= 2 and diskful % 2 == 0 and diskless == 0

    def _tb_pick_node(self, rd: ResourceDef, req_sf: dict | None) -> Node | None:
        """getStorPoolForTieBreaker: the autoplacer, DRBD diskless, never a node that has a
        resource of rd already (doNotPlaceWithRscList = [rd]); replicas_on_same / _different
        from the RG's filter, else the request's (merge order: helper, RG, request). Ranked
        like _candidates (fewest resources, name)."""
        existing = [self.nodes[o.node.upper()] for o in rd.resources.values()
                    if not o.diskless]
        rg = self.rgs.get(rd.rg)
        rg_sf = rg.select_filter if rg is not None else {}
        sf = {k: rg_sf.get(k) if rg_sf.get(k) is not None else (req_sf or {}).get(k)
              for k in ("replicas_on_same", "replicas_on_different")}
        cands = [(n, n.pools[DISKLESS_POOL.upper()]) for nk, n in self.nodes.items()
                 if nk not in rd.resources and self._tb_node_ok(n)
                 and DISKLESS_POOL.upper() in n.pools]
        cands.sort(key=lambda np: (self._node_rsc_count(np[0].name), np[0].name))
        sel = self._select(cands, 1, sf, existing)
        return sel[0][0] if sel else None

    def _tb_manage(self, rd: ResourceDef, r: Reply, gone: Resource | None = None,
                   keep: bool = False, req_sf: dict | None = None) -> bool:
        """CtrlRscAutoTieBreakerHelper.manage, run after every placement change (autoplace,
        spawn, resource create / delete, make-available, toggle-disk, RD props). `gone` is the
        resource a DELETE is about to remove (LINSTOR flags it DRBD_DELETE first, then runs
        the helper). Returns True when that resource was taken over as the tiebreaker and
        must therefore stay."""
        if self._storage_only(rd):
            return False  # no DRBD layer, nothing counts (isDrbdResource)
        enabled = self._tb_enabled(rd)
        if not enabled and keep:
            rd.props[self.TB_KEY] = "True"  # enableAutoTieBreaker
            r.add(C.INFO_PROP_SET, "Autotiebreaker automatically enabled due to "
                  "--keep-tiebreaker", refs={"RscDfn": rd.name})
            enabled = True
        tb = next((o for o in rd.resources.values() if "TIE_BREAKER" in o.flags), None)
        if enabled and self._tb_should_exist(rd, gone):
            if tb is None:
                # takeover of the resource being deleted (the loop over DELETE-flagged
                # resources does not look at keep_tiebreaker): a diskless one on an eligible
                # node becomes the tiebreaker, a diskful one is toggled into one
                # (couldTakeover / takeover).
                if gone is not None and self._tb_node_ok(self.nodes[gone.node.upper()]):
                    if not gone.diskless:
                        self._make_diskless(rd, gone, None)
                    gone.flags.append("TIE_BREAKER")
                    r.add(C.INFO_TIE_BREAKER_TAKEOVER, "The given resource will not be "
                          "deleted but will be taken over as a linstor managed tiebreaker "
                          "resource.", refs={"RscDfn": rd.name, "Node": gone.node})
                    return True
                node = self._tb_pick_node(rd, req_sf)
                if node is None:
                    r.add(C.WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER,
                          "Could not find suitable node to automatically create a tie "
                          f"breaking resource for '{rd.name}'.", refs={"RscDfn": rd.name})
                    return False
                self._add_resource(rd, node, None, r,
                                   flags=["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"])
                r.add(C.INFO_TIE_BREAKER_CREATED, f"Tie breaker resource '{rd.name}' "
                      f"created on {node.name}", refs={"RscDfn": rd.name, "Node": node.name})
            elif tb is gone:
                if keep:
                    r.add(C.INFO_TIE_BREAKER_TAKEOVER, "The given resource will not be "
                          "deleted but will be taken over as a linstor managed tiebreaker "
                          "resource.", refs={"RscDfn": rd.name, "Node": tb.node})
                    return True
                # the user deletes the tiebreaker itself: auto-tiebreaker off for this RD
                rd.props[self.TB_KEY] = "False"
                r.add(C.INFO_PROP_SET, "Disabling auto-tiebreaker on resource-definition "
                      f"'{rd.name}' as tiebreaker resource was manually deleted",
                      refs={"RscDfn": rd.name})
        elif tb is not None and tb is not gone and self.nodes[tb.node.upper()].online:
            # no longer needed: deleted, but only while its satellite is online
            self._remove_resource(rd, tb, Reply(C.MASK_DEL, C.MASK_RSC))
            r.add(C.INFO_TIE_BREAKER_DELETING, "Tie breaker marked for deletion",
                  refs={"RscDfn": rd.name, "Node": tb.node})
        return False

    # ==========================================================================================
    # resource definitions

    def h_rds(self, req: Request) -> tuple[int, Any]:
        names = self._names(req, "resource_definitions")
        props = req.query.get("props", [])
        with_vds = req.qbool("with_volume_definitions")
        out = [self._rd_json(rd, with_vds) for rd in self.rds.values()
               if (names is None or rd.key in names) and self._props_match(rd.props, props)]
        return 200, self._page(out, req)

    def h_rd(self, req: Request) -> tuple[int, Any]:
        return 200, self._rd_json(self._rd(req.params["rd"], Reply(0, C.MASK_RSC_DFN)), False)

    def _create_rd(self, name: str, rg: ResourceGroup, props: dict, r: Reply,
                   external_name: str | None = None, port: int | None = None,
                   secret: str | None = None, peer_slots: int | None = None,
                   layer_stack: list[str] | None = None) -> ResourceDef:
        check_name(name, C.FAIL_INVLD_RSC_NAME, "resource", r)
        if name.upper() in self.rds:
            raise r.error(C.FAIL_EXISTS_RSC_DFN,
                          f"A resource definition with the name '{name}' already exists",
                          refs={"RscDfn": name})
        self._validate_props(props, r)
        if port is not None:
            if port in self.ports_used:
                raise r.error(C.FAIL_INVLD_REQUEST, f"TCP port {port} is already in use.")
            self.ports_used.add(port)
        else:
            port = self._alloc_port()
        rd = ResourceDef(name=name, rg=rg.name.upper(), port=port,
                         secret=secret or secrets.token_urlsafe(15)[:20],
                         props=dict(props), external_name=external_name,
                         peer_slots=peer_slots or rg.peer_slots or 7)
        if layer_stack:
            rd.layer_stack = list(layer_stack)
        self.rds[rd.key] = rd
        return rd

    def h_rd_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceDefinitionCreate", sync=True)
        r = Reply(C.MASK_CRT, C.MASK_RSC_DFN)
        rdb = body.get("resource_definition") or {}
        rg = self._rg(rdb.get("resource_group_name") or DEFAULT_RG, r)
        layers = [ld.get("type") for ld in rdb.get("layer_data") or []]
        for lt in layers:
            if lt not in LAYER_TYPES:
                raise r.error(C.FAIL_INVLD_LAYER_STACK, f"Unknown layer type '{lt}'")
        if layers and "STORAGE" not in layers:
            layers.append("STORAGE")
        rd = self._create_rd(rdb.get("name"), rg, rdb.get("props") or {}, r,
                             external_name=rdb.get("external_name"),
                             port=body.get("drbd_port"), secret=body.get("drbd_secret"),
                             peer_slots=body.get("drbd_peer_slots"), layer_stack=layers)
        for vdb in rdb.get("volume_definitions") or []:
            self._create_vd(rd, vdb, None, r)
        r.add(C.CREATED, f"New resource definition '{rd.name}' created.",
              refs={"RscDfn": rd.name})
        return 201, r.entries

    def h_rd_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceDefinitionModify")
        r = Reply(C.MASK_MOD, C.MASK_RSC_DFN)
        rd = self._rd(req.params["rd"], r)
        if body.get("resource_group"):
            rg = self._rg(body["resource_group"], r)
            rd.rg = rg.name.upper()
        for lt in body.get("layer_stack") or []:
            if lt not in LAYER_TYPES:
                raise r.error(C.FAIL_INVLD_LAYER_STACK, f"Unknown layer type '{lt}'")
        self._modify_props(rd.props, body, r)
        # CtrlRscDfnApiCallHandler: a change of the auto-tiebreaker or quorum prop runs the
        # auto helpers.
        touched = set((body.get("override_props") or {}).keys()) | set(
            body.get("delete_props") or [])
        if touched & {self.TB_KEY, "DrbdOptions/Resource/quorum"}:
            self._tb_manage(rd, r)
        if body.get("drbd_peer_slots"):
            rd.peer_slots = body["drbd_peer_slots"]
        if body.get("drbd_port"):
            self.ports_used.discard(rd.port)
            rd.port = body["drbd_port"]
            self.ports_used.add(rd.port)
        r.add(C.MODIFIED, f"Resource definition '{rd.name}' modified.",
              refs={"RscDfn": rd.name})
        self._offline_warnings(rd, r)
        return 200, r.entries

    def _offline_warnings(self, rd: ResourceDef, r: Reply) -> None:
        for res in rd.resources.values():
            if not self.nodes[res.node.upper()].online:
                r.add(C.WARN_NOT_CONNECTED, f"No active connection to satellite '{res.node}'",
                      refs={"Node": res.node, "RscDfn": rd.name})

    def _release_rd_devices(self, rd: ResourceDef) -> None:
        for vd in rd.vds.values():
            if vd.device is not None:
                vd.device.destroy()
                vd.device = None
        for res in rd.resources.values():
            self._drop_own_storage(res)

    def h_rd_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_RSC_DFN)
        name = req.params["rd"]
        rd = self.rds.get(name.upper())
        if rd is None:
            r.add(C.WARN_NOT_FOUND, f"Resource definition '{name}' not found.",
                  refs={"RscDfn": name})
            return 200, r.entries
        if rd.snapshots:
            raise r.error(C.FAIL_EXISTS_SNAPSHOT_DFN,
                          f"Cannot delete resource definition '{rd.name}' because it has "
                          "snapshots.", refs={"RscDfn": rd.name},
                          details="Snapshots: " + ", ".join(s.name for s in
                                                           rd.snapshots.values()))
        busy = [res.node for res in rd.resources.values() if self._in_use(rd, res)]
        if busy:
            raise r.error(C.FAIL_IN_USE, f"Resource '{rd.name}' is still in use.",
                          cause=f"Resource is mounted/in use on node(s) {', '.join(busy)}.",
                          correction="Un-mount resource or demote to Secondary.",
                          refs={"RscDfn": rd.name})
        self._offline_warnings(rd, r)
        for res in list(rd.resources.values()):
            self._remove_resource(rd, res, r)
        for vd in rd.vds.values():
            self.minors_used.discard(vd.minor)
        self._release_rd_devices(rd)
        self.ports_used.discard(rd.port)
        del self.rds[rd.key]
        self.clones.pop(rd.key, None)
        r.add(C.DELETED, f"Resource definition '{rd.name}' deleted.", refs={"RscDfn": rd.name})
        return 200, r.entries

    # ==========================================================================================
    # volume definitions

    def _create_vd(self, rd: ResourceDef, vdb: dict, minor: int | None, r: Reply,
                   seed: Device | Path | None = None) -> VolumeDef:
        nr = vdb.get("volume_number")
        if nr is None:
            nr = 0
            while nr in rd.vds:
                nr += 1
        if nr < 0 or nr > 31999:
            raise r.error(C.FAIL_INVLD_VLM_NR, f"Invalid volume number {nr}")
        if nr in rd.vds:
            raise r.error(C.FAIL_EXISTS_VLM_DFN,
                          f"A volume definition with the number {nr} already exists in "
                          f"resource definition '{rd.name}'.",
                          refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        size = vdb.get("size_kib")
        if not isinstance(size, int) or size <= 0:
            raise r.error(C.FAIL_INVLD_VLM_SIZE, f"Invalid volume size {size}",
                          refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        self._check_vlm_size(rd, size, r)
        # internal props copied from another VD (clone, restore) are made anew below
        props = {k: v for k, v in (vdb.get("props") or {}).items() if k not in VD_INTERNAL_PROPS}
        self._validate_props(props, r)
        if rd.resources:
            for res in rd.diskful():
                pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                if pool is not None and not self._pool_fits(pool, size, {}):
                    raise r.error(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                  f"Not enough free space in '{pool.name}' on '{pool.node}'.")
            for res in rd.diskful():
                pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                if pool is not None:
                    self._consume(pool, size)
        m = self._alloc_minor(minor)
        try:
            dev = self._new_device(m, size, seed=seed)
        except (OSError, OverflowError) as e:  # e.g. a size no file can have (EFBIG)
            self.minors_used.discard(m)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Creating the backing device failed: {e}") from None
        # Internal props LINSTOR puts on every new volume definition: a random DRBD current GI
        # (CtrlVlmDfnApiCallHandler, KEY_DRBD_CURRENT_GI) and the block size the controller
        # derives from the backing storage (auto-block-size; 512 on loop-backed file pools).
        internal = {"DrbdCurrentGi": secrets.token_hex(8).upper()}
        vd = VolumeDef(nr=nr, size_kib=size, minor=m, device=dev,
                       props={**internal, **props},
                       flags=[f for f in vdb.get("flags") or [] if not f.startswith("-")],
                       seed=seed if isinstance(seed, Path) else None)
        rd.vds[nr] = vd
        r.add(C.CREATED, f"New volume definition with number '{nr}' of resource definition "
              f"'{rd.name}' created.", obj=C.MASK_VLM_DFN,
              refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        return vd

    def _check_vlm_size(self, rd: ResourceDef, size_kib: int, r: Reply) -> None:
        """VolumeDefinition.checkVolumeSize: once a DRBD resource is deployed (the VD has DRBD
        layer data), 4 KiB to 2^40 KiB (MetaData.DRBD_MIN_NET_kiB .. DRBD_MAX_kiB); before
        that, or without DRBD, up to Long.MAX_VALUE KiB."""
        drbd = "DRBD" in rd.layer_stack and any(not res.own_minor for res in
                                                rd.resources.values())
        lo, hi, which = (4, 1 << 40, "DRBD") if drbd else (0, (1 << 63) - 1, "non-DRBD")
        if not lo <= size_kib <= hi:
            raise r.error(C.FAIL_INVLD_VLM_SIZE, f"Volume size value {size_kib} is out of range "
                          f"[{lo} - {hi}] for {which}")

    def h_vds(self, req: Request) -> tuple[int, Any]:
        rd = self._rd(req.params["rd"], Reply(0, C.MASK_VLM_DFN))
        return 200, [self._vd_json(rd, v) for v in sorted(rd.vds.values(), key=lambda v: v.nr)]

    def h_vd(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        return 200, self._vd_json(rd, self._vd(rd, int(req.params["vnr"]), r))

    def h_vd_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "VolumeDefinitionCreate")
        r = Reply(C.MASK_CRT, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        self._create_vd(rd, body.get("volume_definition") or {}, body.get("drbd_minor_number"),
                        r)
        if rd.resources:
            self._schedule_attach(req, rd)
        return 200, r.entries

    def h_vd_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "VolumeDefinitionModify")
        r = Reply(C.MASK_MOD, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        vd = self._vd(rd, int(req.params["vnr"]), r)
        refs = {"RscDfn": rd.name, "VlmNr": str(vd.nr)}
        self._modify_props(vd.props, body, r)
        for f in body.get("flags") or []:
            if f.startswith("-"):
                if f[1:] in vd.flags:
                    vd.flags.remove(f[1:])
            elif f not in vd.flags:
                vd.flags.append(f)
        size = body.get("size_kib")
        if size is not None:
            if size == vd.size_kib:
                r.add(C.WARN_VLMDFN_RESIZE_SAME_SIZE,
                      f"Volume definition {vd.nr} of '{rd.name}' already has the size "
                      f"{size} KiB.", refs=refs)
            elif size < vd.size_kib and "DRBD" in rd.layer_stack:
                # CtrlVlmDfnModifyApiCallHandler.ensureShrinkingIsSupported: every layer and
                # provider must support shrinking; of the layers only DRBD does not
                # (DeviceLayerKind), so a STORAGE-only volume shrinks and a DRBD one cannot.
                raise r.error(C.FAIL_INVLD_VLM_SIZE, "Shrinking volumes is not supported by "
                              "layer 'DRBD'. "
                              f"Current size: {vd.size_kib} KiB, requested: {size} KiB.",
                              refs=refs)
            else:
                self._check_vlm_size(rd, size, r)
                bad = [res.node for res in rd.diskful()
                       if self._disk_state(res) != "UpToDate"] if size > vd.size_kib else []
                if bad:
                    raise r.error(C.FAIL_NOT_ALL_UPTODATE,
                                  "Resize not allowed: not all replicas are UpToDate.",
                                  details="Not UpToDate on: " + ", ".join(bad), refs=refs)
                delta = size - vd.size_kib
                for res in rd.diskful():
                    pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                    if pool is not None and not self._pool_fits(pool, delta, {}):
                        raise r.error(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                      f"Not enough free space in storage pool '{pool.name}' "
                                      f"on node '{pool.node}' for the resize.", refs=refs)
                for res in rd.diskful():
                    pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                    if pool is not None:
                        self._consume(pool, delta)
                vd.size_kib = size
                for dev in [vd.device, *(res.own_device.get(vd.nr)
                                         for res in rd.resources.values())]:
                    if dev is not None:
                        dev.resize(size * 1024)
                r.add(C.MODIFIED, f"Volume definition {vd.nr} of '{rd.name}' resized to "
                      f"{size} KiB.", refs=refs)
                self._offline_warnings(rd, r)
        if not r.entries:
            r.add(C.MODIFIED, f"Volume definition {vd.nr} of '{rd.name}' modified.", refs=refs)
        return 200, r.entries

    def h_vd_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        nr = int(req.params["vnr"])
        vd = rd.vds.get(nr)
        if vd is None:
            r.add(C.WARN_NOT_FOUND, f"Volume definition {nr} of '{rd.name}' not found.")
            return 200, r.entries
        if any(self._in_use(rd, res) for res in rd.resources.values()):
            raise r.error(C.FAIL_IN_USE, f"Resource '{rd.name}' is in use.")
        for res in rd.diskful():
            pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
            if pool is not None:
                self._consume(pool, vd.size_kib, -1)
        del rd.vds[nr]
        self.minors_used.discard(vd.minor)
        if vd.device is not None:
            vd.device.destroy()
        r.add(C.DELETED, f"Volume definition {nr} of '{rd.name}' deleted.",
              refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        return 200, r.entries

    # ==========================================================================================
    # resources

    def _res(self, rd: ResourceDef, node: str, r: Reply) -> Resource:
        res = rd.resources.get(node.upper())
        if res is None:
            raise r.error(C.FAIL_NOT_FOUND_RSC,
                          f"Resource '{rd.name}' on node '{node}' not found.",
                          refs={"RscDfn": rd.name, "Node": node})
        return res

    def h_resources(self, req: Request) -> tuple[int, Any]:
        rd = self._rd(req.params["rd"], Reply(0, C.MASK_RSC))
        names = self._names(req, "nodes")
        out = [self._resource_json(rd, res, False) for res in rd.resources.values()
               if names is None or res.node.upper() in names]
        return 200, self._page(out, req)

    def h_resource(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        return 200, self._resource_json(rd, self._res(rd, req.params["node"], r), False)

    def h_volumes(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_VLM)
        rd = self._rd(req.params["rd"], r)
        res = self._res(rd, req.params["node"], r)
        self._ensure_devices(rd)
        return 200, [self._volume_json(rd, res, vd)
                     for vd in sorted(rd.vds.values(), key=lambda v: v.nr)]

    def h_volume(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_VLM)
        rd = self._rd(req.params["rd"], r)
        res = self._res(rd, req.params["node"], r)
        nr = int(req.params["vnr"])
        vd = rd.vds.get(nr)
        if vd is None:
            raise r.error(C.FAIL_NOT_FOUND_VLM,
                          f"Volume {nr} of resource '{rd.name}' on '{res.node}' not found.",
                          refs={"RscDfn": rd.name, "Node": res.node, "VlmNr": str(nr)})
        self._ensure_devices(rd)
        return 200, self._volume_json(rd, res, vd)

    def _create_one_resource(self, rd: ResourceDef, node_name: str, body: dict,
                             r: Reply) -> None:
        # An unknown node is a bare FAIL_NOT_FOUND_NODE (CtrlApiDataLoader.loadNode's
        # ApiRcException carries no operation or object mask), as LINSTOR 1.33.3 answers.
        node = self._node(node_name, Reply())
        cur = rd.resources.get(node.name.upper())
        if cur is not None and "TIE_BREAKER" in cur.flags:
            # CtrlRscCrtApiHelper.createResourceDb: creating a resource where the tiebreaker
            # is takes it over: a diskless request drops the TIE_BREAKER flag (a wanted
            # diskless now), a diskful one toggles it into a diskful replica.
            rb = body.get("resource") or {}
            flags = list(rb.get("flags") or [])
            if "DISKLESS" not in flags and "DRBD_DISKLESS" not in flags:
                spn = ((rb.get("props") or {}).get("StorPoolName")
                       or rd.props.get("StorPoolName") or DEFAULT_POOL)
                pool = node.pools.get(spn.upper())
                if pool is None or pool.kind == "DISKLESS":
                    raise r.error(C.FAIL_NOT_FOUND_STOR_POOL,
                                  f"Storage pool '{spn}' on node '{node.name}' not found.",
                                  refs={"Node": node.name, "StorPoolDfn": spn})
                self._make_diskful(rd, cur, pool)
            else:
                cur.flags.remove("TIE_BREAKER")
            r.add(C.MODIFIED, f"Removed TIE_BREAKER flag from resource '{rd.name}' on "
                  f"'{node.name}'", refs={"RscDfn": rd.name, "Node": node.name})
            return
        if node.name.upper() in rd.resources:
            # CtrlRscCrtApiHelper.createResourceDb (since 1.11.0): LinStorDataAlreadyExists
            # becomes an ApiRcException carrying INFO_RSC_ALREADY_EXISTS, answered 201 (§9 C4).
            raise r.error(C.INFO_RSC_ALREADY_EXISTS,
                          f"A resource '{rd.name}' on node '{node.name}' already exists.",
                          status=201)
        rb = body.get("resource") or {}
        props = dict(rb.get("props") or {})
        self._validate_props(props, r)
        flags = list(rb.get("flags") or [])
        layer_list = body.get("layer_list") or []
        for lt in layer_list:
            if lt not in LAYER_TYPES:
                raise r.error(C.FAIL_INVLD_LAYER_STACK, f"Unknown layer type '{lt}'")
        if "DISKLESS" in flags or "DRBD_DISKLESS" in flags:
            if "DISKLESS" not in flags:
                flags.insert(0, "DISKLESS")
            if ("DRBD" in layer_list or not layer_list) and "DRBD_DISKLESS" not in flags:
                flags.append("DRBD_DISKLESS")
            pool = None
        else:
            spn = (props.get("StorPoolName") or rd.props.get("StorPoolName")
                   or self.rgs.get(rd.rg, ResourceGroup("")).props.get("StorPoolName")
                   or DEFAULT_POOL)
            pool = node.pools.get(spn.upper())
            if pool is None:
                raise r.error(C.FAIL_NOT_FOUND_STOR_POOL,
                              f"Storage pool '{spn}' on node '{node.name}' not found.",
                              refs={"Node": node.name, "StorPoolDfn": spn})
            if pool.kind == "DISKLESS":
                flags = ["DISKLESS", "DRBD_DISKLESS"]
            elif not self._pool_fits(pool, self._need_kib(rd), {}):
                raise r.error(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                              f"Not enough free space in '{pool.name}' on '{node.name}'.")
        props.pop("StorPoolName", None)
        res = self._add_resource(rd, node, pool, r, flags=flags)
        res.props.update(props)
        if body.get("drbd_node_id") is not None:
            res.node_id = body["drbd_node_id"]

    def h_resources_create(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        try:
            body = json.loads(req.raw_body or b"null")
        except ValueError as e:
            raise self._parse_error(str(e), False) from None
        if not isinstance(body, list):
            raise self._parse_error("Expected a JSON array of ResourceCreate", False)
        for item in body:
            try:
                check_body("ResourceCreate", item, self.rest_version)
            except ParseError as e:
                raise self._parse_error(str(e), False) from None
        rd = self._rd(req.params["rd"], r)
        for item in body:
            node = (item.get("resource") or {}).get("node_name")
            if not node:
                raise r.error(C.FAIL_INVLD_NODE_NAME, "Missing node_name in ResourceCreate")
            self._create_one_resource(rd, node, item, r)
        self._tb_manage(rd, r)
        self._schedule_attach(req, rd)
        return 201, r.entries

    def h_resource_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceCreate", default={})
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        self._create_one_resource(rd, req.params["node"], body, r)
        self._tb_manage(rd, r)
        self._schedule_attach(req, rd)
        return 201, r.entries

    def h_resource_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceModify")
        r = Reply(C.MASK_MOD, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        res = self._res(rd, req.params["node"], r)
        self._modify_props(res.props, body, r)
        if body.get("drbd_tiebreaker") is True and res.diskless and "TIE_BREAKER" not in res.flags:
            res.flags.append("TIE_BREAKER")
        if body.get("drbd_tiebreaker") is False and "TIE_BREAKER" in res.flags:
            res.flags.remove("TIE_BREAKER")
        r.add(C.MODIFIED, f"Resource '{rd.name}' on node '{res.node}' modified.",
              refs={"RscDfn": rd.name, "Node": res.node})
        return 200, r.entries

    def _remove_resource(self, rd: ResourceDef, res: Resource, r: Reply) -> None:
        pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
        if pool is not None and not res.diskless:
            self._consume(pool, self._need_kib(rd), -1)
        del rd.resources[res.node.upper()]
        first = not res.own_minor
        self._drop_own_storage(res)
        if self._storage_only(rd) and not res.diskless and first and rd.resources:
            # the first replica's storage is gone with it; the VD's device starts empty for
            # whichever replica is placed next without storage of its own
            for vd in rd.vds.values():
                if vd.device is not None:
                    vd.device.destroy()
                    vd.device = self._new_device(vd.minor, vd.size_kib)
        r.add(C.DELETED, f"Resource '{rd.name}' on node '{res.node}' deleted.",
              op=C.MASK_DEL, obj=C.MASK_RSC, refs={"RscDfn": rd.name, "Node": res.node})

    def _drop_own_storage(self, res: Resource) -> None:
        for nr, dev in list(res.own_device.items()):
            if dev is not None:
                dev.destroy()
            self.minors_used.discard(res.own_minor.pop(nr, -1))
            del res.own_device[nr]

    def h_resource_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_RSC)
        name, node = req.params["rd"], req.params["node"]
        rd = self.rds.get(name.upper())
        res = rd.resources.get(node.upper()) if rd is not None else None
        if rd is None or res is None:
            r.add(C.WARN_NOT_FOUND, f"Resource '{name}' on node '{node}' not found.",
                  refs={"RscDfn": name, "Node": node})
            return 200, r.entries
        refs = {"RscDfn": rd.name, "Node": res.node}
        if self._in_use(rd, res):
            raise r.error(C.FAIL_IN_USE, f"Resource '{rd.name}' on node '{res.node}' is still "
                          "in use.", cause="Resource is mounted/in use.",
                          correction="Un-mount resource or demote to Secondary.", refs=refs)
        if not res.diskless:
            others = [o for o in rd.diskful() if o is not res]
            diskless = [o for o in rd.resources.values() if o.diskless and o is not res
                        and "TIE_BREAKER" not in o.flags]
            if not others and diskless:
                raise r.error(C.FAIL_IN_USE,
                              f"Last resource of '{rd.name}' with a disk still has diskless "
                              "resources attached.",
                              details="Diskless on: " + ", ".join(o.node for o in diskless),
                              refs=refs)
        if not self.nodes[res.node.upper()].online:
            r.add(C.WARN_NOT_CONNECTED, f"No active connection to satellite '{res.node}'",
                  refs=refs)
        # CtrlRscDeleteApiCallHandler: a DRBD resource is flagged DRBD_DELETE, then the auto
        # helpers run (with keep_tiebreaker); the tiebreaker helper may take it over instead.
        if self._tb_manage(rd, r, gone=res, keep=req.qbool("keep_tiebreaker")):
            return 200, r.entries
        self._remove_resource(rd, res, r)
        if not rd.resources:
            # the data of the last replica is gone; a new placement starts empty
            for vd in rd.vds.values():
                if vd.device is not None:
                    vd.device.destroy()
                    vd.device = self._new_device(vd.minor, vd.size_kib)
        return 200, r.entries

    def h_make_available(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceMakeAvailable", default={})
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        node = self._node(req.params["node"], r)
        refs = {"RscDfn": rd.name, "Node": node.name}
        diskful = bool(body.get("diskful"))
        res = rd.resources.get(node.name.upper())
        if res is not None:
            if "TIE_BREAKER" in res.flags:
                res.flags.remove("TIE_BREAKER")
                if not diskful:
                    r.add(C.MODIFIED, f"Tiebreaker resource '{rd.name}' on '{node.name}' "
                          "converted into a diskless resource.", op=C.MASK_MOD, refs=refs)
            if diskful and res.diskless:
                pools = self._candidates(rd, self._merged_filter(
                    rd, self.rgs.get(rd.rg), {"node_name_list": [node.name]}),
                    self._need_kib(rd), set())
                if not pools:
                    raise r.error(C.FAIL_NOT_ENOUGH_NODES,
                                  f"No storage pool on '{node.name}' can hold '{rd.name}'.",
                                  refs=refs)
                self._make_diskful(rd, res, pools[0][1])
                r.add(C.MODIFIED, f"Resource '{rd.name}' on '{node.name}' toggled to diskful.",
                      op=C.MASK_MOD, refs=refs)
            elif not r.entries:
                r.add(0, "Resource already deployed as requested", refs=refs)
        else:
            no_disk = not rd.diskful()
            # Without a DRBD layer there is no diskless client: make-available places a diskful
            # resource with storage of its own (CtrlRscMakeAvailableApiCallHandler, §9 C6).
            if diskful or no_disk or self._storage_only(rd):
                sf = self._merged_filter(rd, self.rgs.get(rd.rg), None)
                sf = {k: v for k, v in sf.items()
                      if k in ("storage_pool", "storage_pool_list", "provider_list")}
                sf["node_name_list"] = [node.name]
                cands = self._candidates(rd, sf, self._need_kib(rd), set()) if node.online \
                    else []
                if not cands:
                    # placement on an offline node: use its default pool
                    p = node.pools.get((sf.get("storage_pool_list") or [DEFAULT_POOL])[0].upper())
                    if p is None or node.online:
                        raise r.error(C.FAIL_NOT_ENOUGH_NODES,
                                      f"Not enough available nodes for '{rd.name}' on "
                                      f"'{node.name}'.", refs=refs)
                    cands = [(node, p)]
                self._add_resource(rd, node, cands[0][1], r)
            else:
                self._add_resource(rd, node, None, r, flags=["DISKLESS", "DRBD_DISKLESS"])
        self._tb_manage(rd, r)
        self._schedule_attach(req, rd)
        return 200, r.entries

    def _toggle(self, req: Request, diskful: bool, pool_name: str | None) -> tuple[int, Any]:
        r = Reply(C.MASK_MOD, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        res = self._res(rd, req.params["node"], r)
        node = self.nodes[res.node.upper()]
        refs = {"RscDfn": rd.name, "Node": res.node}
        if diskful:
            if not res.diskless:
                r.add(C.WARN_RSC_ALREADY_HAS_DISK, "Resource already has a disk.", refs=refs)
                return 200, r.entries
            spn = pool_name or rd.props.get("StorPoolName") or DEFAULT_POOL
            pool = node.pools.get(spn.upper())
            if pool is None or pool.kind == "DISKLESS":
                raise r.error(C.FAIL_NOT_FOUND_STOR_POOL, f"Storage pool '{spn}' not found.",
                              refs=refs)
            if not self._pool_fits(pool, self._need_kib(rd), {}):
                raise r.error(C.FAIL_NOT_ENOUGH_FREE_SPACE, "Not enough free space.", refs=refs)
            self._make_diskful(rd, res, pool)
        else:
            if res.diskless:
                r.add(C.WARN_RSC_ALREADY_DISKLESS, "Resource already diskless.", refs=refs)
                return 200, r.entries
            if self._in_use(rd, res) and len(rd.diskful()) == 1:
                raise r.error(C.FAIL_IN_USE, "Cannot remove the last disk while in use.",
                              refs=refs)
            self._make_diskless(rd, res, pool_name)
        r.add(C.MODIFIED, f"Resource '{rd.name}' on '{res.node}' toggled.", refs=refs)
        self._tb_manage(rd, r)
        return 200, r.entries

    def h_toggle_diskless(self, req: Request) -> tuple[int, Any]:
        return self._toggle(req, False, req.params.get("sp"))

    def h_toggle_diskful(self, req: Request) -> tuple[int, Any]:
        self._body(req, "ToggleDiskDiskful", default={})
        return self._toggle(req, True, req.params.get("sp"))

    def h_toggle_unified(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ToggleDiskRequest")
        op = body.get("operation")
        if op not in ("INTO_DRBD_DISKFUL", "INTO_DRBD_CLIENT", "INTO_DRBD_DISKLESS"):
            raise self._parse_error(f"Invalid operation {op!r}", False)
        return self._toggle(req, op == "INTO_DRBD_DISKFUL", body.get("storage_pool"))

    def h_autoplace(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "AutoPlaceRequest")
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        sf = self._check_filter(body.get("select_filter") or {}, r)
        merged = self._merged_filter(rd, self.rgs.get(rd.rg), sf)
        self._autoplace(rd, merged, r, req, bool(body.get("diskless_on_remaining")))
        return 201, r.entries

    def h_view_resources(self, req: Request) -> tuple[int, Any]:
        nodes = self._names(req, "nodes")
        rsc = self._names(req, "resources")
        pools = self._names(req, "storage_pools")
        props = req.query.get("props", [])
        out = []
        for rd in self.rds.values():
            if rsc is not None and rd.key not in rsc:
                continue
            self._ensure_devices(rd)
            for res in rd.resources.values():
                if nodes is not None and res.node.upper() not in nodes:
                    continue
                if pools is not None and res.pool.upper() not in pools:
                    continue
                if not self._props_match(res.props, props):
                    continue
                out.append(self._resource_json(rd, res, True))
        return 200, self._page(out, req)

    # ==========================================================================================
    # spawn / query-size-info

    def h_spawn(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ResourceGroupSpawn")
        # CtrlRscGrpApiCallHandler.spawn: ResponseContext(makeRegisterOperation, MASK_RSC_GRP).
        r = Reply(C.MASK_CRT, C.MASK_RSC_GRP)
        rg = self._rg(req.params["rg"], r)
        name = body.get("resource_definition_name")
        sizes = list(body.get("volume_sizes") or [])
        for s in sizes:
            if not isinstance(s, int) or isinstance(s, bool):
                raise self._parse_error("volume_sizes must be integers", False)
        partial = bool(body.get("partial"))
        vgs = sorted(rg.vgs.values(), key=lambda v: v.nr)
        if vgs:
            if len(sizes) > len(vgs) or (len(sizes) != len(vgs) and not partial):
                raise r.error(C.FAIL_INVLD_VLM_SIZES,
                              f"Resource group '{rg.name}' has {len(vgs)} volume group(s) but "
                              f"{len(sizes)} size(s) were given.", refs={"RscGrp": rg.name})
            vd_specs = [(vgs[i].nr, s, vgs[i].props) for i, s in enumerate(sizes)]
        else:
            if sizes:
                r.add(C.MASK_INFO, f"Resource group '{rg.name}' has no volume groups, "
                      "spawning in partial mode.", refs={"RscGrp": rg.name})
            vd_specs = [(i, s, {}) for i, s in enumerate(sizes)]
        rd_props = dict(body.get("resource_definition_props") or {})
        sf = self._check_filter(body.get("select_filter") or {}, r)
        merged = self._merged_filter(None, rg, sf)
        rd = self._create_rd(name, rg, rd_props, r,
                             external_name=body.get("resource_definition_external_name"),
                             peer_slots=body.get("peer_slots"),
                             layer_stack=merged.get("layer_stack"))
        try:
            r.add(C.CREATED, f"New resource definition '{rd.name}' created.",
                  refs={"RscDfn": rd.name})
            for nr, size, props in vd_specs:
                self._create_vd(rd, {"volume_number": nr, "size_kib": size,
                                     "props": dict(props)}, None, r)
            if merged.get("place_count") and not body.get("definitions_only"):
                self._autoplace(rd, merged, r, req)
            else:
                r.add(C.INFO_NO_RSC_SPAWNED,
                      f"Resource definition '{rd.name}' created but no resources deployed.",
                      refs={"RscDfn": rd.name})
        except BaseException:
            # all or nothing: no RD left behind
            for vd in rd.vds.values():
                self.minors_used.discard(vd.minor)
            self._release_rd_devices(rd)
            self.ports_used.discard(rd.port)
            self.rds.pop(rd.key, None)
            raise
        return 201, r.entries

    def h_query_size_info(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "QuerySizeInfoRequest", default={})
        r = Reply(0, C.MASK_RSC_GRP)
        rg = self._rg(req.params["rg"], r)
        sf = self._check_filter(body.get("select_filter") or {}, r)
        merged = self._merged_filter(None, rg, sf)
        count = merged.get("place_count") or 2
        cands = self._candidates(None, merged, 0, set())
        sel = self._select(cands, count, merged, [])
        if not sel:
            info: dict[str, Any] = {"max_vlm_size_in_kib": 0}
            rep = [make_rc(C.FAIL_NOT_ENOUGH_NODES, "Not enough available nodes",
                           obj=C.MASK_RSC_GRP, refs={"RscGrp": rg.name})]
            return 200, prune({"space_info": info, "reports": rep})
        thin = any(p.kind in THIN_PROVIDERS for _n, p in sel)
        info = {
            "max_vlm_size_in_kib": min(p.free_kib for _n, p in sel),
            "available_size_in_kib": sum(p.free_kib for _n, p in sel),
            "capacity_in_kib": sum(p.total_kib for _n, p in sel),
            "next_spawn_result": [{"node_name": n.name, "stor_pool_name": p.name}
                                  for n, p in sel],
        }
        if thin:
            info["default_max_oversubscription_ratio"] = 20.0
            info["max_oversubscription_ratio"] = 20.0
            info["max_free_capacity_oversubscription_ratio"] = 20.0
            info["max_total_capacity_oversubscription_ratio"] = 20.0
        return 200, prune({"space_info": info})

    # ==========================================================================================
    # snapshots

    def reap(self) -> None:
        """Finish the snapshot deletions whose satellites are done (see h_snapshot_delete)."""
        now = time.monotonic()
        for rd in self.rds.values():
            for key, snap in list(rd.snapshots.items()):
                if snap.delete_at is not None and snap.delete_at <= now:
                    del rd.snapshots[key]
                    self._drop_snapshot_files(snap)

    def _take_snapshot(self, rd: ResourceDef, sb: dict, r: Reply) -> Snapshot:
        name = check_name(sb.get("name"), C.FAIL_INVLD_SNAPSHOT_NAME, "snapshot", r)
        refs = {"RscDfn": rd.name, "Snapshot": name}
        if name.upper() in rd.snapshots:
            raise r.error(C.FAIL_EXISTS_SNAPSHOT_DFN,
                          f"A snapshot definition with the name '{name}' already exists in "
                          f"resource definition '{rd.name}'.", refs=refs)
        diskful = rd.diskful()
        if sb.get("nodes"):
            want = {n.upper() for n in sb["nodes"]}
            for n in sb["nodes"]:
                self._node(n, r)
                if n.upper() not in rd.resources or rd.resources[n.upper()].diskless:
                    raise r.error(C.FAIL_NOT_FOUND_RSC,
                                  f"Resource '{rd.name}' has no disk on node '{n}'.", refs=refs)
            diskful = [res for res in diskful if res.node.upper() in want]
        if not diskful:
            raise r.error(C.FAIL_NOT_ENOUGH_NODES,
                          f"Resource '{rd.name}' has no diskful resources to snapshot.",
                          refs=refs)
        for res in diskful:
            pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
            if pool is None or pool.kind not in SNAPSHOT_PROVIDERS:
                raise r.error(C.FAIL_SNAPSHOTS_NOT_SUPPORTED,
                              f"Storage pool '{res.pool}' on node '{res.node}' "
                              f"(provider {pool.kind if pool else '?'}) does not support "
                              "snapshots.", refs=refs)
        offline = [res.node for res in diskful if not self.nodes[res.node.upper()].online]
        if offline:
            raise r.error(C.FAIL_NOT_CONNECTED,
                          f"Cannot create snapshot: no connection to {', '.join(offline)}.",
                          refs=refs)
        # rest/v1/Snapshots.createSnapshot and Actions (snapshot/multi) read the new snapshot's
        # props from snapshot_definition_props only; "props", its deprecated spelling, is ignored
        user_props = dict(sb.get("snapshot_definition_props") or {})
        self._validate_props(user_props, r)
        ts = now_ms()
        # SnapshotDefinitionControllerFactory: SequenceNumber = the RD's highest + 1; and the
        # backup-shipping bookkeeping key, empty (LINSTOR 1.33.3).
        seq = 1 + max((int(x.props.get("SequenceNumber", "0") or 0)
                       for x in rd.snapshots.values()), default=0)
        sd_props = {**user_props, "SequenceNumber": str(seq),
                    "BackupShipping/BackupNodeIdsToReset": ""}
        return Snapshot(name=name, rd_name=rd.name, nodes=[res.node for res in diskful],
                        pools={res.node.upper(): res.pool for res in diskful},
                        sizes={vd.nr: vd.size_kib for vd in rd.vds.values()}, files={},
                        timestamps={res.node.upper(): ts for res in diskful},
                        vd_props={vd.nr: dict(vd.props) for vd in rd.vds.values()},
                        props=sd_props, rd_props=dict(rd.props),
                        flags=["FAILED_DEPLOYMENT"] if self.snapshot_fail else ["SUCCESSFUL"])

    def _capture(self, rd: ResourceDef, snap: Snapshot) -> None:
        for vd in rd.vds.values():
            if vd.device is not None:
                snap.files[vd.nr] = self.devices.snapshot_file(
                    vd.device, f"{rd.name}-{snap.name}-{vd.nr}")

    def _drop_snapshot_files(self, snap: Snapshot) -> None:
        for p in snap.files.values():
            self.devices.remove_file(p)
        snap.files.clear()

    def h_snapshot_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "Snapshot")
        r = Reply(C.MASK_CRT, C.MASK_SNAPSHOT)
        rd = self._rd(req.params["rd"], r)
        snap = self._take_snapshot(rd, body, r)
        try:
            self._capture(rd, snap)
        except OSError as e:
            self._drop_snapshot_files(snap)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Snapshot copy failed: {e}") from None
        rd.snapshots[snap.name.upper()] = snap
        r.add(C.CREATED, f"New snapshot '{snap.name}' of resource '{rd.name}' registered.",
              refs={"RscDfn": rd.name, "Snapshot": snap.name})
        r.add(C.CREATED, f"Snapshot '{snap.name}' of resource '{rd.name}' successfully "
              "taken.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 201, r.entries

    def h_snapshot_multi(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "CreateMultiSnapshotRequest")
        r = Reply(C.MASK_CRT, C.MASK_SNAPSHOT)
        items = body.get("snapshots") or []
        if not items:
            raise r.error(C.FAIL_INVLD_REQUEST, "No snapshots requested.")
        planned: list[tuple[ResourceDef, Snapshot]] = []
        seen = set()
        for sb in items:
            rd = self._rd(sb.get("resource_name") or "", r)
            key = (rd.key, str(sb.get("name", "")).upper())
            if key in seen:
                raise r.error(C.FAIL_EXISTS_SNAPSHOT_DFN,
                              f"Snapshot '{sb.get('name')}' requested twice for '{rd.name}'.")
            seen.add(key)
            planned.append((rd, self._take_snapshot(rd, sb, r)))
        try:
            for rd, snap in planned:
                self._capture(rd, snap)
        except OSError as e:
            for _rd, snap in planned:
                self._drop_snapshot_files(snap)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Snapshot copy failed: {e}") from None
        for rd, snap in planned:
            rd.snapshots[snap.name.upper()] = snap
            r.add(C.CREATED, f"Snapshot '{snap.name}' of resource '{rd.name}' successfully "
                  "taken.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 201, r.entries

    def h_snapshots(self, req: Request) -> tuple[int, Any]:
        rd = self._rd(req.params["rd"], Reply(0, C.MASK_SNAPSHOT))
        return 200, self._page([self._snapshot_json(rd, s) for s in rd.snapshots.values()], req)

    def h_snapshot(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_SNAPSHOT)
        rd = self._rd(req.params["rd"], r)
        return 200, self._snapshot_json(rd, self._snap(rd, req.params["snap"], r))

    def h_view_snapshots(self, req: Request) -> tuple[int, Any]:
        # View.listSnapshots takes only nodes, resources, limit and offset: any other query
        # parameter (snapshots= included) is ignored and every snapshot comes back (C8).
        nodes = self._names(req, "nodes")
        rsc = self._names(req, "resources")
        out = []
        for rd in self.rds.values():
            if rsc is not None and rd.key not in rsc:
                continue
            for s in rd.snapshots.values():
                if nodes is not None and not any(n.upper() in nodes for n in s.nodes):
                    continue
                out.append(self._snapshot_json(rd, s))
        return 200, self._page(out, req)

    def h_snapshot_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_SNAPSHOT)
        name, sname = req.params["rd"], req.params["snap"]
        rd = self.rds.get(name.upper())
        snap = rd.snapshots.get(sname.upper()) if rd is not None else None
        refs = {"RscDfn": name, "Snapshot": sname}
        if rd is None or snap is None:
            r.add(C.WARN_NOT_FOUND, f"Snapshot '{sname}' of resource '{name}' not found.",
                  refs=refs)
            return 200, r.entries
        only = self._names(req, "nodes")
        if only is not None:
            snap.nodes = [n for n in snap.nodes if n.upper() not in only]
        if only is None or not snap.nodes:
            if self.snapshot_delete_seconds > 0:
                # CtrlSnapshotDeleteApiCallHandler flags the snapshot definition DELETE and
                # removes it once the satellites have deleted their parts: until then it is
                # listed (flag DELETE) and its name is taken (FAIL_EXISTS_SNAPSHOT_DFN).
                if "DELETE" not in snap.flags:
                    snap.flags.append("DELETE")
                if snap.delete_at is None:
                    snap.delete_at = time.monotonic() + self.snapshot_delete_seconds
            else:
                del rd.snapshots[snap.name.upper()]
                self._drop_snapshot_files(snap)
        r.add(C.DELETED, f"Snapshot '{snap.name}' of resource '{rd.name}' deleted.",
              refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 200, r.entries

    def h_restore_vd(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "SnapshotRestore")
        r = Reply(C.MASK_CRT, C.MASK_VLM_DFN)
        src = self._rd(req.params["rd"], r)
        snap = self._snap(src, req.params["snap"], r)
        target = self._rd(body.get("to_resource") or "", r)
        if target.vds:
            raise r.error(C.FAIL_EXISTS_VLM_DFN,
                          f"Resource definition '{target.name}' already has volume "
                          "definitions.", refs={"RscDfn": target.name})
        for nr, size in sorted(snap.sizes.items()):
            self._create_vd(target, {"volume_number": nr, "size_kib": size}, None, r,
                            seed=snap.files.get(nr))
        return 200, r.entries

    def h_restore_resource(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "SnapshotRestore")
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        src = self._rd(req.params["rd"], r)
        snap = self._snap(src, req.params["snap"], r)
        target = self._rd(body.get("to_resource") or "", r)
        refs = {"RscDfn": target.name, "Snapshot": snap.name}
        if target.resources:
            raise r.error(C.FAIL_EXISTS_RSC, f"Resource definition '{target.name}' already "
                          "has resources.", refs=refs)
        if not target.vds:
            r.add(C.WARN_NOT_FOUND, "No volumes to restore.", refs=refs)
            return 200, r.entries
        for nr, vd in target.vds.items():
            if nr not in snap.sizes:
                raise r.error(C.FAIL_NOT_FOUND_SNAPSHOT_VLM_DFN,
                              f"Snapshot '{snap.name}' has no volume {nr}.", refs=refs)
            # LINSTOR restores only into a volume definition of exactly the snapshot's size,
            # smaller or larger (CtrlSnapshotRestoreApiCallHandler.restoreOnNode: snapshot size
            # != required size -> FAIL_INVLD_VLM_SIZE); grow after the restore instead.
            if vd.size_kib != snap.sizes[nr]:
                raise r.error(C.FAIL_INVLD_VLM_SIZE,
                              f"Snapshot size does not match for volume number {nr}; snapshot "
                              f"size: {snap.sizes[nr]}KiB, required size: {vd.size_kib}KiB", refs=refs)
        nodes = body.get("nodes") or list(snap.nodes)
        rename = body.get("stor_pool_rename") or {}
        plan = []
        for n in nodes:
            node = self._node(n, r)
            src_pool = snap.pools.get(node.name.upper())
            if src_pool is None:
                raise r.error(C.FAIL_NOT_FOUND_SNAPSHOT,
                              f"Snapshot '{snap.name}' does not exist on node '{node.name}'.",
                              refs=refs)
            pname = rename.get(src_pool, src_pool)
            pool = node.pools.get(pname.upper())
            if pool is None:
                raise r.error(C.FAIL_NOT_FOUND_STOR_POOL,
                              f"Storage pool '{pname}' on node '{node.name}' not found.",
                              refs=refs)
            plan.append((node, pool))
        # make sure the target's data is the snapshot's (VDs may have been created by hand)
        for nr, vd in target.vds.items():
            f = snap.files.get(nr)
            if f is not None and vd.device is not None:
                if vd.seed != f:
                    vd.device.destroy()
                    vd.device = self._new_device(vd.minor, vd.size_kib, seed=f)
                    vd.seed = f
        # CtrlSnapshotRestoreApiCallHandler: the snapshot's copy of its RD's props goes onto the
        # target RD (ctrlPropsHelper.copy: a union, the snapshot's values win)
        target.props.update(snap.rd_props)
        for node, pool in plan:
            self._add_resource(target, node, pool, r)
        # LINSTOR 1.33.3 registers a LINSTOR remote for itself on the first restore
        # (CopySnapsHelper.LOCAL_REMOTE, http://localhost:3370)
        self.linstor_remotes.setdefault(LOCAL_REMOTE, {
            "remote_name": LOCAL_REMOTE, "url": "http://localhost:3370"})
        # CtrlSnapshotRestoreApiCallHandler runs the auto helpers on the target RD
        self._tb_manage(target, r)
        self._schedule_attach(req, target)
        return 200, r.entries

    # ==========================================================================================
    # clone

    def h_clone(self, req: Request) -> tuple[int, Any]:
        src_name = req.params["rd"]
        r = Reply(C.MASK_CRT, C.MASK_RSC_DFN)
        try:
            body = json.loads(req.raw_body or b"{}")
            check_body("ResourceDefinitionCloneRequest", body, self.rest_version)
        except (ValueError, ParseError) as e:
            raise self._parse_error(str(e), False) from None
        dst_name = body.get("name") or ""
        started = {"location": f"/v1/resource-definitions/{src_name}/clone/{dst_name}",
                   "source_name": src_name, "clone_name": dst_name}
        try:
            src = self._rd(src_name, r)
            if not dst_name and body.get("external_name"):
                dst_name = re.sub(r"[^A-Za-z0-9_-]", "_", body["external_name"])[:48]
                started["clone_name"] = dst_name
                started["location"] = f"/v1/resource-definitions/{src.name}/clone/{dst_name}"
            started["source_name"] = src.name
            rg = self._rg(body.get("resource_group") or self.rgs[src.rg].name, r)
            props = dict(src.props)
            for k in body.get("delete_props") or []:
                props.pop(k, None)
            for ns in body.get("delete_namespaces") or []:
                for k in [k for k in props if k.startswith(ns.rstrip("/") + "/")]:
                    del props[k]
            props.update(body.get("override_props") or {})
            dst = self._create_rd(dst_name, rg, props, r, external_name=body.get("external_name"))
            try:
                dst.flags.append("CLONING")
                for vd in sorted(src.vds.values(), key=lambda v: v.nr):
                    self._create_vd(dst, {"volume_number": vd.nr, "size_kib": vd.size_kib,
                                          "props": dict(vd.props)}, None, r, seed=vd.device)
                for res in src.diskful():
                    node = self.nodes[res.node.upper()]
                    pool = node.pools.get(res.pool.upper())
                    # CtrlRscDfnApiCallHandler.cloneRscDfn: every diskful clone volume's pool
                    # must support cloning, else the whole clone is rolled back with
                    # FAIL_INVLD_PROVIDER "Clone source contains unsupported storage pools".
                    if pool is None or pool.kind not in CLONE_PROVIDERS:
                        # as answered by LINSTOR 1.33.3: the clone's RD in details and
                        # obj_refs, and an error report (the ApiRcException is logged as one)
                        raise r.error(C.FAIL_INVLD_PROVIDER,
                                      "Clone source contains unsupported storage pools",
                                      details=f"Resource definition: {dst.name}",
                                      refs={"RscDfn": dst.name}, report=True)
                    self._add_resource(dst, node, pool, r)
            except (ApiError, OSError):
                self._release_rd_devices(dst)
                for vd in dst.vds.values():
                    self.minors_used.discard(vd.minor)
                self.ports_used.discard(dst.port)
                self.rds.pop(dst.key, None)
                raise
        except ApiError as e:
            started["messages"] = e.entries
            status = 404 if C.http_status(e.entries, 500) == 404 else 500
            raise ApiError(e.entries, status=status, body=prune(started)) from None
        self.clones[dst.key] = Clone(src=src.key, dst=dst.key, polls_left=self.clone_polls,
                                     fail=self.clone_fail)
        if self.clone_polls <= 0:
            self._finish_clone(self.clones[dst.key])
        self._schedule_attach(req, dst)
        r.add(C.CREATED, f"Clone of '{src.name}' into '{dst.name}' started.",
              refs={"RscDfn": dst.name})
        started["messages"] = r.entries
        return 201, prune(started)

    def _finish_clone(self, cl: Clone) -> None:
        rd = self.rds.get(cl.dst)
        if rd is None:
            return
        if "CLONING" in rd.flags:
            rd.flags.remove("CLONING")
            if cl.fail and "FAILED" not in rd.flags:
                rd.flags.append("FAILED")

    def h_clone_status(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_RSC_DFN)
        self._rd(req.params["rd"], r)
        dst = self._rd(req.params["dst"], r)
        cl = self.clones.get(dst.key)
        if cl is None:
            return 200, {"status": "COMPLETE"}
        if cl.polls_left > 0:
            cl.polls_left -= 1
            return 200, {"status": "CLONING"}
        self._finish_clone(cl)
        return 200, {"status": "FAILED" if cl.fail else "COMPLETE"}

    def h_sync_status(self, req: Request) -> tuple[int, Any]:
        rd = self._rd(req.params["rd"], Reply(0, C.MASK_RSC_DFN))
        ok = all(self._disk_state(res) in ("UpToDate", "Diskless")
                 for res in rd.resources.values())
        return 200, {"synced_on_all": ok}

    # remotes and backups: sim/backup_routes.py (BackupRoutes)

    # ==========================================================================================
    # key-value store

    def h_kvs_list(self, req: Request) -> tuple[int, Any]:
        return 200, [prune({"name": k, "props": dict(v)}) for k, v in self.kvs.items()]

    def h_kvs_get(self, req: Request) -> tuple[int, Any]:
        # rest/v1/KeyValueStore.java listKVStore: the list filtered to the instance (a
        # one-element list), or 404 with a bare FAIL_NOT_FOUND_KVS.
        name = req.params["inst"]
        if name not in self.kvs:
            raise ApiError([make_rc(C.FAIL_NOT_FOUND_KVS,
                                    f"Could not find key value store instance '{name}'.")],
                           status=404)
        return 200, [prune({"name": name, "props": dict(self.kvs[name])})]

    def h_kvs_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "KeyValueStoreModify")
        r = Reply(C.MASK_MOD, C.MASK_KVS)
        store = self.kvs.setdefault(req.params["inst"], {})
        over = body.get("override_props") or {}
        for k in body.get("delete_props") or []:
            if store.pop(k, None) is None:
                r.add(C.WARN_DEL_UNSET_PROP, f"Could not delete property '{k}'.")
        for ns in body.get("delete_namespaces") or []:
            for k in [k for k in store if k.startswith(ns.rstrip("/") + "/")]:
                del store[k]
        store.update(over)
        r.add(C.MODIFIED, f"Key-value store '{req.params['inst']}' modified.")
        return 200, r.entries

    def h_kvs_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_KVS)
        if self.kvs.pop(req.params["inst"], None) is None:
            r.add(C.WARN_NOT_FOUND, f"Key-value store '{req.params['inst']}' not found.")
        else:
            r.add(C.DELETED, f"Key-value store '{req.params['inst']}' deleted.")
        return 200, r.entries

    # ==========================================================================================
    # DRBD status stand-in

    def drbd_status(self, rd_name: str, node_name: str) -> list[dict]:
        rd = self.rds.get(rd_name.upper())
        if rd is None:
            return []
        res = rd.resources.get(node_name.upper())
        if res is None:
            return []
        self._ensure_devices(rd)
        devices = []
        for vd in sorted(rd.vds.values(), key=lambda v: v.nr):
            devices.append({
                "volume": vd.nr, "minor": vd.minor, "disk-state": self._disk_state(res),
                "client": res.diskless, "open": self._in_use(rd, res), "quorum": res.quorum,
                "size": vd.size_kib, "read": 0, "written": 0, "al-writes": 0, "bm-writes": 0,
                "upper-pending": 0, "lower-pending": 0,
            })
        me_online = self.nodes[res.node.upper()].online
        conns = []
        for o in sorted(rd.resources.values(), key=lambda x: x.node_id):
            if o is res:
                continue
            up = me_online and self.nodes[o.node.upper()].online
            peer_devs = []
            for vd in sorted(rd.vds.values(), key=lambda v: v.nr):
                peer_devs.append({
                    "volume": vd.nr,
                    "replication-state": "Established" if up else "Off",
                    "peer-disk-state": self._disk_state(o) if up else "DUnknown",
                    "peer-client": o.diskless, "resync-suspended": "no",
                    "received": 0, "sent": 0, "out-of-sync": 0, "pending": 0, "unacked": 0,
                    "has-sync-details": False, "has-online-verify-details": False,
                    "percent-in-sync": 100.0,
                })
            conns.append({
                "peer-node-id": o.node_id, "name": o.node,
                "connection-state": "Connected" if up else "Connecting",
                "congested": False,
                "peer-role": ("Primary" if self._in_use(rd, o) else "Secondary") if up
                else "Unknown",
                "tls": False, "ap-in-flight": 0, "rs-in-flight": 0,
                "peer_devices": peer_devs,
            })
        return [{
            "name": rd.name, "node-id": res.node_id,
            "role": "Primary" if self._in_use(rd, res) else "Secondary",
            "suspended": res.suspended,
            "suspended-user": res.suspended and res.quorum,
            "suspended-no-data": False, "suspended-fencing": False,
            "suspended-quorum": res.suspended and not res.quorum,
            "force-io-failures": False, "write-ordering": "flush",
            "devices": devices, "connections": conns,
        }]

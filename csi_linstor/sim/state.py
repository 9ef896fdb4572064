"""The simulated controller's state (one ``ControllerState`` under one lock), its setup from
``SimConfig`` and the lookups every route shares (unknown names answer LINSTOR's NOT_FOUND).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from . import consts as C
from .devices import DeviceManager
from .model import (
    DEFAULT_RG,
    DISKLESS_POOL,
    ApiError,
    Clone,
    Node,
    Pool,
    Reply,
    Request,
    ResourceDef,
    ResourceGroup,
    Snapshot,
    VolumeDef,
    make_rc,
)
from .schemas import ParseError, check_body, parse_version


class ControllerState:
    """Everything LINSTOR's controller holds, built from the SimConfig; lookups and body parsing."""

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

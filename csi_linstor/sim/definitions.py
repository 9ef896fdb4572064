"""Resource definitions: /v1/resource-definitions[/{rd}[/autoplace|/clone[/{dst}]|/sync-status]].
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from . import consts as C
from .model import (
    CLONE_PROVIDERS,
    DEFAULT_RG,
    LAYER_TYPES,
    ApiError,
    Clone,
    Reply,
    Request,
    ResourceDef,
    ResourceGroup,
    check_name,
    prune,
)
from .schemas import ParseError, check_body
from .state import ControllerState


class DefinitionRoutes(ControllerState):
    """Resource-definition, autoplace and clone routes."""

    def h_rds(self, req: Request) -> tuple[int, Any]:
        names = self._names(req, "resource_definitions")
        props = req.query.get("props", [])
        with_vds = req.qbool("with_volume_definitions")
        out = [self._rd_json(rd, with_vds) for rd in self._sorted(self.rds)
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

    def h_autoplace(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "AutoPlaceRequest")
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        rd = self._rd(req.params["rd"], r)
        sf = self._check_filter(body.get("select_filter") or {}, r)
        merged = self._merged_filter(rd, self.rgs.get(rd.rg), sf)
        self._autoplace(rd, merged, r, req, bool(body.get("diskless_on_remaining")))
        return 201, r.entries

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

"""Resource groups and volume groups: /v1/resource-groups[/{rg}[/volume-groups|/spawn|
/query-size-info]].
"""

from __future__ import annotations

import re
from typing import Any

from . import consts as C
from .model import (
    DEFAULT_RG,
    LAYER_TYPES,
    PROVIDER_KINDS,
    THIN_PROVIDERS,
    Reply,
    Request,
    ResourceGroup,
    VolumeGroup,
    check_name,
    make_rc,
    prune,
)
from .state import ControllerState


class GroupRoutes(ControllerState):
    """Resource-group, volume-group, spawn and query-size-info routes."""

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

"""Resources: /v1/resource-definitions/{rd}/resources[/{node}[/volumes|/make-available|
/toggle-disk]].
"""

from __future__ import annotations

import json
from typing import Any

from . import consts as C
from .model import DEFAULT_POOL, LAYER_TYPES, Reply, Request, Resource, ResourceDef, ResourceGroup
from .schemas import ParseError, check_body
from .state import ControllerState


class ResourceRoutes(ControllerState):
    """Resource routes: create, modify, delete, make-available, toggle-disk."""

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

"""LINSTOR's autoplacer: candidate nodes and pools for a select filter, the choice among them,
and adding a diskful or diskless resource.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import consts as C
from .model import (
    DISKLESS_POOL,
    THIN_PROVIDERS,
    Node,
    Pool,
    Reply,
    Request,
    Resource,
    ResourceDef,
    ResourceGroup,
)
from .state import ControllerState


class Autoplacer(ControllerState):
    """Placement rules (select filters, candidates, selection, capacity)."""

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

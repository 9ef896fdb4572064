"""DRBD quorum tie-breaker: when LINSTOR adds or removes the TIE_BREAKER diskless resource.
"""

from __future__ import annotations

from . import consts as C
from .model import DISKLESS_POOL, Node, Reply, Resource, ResourceDef
from .state import ControllerState


class TieBreaker(ControllerState):
    """The tie-breaker rules."""

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

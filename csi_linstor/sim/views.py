"""Views across definitions: /v1/view/storage-pools, /v1/view/resources, /v1/view/snapshots.
"""

from __future__ import annotations

from typing import Any

from .model import Request
from .state import ControllerState


class ViewRoutes(ControllerState):
    """The /v1/view routes."""

    def h_view_pools(self, req: Request) -> tuple[int, Any]:
        names = self._names(req, "nodes")
        nodes = [n for n in self.nodes.values() if names is None or n.name.upper() in names]
        return 200, self._pools_list(req, nodes)

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
            if not rd.vds:
                # CtrlVlmListApiCallHandler (the view): a resource is listed only with at least
                # one volume ("if (!volumes.isEmpty())"); an RD without volume definitions has
                # resources without volumes, which /v1/resource-definitions/{rd}/resources shows
                continue
            for res in rd.resources.values():
                if nodes is not None and res.node.upper() not in nodes:
                    continue
                if pools is not None and res.pool.upper() not in pools:
                    continue
                # LINSTOR matches the resource's own props, the StorPoolName it renders with
                # them included, before it builds the reply (CtrlVlmListApiCallHandler.
                # assembleList: rsc.getProps().contains(propFilters))
                if props and not self._props_match({"StorPoolName": res.pool, **res.props},
                                                   props):
                    continue
                out.append(self._resource_json(rd, res, True))
        return 200, self._page(out, req)

    def h_view_snapshots(self, req: Request) -> tuple[int, Any]:
        # View.listSnapshots takes only nodes, resources, limit and offset: any other query
        # parameter (snapshots= included) is ignored and every snapshot comes back (C8).
        nodes = self._names(req, "nodes")
        rsc = self._names(req, "resources")
        out = []
        for rd in self._sorted(self.rds):
            if rsc is not None and rd.key not in rsc:
                continue
            for s in self._sorted(rd.snapshots):
                if nodes is not None and not any(n.upper() in nodes for n in s.nodes):
                    continue
                out.append(self._snapshot_json(rd, s))
        return 200, self._page(out, req)

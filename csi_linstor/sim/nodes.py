"""Nodes and storage pools: /health, /v1/controller/version, /v1/nodes[/{node}[/storage-pools]].
"""

from __future__ import annotations

from typing import Any

from . import consts as C
from .model import Node, Reply, Request
from .state import ControllerState


class NodeRoutes(ControllerState):
    """Node and storage-pool routes."""

    def h_health(self, req: Request) -> tuple[int, Any]:
        return 200, None

    def h_version(self, req: Request) -> tuple[int, Any]:
        return 200, {"version": self.cfg.version, "git_hash": "simulator",
                     "build_time": "2026-01-01T00:00:00+00:00",
                     "rest_api_version": self.cfg.rest_api_version}

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

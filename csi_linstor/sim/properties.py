"""Properties: the allowed keys, the override/delete body every ``PUT`` shares, property
filters; routes /v1/controller/properties and /v1/key-value-store.
"""

from __future__ import annotations

from typing import Any

from . import consts as C
from .model import PROP_ALLOW_EXACT, PROP_ALLOW_PREFIX, ApiError, Reply, Request, make_rc, prune
from .state import ControllerState


class PropertyRoutes(ControllerState):
    """Property rules and the controller-property and key-value-store routes."""

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

    def h_ctrl_props(self, req: Request) -> tuple[int, Any]:
        return 200, dict(self.ctrl_props)

    def h_ctrl_props_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "ControllerPropsModify")
        r = Reply(C.MASK_MOD, C.MASK_CTRL_CONF)
        self._modify_props(self.ctrl_props, body, r)
        return 201, r.entries

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
            # CtrlKvsApiCallHandler.modifyKvs uses addModifyDeleteUnconditional: a key that is
            # not set is no warning (unlike the other objects' props)
            store.pop(k, None)
        for ns in body.get("delete_namespaces") or []:
            for k in [k for k in store if k.startswith(ns.rstrip("/") + "/")]:
                del store[k]
        store.update(over)
        if not store:
            # CtrlKvsApiCallHandler.modifyKvs: an instance left without keys is deleted
            self.kvs.pop(req.params["inst"], None)
        r.add(C.MODIFIED, f"Key-value store '{req.params['inst']}' modified.")
        return 200, r.entries

    def h_kvs_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_KVS)
        if self.kvs.pop(req.params["inst"], None) is None:
            r.add(C.WARN_NOT_FOUND, f"Key-value store '{req.params['inst']}' not found.")
        else:
            r.add(C.DELETED, f"Key-value store '{req.params['inst']}' deleted.")
        return 200, r.entries

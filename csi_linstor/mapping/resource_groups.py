"""The resource group a StorageClass maps to: its select filter, and the generated name
``sc-<uuid5>``, a hash of the exact JSON golinstor marshals
for ``ResourceGroupModify``, so volumes share resource groups with LINBIT's Go driver.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from csi_linstor.mapping.ids import RESOURCE_GROUP_NAMESPACE, go_uuid5

if TYPE_CHECKING:
    from csi_linstor.mapping.params import VolumeParameters



def _select_filter(place_count: int, pools: tuple[str, ...], regex: str, same: tuple[str, ...],
                   different: tuple[str, ...], x_different: tuple[tuple[str, int], ...],
                   layers: tuple[str, ...], diskless_on_remaining: bool) -> dict[str, Any]:
    """AutoSelectFilter with Go ``omitempty`` semantics, fields in struct order."""
    out: dict[str, Any] = {}
    if place_count:
        out["place_count"] = place_count
    if pools:
        out["storage_pool_list"] = list(pools)
    if regex:
        out["not_place_with_rsc_regex"] = regex
    if same:
        out["replicas_on_same"] = list(same)
    if different:
        out["replicas_on_different"] = list(different)
    if x_different:
        out["x_replicas_on_different_map"] = {k: v for k, v in sorted(x_different)}
    if layers:
        out["layer_stack"] = list(layers)
    if diskless_on_remaining:
        out["diskless_on_remaining"] = True
    return out


def go_json(value: Any) -> bytes:
    """``encoding/json.Marshal`` of plain maps/lists/strings/ints/bools, byte for byte."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # Go escapes <, >, & (HTML safety) and U+2028/2029; Python does not.
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    # Python writes other control characters as \u00XX like Go, except \b and \f, which Go
    # (>= 1.22) also writes short. Nothing to adjust.
    return text.encode("utf-8")


def resource_group_json(p: VolumeParameters) -> bytes:
    """golinstor ``ResourceGroupModify`` JSON as the Go driver hashes it for the RG name.

    Lists are taken as the Go driver splits them (on single spaces, so ``"a,b"`` is one item
    and ``"a  b"`` has an empty one, and an empty ``replicasOnSame`` is ``["<ns>/"]``), and a
    ``placementCount`` of 0 is left out (``omitempty``): the same class gives the same name.
    """
    body: dict[str, Any] = {}
    if p.properties:
        body["override_props"] = dict(sorted(p.properties))
    go = dict(p.go_lists)
    # select_filter is a struct: omitempty never drops it.
    body["select_filter"] = _select_filter(
        p.placement_count, go.get("storage_pool_list", p.storage_pools),
        p.do_not_place_with_regex, go.get("replicas_on_same", p.replicas_on_same),
        go.get("replicas_on_different", p.replicas_on_different), p.x_replicas_on_different,
        p.layer_list, p.diskless_on_remaining)
    return go_json(body)


def generated_resource_group(p: VolumeParameters) -> str:
    return "sc-" + go_uuid5(RESOURCE_GROUP_NAMESPACE, resource_group_json(p))

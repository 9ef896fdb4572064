"""Check the request bodies a client sent (as the simulator recorded them) against LINSTOR's
OpenAPI request schemas, strictly (no invented or misspelled keys)."""

from __future__ import annotations

from typing import Any

from tests.contract.schema import schema_errors

RD = "/v1/resource-definitions/{rd}"
RSC = RD + "/resources/{node}"

REQUEST_SCHEMAS: dict[tuple[str, str], str] = {
    ("POST", "/v1/resource-groups"): "ResourceGroup",
    ("PUT", "/v1/resource-groups/{rg}"): "ResourceGroupModify",
    ("POST", "/v1/resource-groups/{rg}/volume-groups"): "VolumeGroup",
    ("POST", "/v1/resource-groups/{rg}/spawn"): "ResourceGroupSpawn",
    ("POST", "/v1/resource-groups/{rg}/query-size-info"): "QuerySizeInfoRequest",
    ("POST", "/v1/resource-definitions"): "ResourceDefinitionCreate",
    ("PUT", RD): "ResourceDefinitionModify",
    ("POST", RD + "/volume-definitions"): "VolumeDefinitionCreate",
    ("PUT", RD + "/volume-definitions/{vnr}"): "VolumeDefinitionModify",
    ("POST", RD + "/resources"): "ResourceCreate[]",
    ("POST", RSC): "ResourceCreate",
    ("PUT", RSC): "ResourceModify",
    ("POST", RSC + "/make-available"): "ResourceMakeAvailable",
    ("PUT", RSC + "/toggle-disk/diskful"): "ToggleDiskDiskful",
    ("PUT", RSC + "/toggle-disk/diskful/{sp}"): "ToggleDiskDiskful",
    ("PUT", RSC + "/toggle-disk"): "ToggleDiskRequest",
    ("POST", RD + "/autoplace"): "AutoPlaceRequest",
    ("POST", RD + "/snapshots"): "Snapshot",
    ("POST", "/v1/actions/snapshot/multi"): "CreateMultiSnapshotRequest",
    ("POST", RD + "/snapshot-restore-volume-definition/{snap}"): "SnapshotRestore",
    ("POST", RD + "/snapshot-restore-resource/{snap}"): "SnapshotRestore",
    ("POST", RD + "/clone"): "ResourceDefinitionCloneRequest",
    ("PUT", "/v1/nodes/{node}"): "NodeModify",
    ("PUT", "/v1/key-value-store/{inst}"): "KeyValueStoreModify",
    ("POST", "/v1/controller/properties"): "ControllerPropsModify",
}


def request_violations(recorded: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """(bodies checked, violations) for records ``{"method", "route", "body"}``."""
    checked = 0
    problems: list[str] = []
    for record in recorded:
        key = (record["method"], record["route"])
        name = REQUEST_SCHEMAS.get(key)
        if name is None:
            problems.append(f"{key[0]} {key[1]}: no request schema mapped (add it here)")
            continue
        checked += 1
        for err in schema_errors(record["body"], name, strict=True):
            problems.append(f"{key[0]} {key[1]} ({name}): {err}; body={record['body']!r}"[:600])
    return checked, sorted(set(problems))

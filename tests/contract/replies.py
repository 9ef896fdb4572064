"""Check the replies a simulator sent (as it recorded them, keyed by route template) against
LINSTOR's OpenAPI response schemas, strictly (no invented keys, no wrong types or enums)."""

from __future__ import annotations

from typing import Any

from tests.contract.schema import schema_errors

RD = "/v1/resource-definitions/{rd}"
RSC = RD + "/resources/{node}"

# Success schemas of the routes that answer with an object or a list of objects. Every other
# reply (POST/PUT/DELETE successes, every error) is an ApiCallRc list, except clone, whose
# errors come in the same object type as its success.
REPLY_SCHEMAS: dict[tuple[str, str], str] = {
    ("GET", "/v1/controller/version"): "ControllerVersion",
    ("GET", "/v1/controller/properties"): "Properties",
    ("GET", "/v1/nodes"): "Node[]",
    ("GET", "/v1/nodes/{node}"): "Node",
    ("GET", "/v1/nodes/{node}/storage-pools"): "StoragePool[]",
    ("GET", "/v1/nodes/{node}/storage-pools/{sp}"): "StoragePool",
    ("GET", "/v1/view/storage-pools"): "StoragePool[]",
    ("GET", "/v1/resource-groups"): "ResourceGroup[]",
    ("GET", "/v1/resource-groups/{rg}"): "ResourceGroup",
    ("GET", "/v1/resource-groups/{rg}/volume-groups"): "VolumeGroup[]",
    ("GET", "/v1/resource-groups/{rg}/volume-groups/{vnr}"): "VolumeGroup",
    ("POST", "/v1/resource-groups/{rg}/query-size-info"): "QuerySizeInfoResponse",
    ("GET", "/v1/resource-definitions"): "ResourceDefinition[]",
    ("GET", RD): "ResourceDefinition",
    ("GET", RD + "/sync-status"): "ResourceDefinitionSyncStatus",
    ("GET", RD + "/volume-definitions"): "VolumeDefinition[]",
    ("GET", RD + "/volume-definitions/{vnr}"): "VolumeDefinition",
    ("GET", RD + "/resources"): "Resource[]",
    ("GET", RSC): "Resource",
    ("GET", RSC + "/volumes"): "Volume[]",
    ("GET", RSC + "/volumes/{vnr}"): "Volume",
    ("GET", "/v1/view/resources"): "ResourceWithVolumes[]",
    ("GET", RD + "/snapshots"): "Snapshot[]",
    ("GET", RD + "/snapshots/{snap}"): "Snapshot",
    ("GET", "/v1/view/snapshots"): "Snapshot[]",
    ("POST", RD + "/clone"): "ResourceDefinitionCloneStarted",
    ("GET", RD + "/clone/{dst}"): "ResourceDefinitionCloneStatus",
    ("GET", "/v1/key-value-store"): "KeyValueStore[]",
    ("GET", "/v1/encryption/passphrase"): "PassphraseStatus[]",
    # The spec says one object; LINSTOR answers a one-element list (linstor-facts §9 C3).
    ("GET", "/v1/key-value-store/{inst}"): "KeyValueStore[]",
    # The spec says an array of RemoteList; LINSTOR answers one RemoteList (§9 C1).
    ("GET", "/v1/remotes"): "RemoteList",
    ("GET", "/v1/remotes/s3"): "S3Remote[]",
    ("GET", "/v1/remotes/linstor"): "LinstorRemote[]",
    ("GET", "/v1/remotes/ebs"): "EbsRemote[]",
    ("GET", "/v1/remotes/{remote}/backups"): "BackupList",
    ("POST", "/v1/remotes/{remote}/backups/info"): "BackupInfo",
}
ALWAYS_SAME_TYPE = {("POST", RD + "/clone")}


def schema_for(method: str, route: str, status: int) -> str | None:
    """The schema a reply must match; None for a 2xx object reply of an unmapped route."""
    key = (method, route)
    if key in REPLY_SCHEMAS and (status < 300 or key in ALWAYS_SAME_TYPE):
        return REPLY_SCHEMAS[key]
    if status >= 300 or method != "GET":
        return "ApiCallRc[]"
    return None


def reply_violations(recorded: list[tuple[str, str, int, Any]]) -> tuple[int, list[str]]:
    """(replies checked, problems) for (method, route, status, body) records."""
    checked, problems = 0, []
    seen: set[tuple[str, str, int, str]] = set()
    for method, route, status, body in recorded:
        if body is None:
            continue
        name = schema_for(method, route, status)
        if name is None:
            problems.append(f"{method} {route} -> {status}: no response schema mapped in "
                            "tests/contract/replies.py")
            continue
        checked += 1
        errs = schema_errors(body, name, strict=True)
        if errs:
            key = (method, route, status, errs[0])
            if key not in seen:  # one line per distinct problem
                seen.add(key)
                problems.append(f"{method} {route} -> {status} as {name}: {errs[:3]}")
    return checked, problems

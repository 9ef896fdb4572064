"""Every reply of the simulator in a representative scenario validates STRICTLY against the
LINSTOR OpenAPI schema of its endpoint (spec read from the shared folder at test time)."""

from __future__ import annotations

import re
from typing import Any

from tests.contract.schema import require_spec, schema_errors
from tests.sim.helpers import Api

# (method, path regex, success schema). Error replies are always ApiCallRc lists, except clone.
R = r"[^/?]+"
SCHEMAS: list[tuple[str, str, str]] = [
    ("GET", r"/v1/controller/version", "ControllerVersion"),
    ("GET", r"/v1/nodes(\?.*)?", "Node[]"),
    ("GET", rf"/v1/nodes/{R}", "Node"),
    ("GET", rf"/v1/nodes/{R}/storage-pools(\?.*)?", "StoragePool[]"),
    ("GET", rf"/v1/nodes/{R}/storage-pools/{R}", "StoragePool"),
    ("GET", r"/v1/view/storage-pools(\?.*)?", "StoragePool[]"),
    ("GET", r"/v1/resource-groups(\?.*)?", "ResourceGroup[]"),
    ("GET", rf"/v1/resource-groups/{R}", "ResourceGroup"),
    ("GET", rf"/v1/resource-groups/{R}/volume-groups", "VolumeGroup[]"),
    ("GET", rf"/v1/resource-groups/{R}/volume-groups/\d+", "VolumeGroup"),
    ("POST", rf"/v1/resource-groups/{R}/query-size-info", "QuerySizeInfoResponse"),
    ("GET", r"/v1/resource-definitions(\?.*)?", "ResourceDefinition[]"),
    ("GET", rf"/v1/resource-definitions/{R}", "ResourceDefinition"),
    ("GET", rf"/v1/resource-definitions/{R}/volume-definitions", "VolumeDefinition[]"),
    ("GET", rf"/v1/resource-definitions/{R}/volume-definitions/\d+", "VolumeDefinition"),
    ("GET", rf"/v1/resource-definitions/{R}/resources", "Resource[]"),
    ("GET", rf"/v1/resource-definitions/{R}/resources/{R}", "Resource"),
    ("GET", rf"/v1/resource-definitions/{R}/resources/{R}/volumes", "Volume[]"),
    ("GET", rf"/v1/resource-definitions/{R}/resources/{R}/volumes/\d+", "Volume"),
    ("GET", r"/v1/view/resources(\?.*)?", "ResourceWithVolumes[]"),
    ("GET", rf"/v1/resource-definitions/{R}/snapshots", "Snapshot[]"),
    ("GET", rf"/v1/resource-definitions/{R}/snapshots/{R}", "Snapshot"),
    ("GET", r"/v1/view/snapshots(\?.*)?", "Snapshot[]"),
    ("POST", rf"/v1/resource-definitions/{R}/clone", "ResourceDefinitionCloneStarted"),
    ("GET", rf"/v1/resource-definitions/{R}/clone/{R}", "ResourceDefinitionCloneStatus"),
    ("GET", rf"/v1/key-value-store/{R}", "KeyValueStore"),
    ("GET", r"/v1/controller/properties", "Properties"),
]


def _schema_for(method: str, path: str, status: int) -> str:
    for m, rx, name in SCHEMAS:
        if m == method and re.fullmatch(rx, path):
            if name == "ResourceDefinitionCloneStarted" or status < 300:
                return name
    return "ApiCallRc[]"


def _scenario(api: Api, sim: Any) -> None:
    api.get("/v1/controller/version")
    api.get("/v1/controller/properties")
    api.post("/v1/controller/properties", {"override_props": {"DrbdOptions/auto-quorum":
                                                              "io-error"}})
    api.get("/v1/controller/properties")
    api.get("/v1/nodes")
    api.put("/v1/nodes/node-1", {"override_props": {"Aux/topology/zone": "z1"}})
    api.get("/v1/nodes/node-1")
    api.get("/v1/nodes/nope")
    api.get("/v1/nodes/node-1/storage-pools")
    api.get("/v1/nodes/node-1/storage-pools/DfltStorPool")
    api.get("/v1/nodes/node-1/storage-pools/nope")
    api.get("/v1/view/storage-pools")
    api.post("/v1/resource-groups", {"name": "csi-rg", "description": "d",
                                     "props": {"FileSystem/Type": "ext4"},
                                     "select_filter": {"place_count": 2,
                                                       "storage_pool_list": ["DfltStorPool"]}})
    api.post("/v1/resource-groups", {"name": "csi-rg"})
    api.post("/v1/resource-groups/csi-rg/volume-groups", {"volume_number": 0})
    api.get("/v1/resource-groups")
    api.get("/v1/resource-groups/csi-rg")
    api.get("/v1/resource-groups/csi-rg/volume-groups")
    api.get("/v1/resource-groups/csi-rg/volume-groups/0")
    api.put("/v1/resource-groups/csi-rg", {"override_props": {"Aux/a": "b"},
                                           "delete_props": ["Aux/none"]})
    api.post("/v1/resource-groups/csi-rg/query-size-info", {})
    api.post("/v1/resource-groups/csi-rg/query-size-info", {"select_filter": {"place_count": 9}})
    api.post("/v1/resource-groups/csi-rg/spawn", {
        "resource_definition_name": "pvc-a", "volume_sizes": [4096],
        "resource_definition_props": {"Aux/csi-volume-name": "pvc-a"}})
    api.post("/v1/resource-groups/csi-rg/spawn", {
        "resource_definition_name": "pvc-a", "volume_sizes": [4096]})
    api.post("/v1/resource-groups/csi-rg/spawn", {
        "resource_definition_name": "pvc-big", "volume_sizes": [4096],
        "select_filter": {"place_count": 7}})
    api.post("/v1/resource-groups/csi-rg/spawn", {"resource_definition_name": "pvc-x",
                                                  "unknown": 1})
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "pvc-z"}, "bogus": 1})
    api.get("/v1/resource-definitions?with_volume_definitions=true")
    api.get("/v1/resource-definitions/pvc-a")
    api.get("/v1/resource-definitions/pvc-a/volume-definitions")
    api.get("/v1/resource-definitions/pvc-a/volume-definitions/0")
    api.get("/v1/resource-definitions/pvc-a/resources")
    api.post("/v1/resource-definitions/pvc-a/resources/node-3/make-available", {})
    api.post("/v1/resource-definitions/pvc-a/resources/node-3/make-available", {})
    api.post("/v1/resource-definitions/pvc-a/autoplace", {"select_filter": {"place_count": 2}})
    for n in ("node-1", "node-2", "node-3"):
        api.get(f"/v1/resource-definitions/pvc-a/resources/{n}")
        api.get(f"/v1/resource-definitions/pvc-a/resources/{n}/volumes")
        api.get(f"/v1/resource-definitions/pvc-a/resources/{n}/volumes/0")
    sim.set_in_use("pvc-a", "node-3", True)
    sim.set_node_online("node-2", False)
    api.get("/v1/view/resources")
    api.get("/v1/view/storage-pools")
    api.get("/v1/nodes")
    sim.set_node_online("node-2", True)
    api.put("/v1/resource-definitions/pvc-a/volume-definitions/0", {"size_kib": 8192})
    api.put("/v1/resource-definitions/pvc-a/volume-definitions/0", {"size_kib": 8192})
    api.put("/v1/resource-definitions/pvc-a/volume-definitions/0", {"size_kib": 1024})
    api.post("/v1/resource-definitions/pvc-a/snapshots", {"name": "snap-1"})
    api.post("/v1/resource-definitions/pvc-a/snapshots", {"name": "snap-1"})
    api.post("/v1/actions/snapshot/multi", {"snapshots": [
        {"name": "grp-1", "resource_name": "pvc-a"}]})
    api.get("/v1/resource-definitions/pvc-a/snapshots")
    api.get("/v1/resource-definitions/pvc-a/snapshots/snap-1")
    api.get("/v1/view/snapshots")
    api.post("/v1/resource-definitions", {"resource_definition": {
        "name": "pvc-r", "resource_group_name": "csi-rg", "props": {"Aux/x": "1"}}})
    api.post("/v1/resource-definitions/pvc-a/snapshot-restore-volume-definition/snap-1",
             {"to_resource": "pvc-r"})
    api.post("/v1/resource-definitions/pvc-a/snapshot-restore-resource/snap-1",
             {"to_resource": "pvc-r"})
    api.post("/v1/resource-definitions/pvc-a/clone", {"name": "pvc-c"})
    api.post("/v1/resource-definitions/pvc-a/clone", {"name": "pvc-c"})
    api.get("/v1/resource-definitions/pvc-a/clone/pvc-c")
    api.get("/v1/resource-definitions/pvc-a/clone/pvc-c")
    api.put("/v1/key-value-store/csi-map", {"override_props": {"a": "b"}})
    api.get("/v1/key-value-store/csi-map")
    api.delete("/v1/resource-definitions/pvc-a/resources/node-3")
    sim.set_in_use("pvc-a", "node-3", False)
    api.delete("/v1/resource-definitions/pvc-a/resources/node-3")
    api.delete("/v1/resource-definitions/pvc-a")
    api.delete("/v1/resource-definitions/pvc-a/snapshots/snap-1")
    api.delete("/v1/resource-definitions/pvc-a/snapshots/grp-1")
    api.delete("/v1/resource-definitions/pvc-a")
    api.delete("/v1/resource-definitions/pvc-a")
    api.get("/v1/resource-definitions/pvc-a")
    api.get("/v1/not/a/route")


def test_simulator_replies_validate_strictly(sim: Any, api: Api) -> None:
    require_spec()
    _scenario(api, sim)
    failures = []
    seen_schemas = set()
    for method, path, status, body in api.replies:
        if body is None:
            continue
        name = _schema_for(method, path, status)
        seen_schemas.add(name)
        errs = schema_errors(body, name, strict=True)
        if errs:
            failures.append(f"{method} {path} -> {status} as {name}: {errs[:3]}")
    assert not failures, "\n".join(failures)
    assert len(seen_schemas) >= 20, seen_schemas
    statuses = {s for _m, _p, s, _b in api.replies}
    assert {200, 201, 400, 404, 500} <= statuses


def test_strict_mode_catches_invented_keys() -> None:
    require_spec()
    good = {"ret_code": 1, "message": "ok"}
    assert schema_errors(good, "ApiCallRc", strict=True) == []
    assert schema_errors({**good, "mesage": "typo"}, "ApiCallRc") == []
    assert schema_errors({**good, "mesage": "typo"}, "ApiCallRc", strict=True)
    assert schema_errors({"name": "r", "volumes": [{"bogus": 1}]}, "ResourceWithVolumes",
                         strict=True)
    assert schema_errors({"props": {"any/key": "v"}}, "ResourceGroup", strict=True) == []
    assert schema_errors({"storage_pool_name": "p", "provider_kind": "LVMTHIN"}, "StoragePool")


def test_request_bodies_fixture(linstor_schema: Any) -> None:
    """The fixture other suites use to validate the request bodies they send."""
    linstor_schema({"resource_definition_name": "pvc-1", "volume_sizes": [1024],
                    "resource_definition_props": {"Aux/a": "b"}}, "ResourceGroupSpawn",
                   strict=True)
    linstor_schema({"select_filter": {"place_count": 2}}, "AutoPlaceRequest", strict=True)
    try:
        linstor_schema({"size_kib": "10"}, "VolumeDefinitionModify")
    except AssertionError as e:
        assert "size_kib" in str(e)
    else:
        raise AssertionError("a string size_kib must be rejected")

"""Every reply of the simulator in a representative scenario validates STRICTLY against the
LINSTOR OpenAPI schema of its endpoint (spec read from the shared folder at test time). The
replies of every other simulator in the suite are checked the same way at the end of the
session (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from tests.contract.replies import reply_violations, schema_for
from tests.contract.schema import require_spec, schema_errors
from tests.sim.helpers import Api


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
    sim.app.replies.clear()
    _scenario(api, sim)
    recorded = sim.replies()
    checked, problems = reply_violations(recorded)
    assert not problems, "\n".join(problems)
    assert checked == len([r for r in recorded if r[3] is not None]) >= 60
    schemas = {schema_for(m, r, st) for m, r, st, _b in recorded}
    assert len(schemas) >= 20, schemas
    assert {200, 201, 400, 404, 500} <= {st for _m, _r, st, _b in recorded}


def test_a_reply_with_an_invented_key_is_caught() -> None:
    require_spec()
    good = [("GET", "/v1/nodes/{node}", 200, {"name": "n1", "type": "SATELLITE"})]
    assert reply_violations(good) == (1, [])
    bad = [("GET", "/v1/nodes/{node}", 200, {"name": "n1", "connection_state": "ONLINE"})]
    checked, problems = reply_violations(bad)
    assert checked == 1 and "connection_state" in problems[0]
    unmapped = [("GET", "/v1/some/new/{route}", 200, {"x": 1})]
    assert "no response schema mapped" in reply_violations(unmapped)[1][0]


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

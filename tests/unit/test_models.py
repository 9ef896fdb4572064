"""Typed LINSTOR models: NON_EMPTY omission, forward compatibility, clear errors, wire names."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import grpc
import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.linstor import queries
from csi_linstor.linstor.models import (
    MODELS,
    CloneStatus,
    ControllerVersion,
    Model,
    ModelError,
    Node,
    Resource,
    ResourceDefinition,
    ResourceGroup,
    Snapshot,
    StoragePool,
    Volume,
    format_version,
    parse_version,
)
from tests.contract.schema import require_spec, schemas

# A /v1/view/resources entry as LINSTOR sends it (fields from linstor-facts.md §3.8), with
# fields this driver does not model.
VIEW_RESOURCE = {
    "name": "pvc-1", "node_name": "node-2", "props": {"StorPoolName": "DfltDisklessStorPool"},
    "flags": ["DRBD_DISKLESS", "TIE_BREAKER"], "uuid": "u", "create_timestamp": 1700000000000,
    "layer_object": {"type": "DRBD", "drbd": {"node_id": 2, "may_promote": True}},
    "state": {"in_use": False},
    "volumes": [{
        "volume_number": 0, "storage_pool_name": "DfltDisklessStorPool",
        "provider_kind": "DISKLESS", "device_path": "/dev/drbd1000", "usable_size_kib": 1024,
        "layer_data_list": [{"type": "DRBD", "data": {"device_path": "/dev/drbd1000"}}],
        "state": {"disk_state": "Diskless", "replication_states": {"node-1": {}}},
        "reports": [],
    }],
    "shared_name": "",
}


# ---------------------------------------------------------------------------------------------
# Omission and defaults
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_may_be_omitted(model: type[Model]) -> None:
    parsed = model.from_json({})
    for f in dataclasses.fields(model):
        value = getattr(parsed, f.name)
        assert value in (None, "", 0, ()) or value == {} or isinstance(value, Model), \
            f"{model.__name__}.{f.name} defaults to {value!r}, not an empty value"
    assert parsed == model()


def test_omitted_state_is_unknown_not_idle() -> None:
    res = Resource.from_json({"name": "pvc-1", "node_name": "node-1"})
    assert not res.reported and not res.in_use and not res.healthy
    assert res.device_path(0) == "" and res.top_layer == "" and not res.is_diskless
    vol = Volume.from_json({})
    assert vol.disk_state == "" and vol.top_layer == "" and vol.usable_size_kib is None


def test_diskless_pool_capacity_is_absent_not_zero() -> None:
    pool = StoragePool.from_json({"storage_pool_name": "DfltDisklessStorPool",
                                  "node_name": "n1", "provider_kind": "DISKLESS"})
    assert pool.is_diskless and pool.free_capacity is None and pool.total_capacity is None
    full = StoragePool.from_json({"storage_pool_name": "sp", "provider_kind": "LVM_THIN",
                                  "free_capacity": 0, "total_capacity": 10})
    assert full.free_capacity == 0 and not full.is_diskless


def test_empty_list_reply_is_empty() -> None:
    assert Resource.list_from_json(None) == [] and Resource.list_from_json([]) == []


# ---------------------------------------------------------------------------------------------
# Forward compatibility and helpers
# ---------------------------------------------------------------------------------------------


def test_unknown_fields_are_ignored_at_every_level() -> None:
    volume = VIEW_RESOURCE["volumes"][0]
    newer = {**VIEW_RESOURCE, "brand_new": {"x": [1]}, "state": {"in_use": False, "quorum": 1},
             "volumes": [{**volume, "future_field": 7,
                          "state": {**volume["state"], "new_state": "x"},
                          "layer_data_list": [{"type": "DRBD", "extra": True}]}]}
    assert Resource.from_json(newer) == Resource.from_json(VIEW_RESOURCE)


def test_resource_helpers_on_a_real_shaped_reply() -> None:
    res = Resource.from_json(VIEW_RESOURCE)
    assert res.is_diskless and res.is_tiebreaker and res.reported and not res.in_use
    assert res.device_path(0) == "/dev/drbd1000" and res.device_path(1) == ""
    assert res.top_layer == "DRBD" and res.volumes[0].disk_state == "Diskless"
    assert dict(res.props) == {"StorPoolName": "DfltDisklessStorPool"}
    for flag in ("DISKLESS", "DRBD_DISKLESS", "NVME_INITIATOR"):
        assert Resource.from_json({"flags": [flag]}).is_diskless
    assert not Resource.from_json({"flags": ["TIE_BREAKER"]}).is_diskless
    diskful = Resource.from_json({"state": {}, "volumes": [
        {"volume_number": 0, "state": {"disk_state": "UpToDate"}},
        {"volume_number": 1, "state": {"disk_state": "Outdated"}}]})
    assert diskful.reported and not diskful.in_use and not diskful.healthy


def test_snapshot_props_sizes_and_times() -> None:
    snap = Snapshot.from_json({
        "name": "snap-1", "resource_name": "pvc-1", "nodes": ["n1", "n2"],
        "flags": ["SUCCESSFUL"], "props": {"Aux/old": "1"},
        "snapshot_definition_props": {"Aux/csi-snapshot-name": "s"},
        "volume_definitions": [{"volume_number": 1, "size_kib": 5},
                               {"volume_number": 0, "size_kib": 1024}],
        "snapshots": [{"node_name": "n1", "create_timestamp": 2000},
                      {"node_name": "n2", "create_timestamp": 1000},
                      {"node_name": "n3"}]})
    assert snap.successful and not snap.failed and snap.nodes == ("n1", "n2")
    assert dict(snap.definition_props) == {"Aux/csi-snapshot-name": "s"}
    assert snap.size_kib(0) == 1024 and snap.size_kib(1) == 5 and snap.size_kib(2) == 0
    assert snap.created_ms == 1000
    old = Snapshot.from_json({"props": {"Aux/csi-snapshot-name": "s"},
                              "flags": ["FAILED_DEPLOYMENT"]})
    assert dict(old.definition_props) == {"Aux/csi-snapshot-name": "s"}
    assert old.failed and not old.successful and old.created_ms == 0


def test_resource_definition_volume_definitions() -> None:
    rd = ResourceDefinition.from_json({"name": "pvc-1", "resource_group_name": "rg",
                                       "volume_definitions": [{"volume_number": 0,
                                                               "size_kib": 2048}]})
    assert rd.volume_definition(0).size_kib == 2048 and rd.volume_definition(1) is None
    assert ResourceDefinition.from_json({"name": "x"}).volume_definition(0) is None


def test_select_filter_round_trips_to_wire_form() -> None:
    wire = {"place_count": 2, "storage_pool_list": ["sp1"], "diskless_on_remaining": False,
            "x_replicas_on_different_map": {"zone": 2}, "layer_stack": ["DRBD", "STORAGE"],
            "overprovision": 1.5}
    rg = ResourceGroup.from_json({"name": "rg", "select_filter": wire})
    assert rg.select_filter.place_count == 2 and rg.select_filter.storage_pool_list == ("sp1",)
    assert rg.select_filter.as_json() == wire
    assert ResourceGroup.from_json({"name": "rg"}).select_filter.as_json() == {}


def test_models_are_frozen() -> None:
    node = Node.from_json({"name": "n1", "props": {"Aux/zone": "a"}, "flags": ["EVICTED"]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.name = "n2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        node.props["Aux/zone"] = "b"  # type: ignore[index]
    assert node.flags == ("EVICTED",)


def test_versions() -> None:
    assert ControllerVersion.from_json({"rest_api_version": "1.22.0"}).rest_api == (1, 22, 0)
    assert ControllerVersion.from_json({}).rest_api == ()
    assert parse_version("1.x") == () and format_version((1, 26, 0)) == "1.26.0"
    assert format_version(()) == "unknown"


# ---------------------------------------------------------------------------------------------
# Wrong types: a clear error naming the object and the field
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "data", "where", "expected"), [
    (Resource, {"flags": "DISKLESS"}, "Resource.flags", "a list"),
    (Resource, {"flags": ["DISKLESS", 3]}, "Resource.flags[1]", "a string"),
    (Resource, {"state": {"in_use": "yes"}}, "Resource.state.in_use", "a boolean"),
    (Resource, {"volumes": [{}, {"state": {"disk_state": 4}}]},
     "Resource.volumes[1].state.disk_state", "a string"),
    (StoragePool, {"free_capacity": "100"}, "StoragePool.free_capacity", "an integer"),
    (StoragePool, {"free_capacity": True}, "StoragePool.free_capacity", "an integer"),
    (Node, {"props": {"Aux/zone": 1}}, "Node.props['Aux/zone']", "a string"),
    (Node, {"props": ["Aux/zone"]}, "Node.props", "an object"),
    (ResourceGroup, {"select_filter": {"place_count": 1.5}},
     "ResourceGroup.select_filter.place_count", "an integer"),
    (Snapshot, {"snapshots": [{"create_timestamp": "now"}]},
     "Snapshot.snapshots[0].create_timestamp", "an integer"),
    (CloneStatus, ["COMPLETE"], "CloneStatus", "an object"),
])
def test_wrong_type_names_object_and_field(model: type[Model], data: Any, where: str,
                                           expected: str) -> None:
    with pytest.raises(ModelError) as err:
        model.from_json(data)
    assert f"{where} should be {expected}" in err.value.message
    assert err.value.code == grpc.StatusCode.INTERNAL


def test_wrong_type_in_a_list_reply_names_the_entry() -> None:
    with pytest.raises(ModelError, match=r"Node\[1\]\.name should be a string"):
        Node.list_from_json([{"name": "n1"}, {"name": 2}])
    with pytest.raises(ModelError, match=r"list of Node should be a list"):
        Node.list_from_json({"name": "n1"})


# ---------------------------------------------------------------------------------------------
# Queries: one GET each, LINSTOR's paths and repeated filter parameters
# ---------------------------------------------------------------------------------------------


class RecordingClient:
    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.calls: list[tuple[str, Any]] = []

    def get(self, path: str, *, deadline: Deadline, params: Any = None) -> Any:
        self.calls.append((path, params))
        return self.reply

    def get_each(self, path: str, each: Any, *, deadline: Deadline, params: Any = None) -> None:
        """The lists the size of the cluster are decoded as they arrive (queries._streamed)."""
        self.calls.append((path, params))
        for item in self.reply:
            each(item)


@pytest.mark.parametrize(("call", "path", "params"), [
    (lambda c, d: queries.nodes(c, d), "/v1/nodes", None),
    (lambda c, d: queries.storage_pools(c, d, nodes=["n1"]), "/v1/view/storage-pools",
     {"nodes": ["n1"]}),
    (lambda c, d: queries.storage_pools(c, d, pools=("a", "b")), "/v1/view/storage-pools",
     {"storage_pools": ["a", "b"]}),
    (lambda c, d: queries.resource_definitions(c, d, names=["pvc-1"]),
     "/v1/resource-definitions",
     {"resource_definitions": ["pvc-1"], "with_volume_definitions": "true"}),
    (lambda c, d: queries.resource_definitions(c, d, with_volume_definitions=False),
     "/v1/resource-definitions", None),
    (lambda c, d: queries.view_resources(c, d, rds=["pvc-1"], nodes=["n1"]),
     "/v1/view/resources", {"resources": ["pvc-1"], "nodes": ["n1"]}),
    (lambda c, d: queries.resources(c, "pvc-1", d), "/v1/resource-definitions/pvc-1/resources",
     None),
    (lambda c, d: queries.view_snapshots(c, d, ["pvc-1"]), "/v1/view/snapshots",
     {"resources": ["pvc-1"]}),
    (lambda c, d: queries.snapshots(c, "pvc-1", d), "/v1/resource-definitions/pvc-1/snapshots",
     None),
])
def test_list_queries(call: Any, path: str, params: Any) -> None:
    client = RecordingClient([])
    assert call(client, Deadline(5)) == []
    assert client.calls == [(path, params)]


def test_single_object_queries() -> None:
    d = Deadline(5)
    client = RecordingClient({"name": "x", "status": "COMPLETE", "device_path": "/dev/drbd1"})
    assert queries.node(client, "n1", d).name == "x"
    assert queries.resource_group(client, "rg", d).name == "x"
    assert queries.snapshot(client, "pvc-1", "s1", d).name == "x"
    assert queries.clone_status(client, "a", "b", d).status == "COMPLETE"
    assert queries.volume(client, "pvc-1", "n1", 0, d).device_path == "/dev/drbd1"
    assert [c[0] for c in client.calls] == [
        "/v1/nodes/n1", "/v1/resource-groups/rg", "/v1/resource-definitions/pvc-1/snapshots/s1",
        "/v1/resource-definitions/a/clone/b",
        "/v1/resource-definitions/pvc-1/resources/n1/volumes/0"]
    # The undocumented single-volume GET: a one-element list is accepted as the object.
    listed = RecordingClient([{"volume_number": 0, "device_path": "/dev/drbd7"}])
    assert queries.volume(listed, "pvc-1", "n1", 0, d).device_path == "/dev/drbd7"
    assert queries.volume(RecordingClient([]), "pvc-1", "n1", 0, d).device_path == ""


# ---------------------------------------------------------------------------------------------
# Wire names and types against LINSTOR's OpenAPI spec
# ---------------------------------------------------------------------------------------------


def _resolve(node: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(component name or None, schema) of a property, following one $ref."""
    ref = node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return name, schemas()[name]
    return None, node


def _properties(name: str) -> dict[str, Any]:
    schema = schemas()[name]
    props: dict[str, Any] = {}
    for part in schema.get("allOf", []):
        if "$ref" in part:
            props.update(_properties(part["$ref"].rsplit("/", 1)[-1]))
        props.update(part.get("properties") or {})
    props.update(schema.get("properties") or {})
    return props


def _type_problem(hint: Any, prop: dict[str, Any]) -> str | None:
    """Why a field typed ``hint`` cannot hold the spec's ``prop``; None when it can."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    ref, schema = _resolve(prop)
    if isinstance(hint, type) and issubclass(hint, Model):
        return None if ref == hint.SCHEMA else f"spec refers to {ref}, model reads {hint.SCHEMA}"
    jtype = schema.get("type", "object" if "properties" in schema else None)
    if origin is tuple:
        if jtype != "array":
            return f"spec type {jtype}, model reads a list"
        return _type_problem(args[0], schema["items"])
    if origin is Mapping:
        if jtype != "object" or "properties" in schema:
            return f"spec type {jtype}, model reads a string map"
        return None
    want = {str: "string", int: "integer", float: "number", bool: "boolean"}[hint]
    return None if jtype == want else f"spec type {jtype}, model reads {want}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_wire_fields_exist_in_the_openapi_component(model: type[Model]) -> None:
    require_spec()
    assert model.SCHEMA in schemas(), f"no component {model.SCHEMA} in the spec"
    props = _properties(model.SCHEMA)
    hints = typing.get_type_hints(model)
    problems = []
    for f in dataclasses.fields(model):
        if f.name not in props:
            problems.append(f"{model.__name__}.{f.name}: no such field in {model.SCHEMA}")
            continue
        why = _type_problem(hints[f.name], props[f.name])
        if why:
            problems.append(f"{model.__name__}.{f.name}: {why}")
    assert not problems, "\n".join(problems)

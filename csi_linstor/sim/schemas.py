"""Request body allow-lists, written by hand from the request schema *names* in the REST spec.

Each request schema maps a field name to a type tag:
``i`` int, ``n`` number, ``s`` string, ``b`` bool, ``d`` string map, ``l`` list of scalars,
``o:<Schema>`` nested object, ``L:<Schema>`` list of nested objects, ``a`` anything.
A field unknown to the schema (or to the configured REST version) is a Jackson parse error.
"""

from __future__ import annotations

from typing import Any

PROPS_MODIFY = {"override_props": "d", "delete_props": "l", "delete_namespaces": "l"}

REQUEST_SCHEMAS: dict[str, dict[str, str]] = {
    "AutoSelectFilter": {
        "place_count": "i", "additional_place_count": "i", "node_name_list": "l",
        "storage_pool": "s", "storage_pool_list": "l", "storage_pool_diskless_list": "l",
        "not_place_with_rsc": "l", "not_place_with_rsc_regex": "s", "replicas_on_same": "l",
        "replicas_on_different": "l", "x_replicas_on_different_map": "a", "layer_stack": "l",
        "provider_list": "l", "diskless_on_remaining": "b", "diskless_type": "s",
        "overprovision": "n", "port_count": "i",
    },
    "ResourceGroup": {
        "name": "s", "description": "s", "props": "d", "select_filter": "o:AutoSelectFilter",
        "uuid": "s", "peer_slots": "i",
    },
    "ResourceGroupModify": {
        **PROPS_MODIFY, "description": "s", "select_filter": "o:AutoSelectFilter",
        "peer_slots": "i", "snap_names": "l", "copy_all_snaps": "b",
    },
    "ResourceGroupSpawn": {
        "resource_definition_name": "s", "resource_definition_external_name": "s",
        "volume_sizes": "l", "select_filter": "o:AutoSelectFilter", "partial": "b",
        "definitions_only": "b", "peer_slots": "i", "volume_passphrases": "l",
        "resource_definition_props": "d",
    },
    "VolumeGroup": {"volume_number": "i", "props": "d", "uuid": "s", "flags": "l"},
    "ResourceDefinitionCreate": {
        "drbd_port": "i", "drbd_secret": "s", "drbd_peer_slots": "i", "drbd_transport_type": "s",
        "resource_definition": "o:ResourceDefinition",
    },
    "ResourceDefinition": {
        "name": "s", "external_name": "s", "props": "d", "flags": "l",
        "layer_data": "L:ResourceDefinitionLayer", "uuid": "s", "resource_group_name": "s",
        "volume_definitions": "L:VolumeDefinition",
    },
    "ResourceDefinitionLayer": {"type": "s", "data": "a"},
    "ResourceDefinitionModify": {
        **PROPS_MODIFY, "drbd_port": "i", "drbd_peer_slots": "i", "layer_stack": "l",
        "resource_group": "s",
    },
    "VolumeDefinitionCreate": {
        "volume_definition": "o:VolumeDefinition", "drbd_minor_number": "i", "passphrase": "s",
    },
    "VolumeDefinition": {
        "volume_number": "i", "size_kib": "i", "props": "d", "flags": "l", "layer_data": "a",
        "uuid": "s",
    },
    "VolumeDefinitionModify": {**PROPS_MODIFY, "size_kib": "i", "flags": "l"},
    "ResourceCreate": {
        "resource": "o:Resource", "layer_list": "l", "drbd_node_id": "i",
        "drbd_tcp_port_count": "i", "drbd_tcp_ports": "l", "snap_names": "l",
        "copy_all_snaps": "b", "drbd_client": "b",
    },
    "Resource": {
        "name": "s", "node_name": "s", "props": "d", "effective_props": "a", "flags": "l",
        "layer_object": "a", "state": "a", "uuid": "s", "create_timestamp": "i",
    },
    "AutoPlaceRequest": {
        "diskless_on_remaining": "b", "select_filter": "o:AutoSelectFilter", "layer_list": "l",
        "snap_names": "l", "copy_all_snaps": "b",
    },
    "ResourceMakeAvailable": {
        "layer_list": "l", "diskful": "b", "drbd_tcp_ports": "l", "snap_names": "l",
        "copy_all_snaps": "b",
    },
    "ResourceModify": {**PROPS_MODIFY, "drbd_tiebreaker": "b", "drbd_client": "b"},
    "NodeModify": {**PROPS_MODIFY, "node_type": "s"},
    "Snapshot": {
        "name": "s", "resource_name": "s", "nodes": "l", "props": "d",
        "snapshot_definition_props": "d", "resource_definition_props": "d", "flags": "l",
        "volume_definitions": "a", "uuid": "s", "snapshots": "a",
    },
    "CreateMultiSnapshotRequest": {"snapshots": "L:Snapshot"},
    "SnapshotRestore": {"to_resource": "s", "nodes": "l", "stor_pool_rename": "d"},
    "ResourceDefinitionCloneRequest": {
        "name": "s", "external_name": "s", "use_zfs_clone": "b", "layer_list": "l",
        "volume_passphrases": "l", "resource_group": "s", **PROPS_MODIFY,
    },
    "QuerySizeInfoRequest": {
        "select_filter": "o:AutoSelectFilter", "ignore_cache_older_than_sec": "i",
    },
    "ToggleDiskDiskful": {"layer_list": "l"},
    "ToggleDiskRequest": {
        "operation": "s", "storage_pool": "s", "migrate_from": "s", "layer_list": "l",
    },
    "KeyValueStoreModify": dict(PROPS_MODIFY),
    "PassPhraseCreate": {"new_passphrase": "s", "old_passphrase": "s"},
    "ControllerPropsModify": dict(PROPS_MODIFY),
}

# Fields that only exist from a given REST API version on (so older controllers reject them),
# per LINSTOR's CHANGELOG-OPENAPI.md (linstor-server, one section per REST version).
FIELD_SINCE: dict[tuple[str, str], tuple[int, int, int]] = {
    ("AutoSelectFilter", "x_replicas_on_different_map"): (1, 23, 0),
    ("ResourceDefinitionCloneRequest", "resource_group"): (1, 24, 0),
    ("ResourceDefinitionCloneRequest", "layer_list"): (1, 24, 0),
    ("ResourceGroupSpawn", "volume_passphrases"): (1, 22, 0),
    ("ResourceGroupSpawn", "resource_definition_props"): (1, 22, 0),
    ("ResourceGroupModify", "snap_names"): (1, 26, 0),
    ("ResourceGroupModify", "copy_all_snaps"): (1, 26, 0),
    ("ResourceDefinitionCloneRequest", "override_props"): (1, 26, 0),
    ("ResourceDefinitionCloneRequest", "delete_props"): (1, 26, 0),
    ("ResourceDefinitionCloneRequest", "delete_namespaces"): (1, 26, 0),
    ("ResourceModify", "drbd_tiebreaker"): (1, 28, 0),
    ("ResourceModify", "drbd_client"): (1, 28, 0),
    ("ResourceCreate", "drbd_client"): (1, 28, 0),
}


class ParseError(Exception):
    pass


def parse_version(v: str) -> tuple[int, int, int]:
    parts = [int(p) for p in v.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def _check_scalar(tag: str, value: Any, where: str) -> None:
    ok = True
    if tag == "i":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tag == "n":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tag == "s":
        ok = isinstance(value, str)
    elif tag == "b":
        ok = isinstance(value, bool)
    elif tag == "d":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    elif tag == "l":
        ok = isinstance(value, list) and all(not isinstance(x, (dict, list)) for x in value)
    if not ok:
        raise ParseError(f"Cannot deserialize value of field '{where}'")


def check_body(schema: str, body: Any, rest_version: tuple[int, int, int],
               where: str = "") -> None:
    """Raise :class:`ParseError` for unknown fields or wrong JSON types."""
    fields = REQUEST_SCHEMAS[schema]
    if not isinstance(body, dict):
        raise ParseError(f"Cannot deserialize {schema} from non-object JSON")
    for key, value in body.items():
        tag = fields.get(key)
        since = FIELD_SINCE.get((schema, key))
        if tag is None or (since is not None and rest_version < since):
            raise ParseError(
                f'Unrecognized field "{key}" (class {schema}), not marked as ignorable')
        if value is None or tag == "a":
            continue
        path = f"{where}{key}"
        if tag.startswith("o:"):
            check_body(tag[2:], value, rest_version, path + ".")
        elif tag.startswith("L:"):
            if not isinstance(value, list):
                raise ParseError(f"Cannot deserialize value of field '{path}'")
            for item in value:
                check_body(tag[2:], item, rest_version, path + "[].")
        else:
            _check_scalar(tag, value, path)

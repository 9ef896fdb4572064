"""Typed, read-only views of the LINSTOR REST v1 objects the driver reads.

Rules every model follows (see linstor-facts.md §0):

- **Every field is optional.** The controller serialises with Jackson ``NON_EMPTY``: null values,
  empty strings, empty lists and empty maps are left out, so ``props``, ``flags`` or ``state``
  may be missing. A missing field gets an empty default (``""``, ``()``, an empty mapping, or
  ``None`` where "absent" means something different from zero, e.g. a diskless pool's capacity).
- **Unknown fields are ignored**, so a newer controller that adds fields keeps working.
- **A field of the wrong JSON type is an error** (:class:`ModelError`, INTERNAL) that names the
  object and the field, e.g. ``Resource.volumes[0].state.disk_state``, instead of a crash or a
  wrong decision somewhere later.
- Field names are LINSTOR's wire names, spelled exactly as on the wire; ``SCHEMA`` names the
  OpenAPI component each model reads, and tests/unit/test_models.py checks every field (name,
  JSON type, nested component) against the spec. Derived values are properties, not fields.
- Models are frozen: lists become tuples, maps become read-only mappings.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from csi_linstor.errors import Internal

M = TypeVar("M", bound="Model")

DISKLESS_FLAGS = ("DISKLESS", "DRBD_DISKLESS", "NVME_INITIATOR")


class ModelError(Internal):
    """A LINSTOR reply does not have the shape the REST API documents."""


def _empty_map() -> Mapping[str, Any]:
    return types.MappingProxyType({})


def _map() -> Any:
    return field(default_factory=_empty_map)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{names.get(type(value), type(value).__name__)} {text}"


def _fail(where: str, expected: str, value: Any) -> ModelError:
    return ModelError(f"malformed LINSTOR reply: {where} should be {expected}, got "
                      f"{_kind(value)}; the controller does not speak the REST API this driver "
                      "expects (check its version, or report a bug)")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "a string", value)
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise _fail(where, "an integer", value)
    return int(value)


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "a number", value)
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "a boolean", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, "a list", value)
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "an object", value)
    return value


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    str: _str, int: _int, float: _float, bool: _bool,
}


def _parser(hint: Any) -> Callable[[Any, str], Any]:
    """The function that turns the JSON value of a field with type ``hint`` into Python."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported field type {hint!r}")
        return _parser(inner[0])
    if hint in _SCALARS:
        return _SCALARS[hint]
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint._parse
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _parser(args[0])
        return lambda v, w: tuple(item(x, f"{w}[{i}]") for i, x in enumerate(_list(v, w)))
    if origin in (Mapping, dict) and args and args[0] is str:
        val = _parser(args[1])
        return lambda v, w: types.MappingProxyType(
            {_str(k, f"{w} key"): val(x, f"{w}[{k!r}]") for k, x in _object(v, w).items()})
    raise TypeError(f"unsupported field type {hint!r}")


class Model:
    """Base of every model: ``from_json`` driven by the dataclass fields and their types."""

    __slots__ = ()
    SCHEMA: ClassVar[str] = ""

    @classmethod
    def from_json(cls: type[M], data: Any) -> M:
        """Parse one JSON object; raises :class:`ModelError` naming the field that is wrong."""
        return cls._parse(data, cls.__name__)

    @classmethod
    def list_from_json(cls: type[M], data: Any) -> list[M]:
        """Parse a JSON array of objects (``None``, an empty reply, is an empty list)."""
        if data is None:
            return []
        return [cls._parse(x, f"{cls.__name__}[{i}]")
                for i, x in enumerate(_list(data, f"list of {cls.__name__}"))]

    @classmethod
    def _parse(cls: type[M], data: Any, where: str) -> M:
        obj = _object(data, where)
        kwargs = {}
        for name, parse in _plan(cls):
            value = obj.get(name)
            if value is not None:  # absent or null: the field's empty default
                kwargs[name] = parse(value, f"{where}.{name}")
        return cls(**kwargs)


@functools.cache
def _plan(cls: type[Model]) -> tuple[tuple[str, Callable[[Any, str], Any]], ...]:
    """(wire name, parser) per field; unknown wire fields are never looked at."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, _parser(hints[f.name])) for f in dataclasses.fields(cls))


MODEL = dataclass(frozen=True, slots=True)


# ---------------------------------------------------------------------------------------------
# Controller, nodes, storage pools
# ---------------------------------------------------------------------------------------------


@MODEL
class ControllerVersion(Model):
    SCHEMA: ClassVar[str] = "ControllerVersion"
    version: str = ""
    git_hash: str = ""
    build_time: str = ""
    rest_api_version: str = ""

    @property
    def rest_api(self) -> tuple[int, ...]:
        """``rest_api_version`` as a comparable tuple; () when missing or unparsable."""
        return parse_version(self.rest_api_version)


def parse_version(text: str) -> tuple[int, ...]:
    parts = text.strip().split(".") if text else []
    if not parts or not all(p.isdigit() for p in parts):
        return ()
    return tuple(int(p) for p in parts)


def format_version(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version) if version else "unknown"


@MODEL
class Node(Model):
    SCHEMA: ClassVar[str] = "Node"
    name: str = ""
    type: str = ""
    flags: tuple[str, ...] = ()
    props: Mapping[str, str] = _map()
    connection_status: str = ""

    @property
    def online(self) -> bool:
        return self.connection_status == "ONLINE"


@MODEL
class StoragePool(Model):
    SCHEMA: ClassVar[str] = "StoragePool"
    storage_pool_name: str = ""
    node_name: str = ""
    provider_kind: str = ""
    props: Mapping[str, str] = _map()
    free_capacity: int | None = None  # KiB; absent for diskless pools
    total_capacity: int | None = None  # KiB; absent for diskless pools
    supports_snapshots: bool | None = None

    @property
    def is_diskless(self) -> bool:
        return self.provider_kind == "DISKLESS"


# ---------------------------------------------------------------------------------------------
# Resource groups, resource and volume definitions
# ---------------------------------------------------------------------------------------------


@MODEL
class SelectFilter(Model):
    """AutoSelectFilter. ``as_json()`` gives it back in wire form (what the server sent)."""

    SCHEMA: ClassVar[str] = "AutoSelectFilter"
    place_count: int | None = None
    additional_place_count: int | None = None
    node_name_list: tuple[str, ...] = ()
    storage_pool: str = ""
    storage_pool_list: tuple[str, ...] = ()
    storage_pool_diskless_list: tuple[str, ...] = ()
    not_place_with_rsc: tuple[str, ...] = ()
    not_place_with_rsc_regex: str = ""
    replicas_on_same: tuple[str, ...] = ()
    replicas_on_different: tuple[str, ...] = ()
    x_replicas_on_different_map: Mapping[str, int] = _map()
    layer_stack: tuple[str, ...] = ()
    provider_list: tuple[str, ...] = ()
    diskless_on_remaining: bool | None = None
    diskless_type: str = ""
    overprovision: float | None = None
    port_count: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The filter as a JSON object, empty fields left out (as LINSTOR sends it)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (isinstance(value, (str, tuple, Mapping)) and not value):
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


@MODEL
class ResourceGroup(Model):
    SCHEMA: ClassVar[str] = "ResourceGroup"
    name: str = ""
    description: str = ""
    props: Mapping[str, str] = _map()
    select_filter: SelectFilter = field(default_factory=SelectFilter)


@MODEL
class VolumeDefinition(Model):
    SCHEMA: ClassVar[str] = "VolumeDefinition"
    volume_number: int | None = None
    size_kib: int = 0
    props: Mapping[str, str] = _map()
    flags: tuple[str, ...] = ()


@MODEL
class ResourceDefinition(Model):
    SCHEMA: ClassVar[str] = "ResourceDefinition"
    name: str = ""
    external_name: str = ""
    props: Mapping[str, str] = _map()
    flags: tuple[str, ...] = ()
    resource_group_name: str = ""
    volume_definitions: tuple[VolumeDefinition, ...] = ()

    def volume_definition(self, vnr: int = 0) -> VolumeDefinition | None:
        return next((vd for vd in self.volume_definitions if vd.volume_number == vnr), None)


# ---------------------------------------------------------------------------------------------
# Resources and their volumes
# ---------------------------------------------------------------------------------------------


@MODEL
class VolumeState(Model):
    SCHEMA: ClassVar[str] = "VolumeState"
    disk_state: str = ""


@MODEL
class VolumeLayer(Model):
    SCHEMA: ClassVar[str] = "VolumeLayer"
    type: str = ""


@MODEL
class Volume(Model):
    SCHEMA: ClassVar[str] = "Volume"
    volume_number: int | None = None
    storage_pool_name: str = ""
    provider_kind: str = ""
    device_path: str = ""
    allocated_size_kib: int | None = None
    usable_size_kib: int | None = None
    props: Mapping[str, str] = _map()
    flags: tuple[str, ...] = ()
    state: VolumeState | None = None  # absent while the satellite has not reported
    layer_data_list: tuple[VolumeLayer, ...] = ()

    @property
    def disk_state(self) -> str:
        """DRBD disk state (``UpToDate``, ``Diskless``, ...); "" when not reported."""
        return self.state.disk_state if self.state is not None else ""

    @property
    def top_layer(self) -> str:
        """Type of the top of the layer stack (``DRBD``, ``LUKS``, ``STORAGE`` ...) or ""."""
        return self.layer_data_list[0].type if self.layer_data_list else ""


@MODEL
class ResourceState(Model):
    SCHEMA: ClassVar[str] = "ResourceState"
    in_use: bool | None = None


@MODEL
class Resource(Model):
    """A resource (replica or attachment) on one node; with ``volumes`` from the view endpoint."""

    SCHEMA: ClassVar[str] = "ResourceWithVolumes"
    name: str = ""
    node_name: str = ""
    props: Mapping[str, str] = _map()
    flags: tuple[str, ...] = ()
    state: ResourceState | None = None  # absent: the satellite is offline or not reporting
    volumes: tuple[Volume, ...] = ()

    @property
    def reported(self) -> bool:
        """Whether LINSTOR has state from the satellite (absent state means unknown)."""
        return self.state is not None

    @property
    def in_use(self) -> bool:
        return self.state is not None and self.state.in_use is True

    @property
    def is_diskless(self) -> bool:
        return any(f in self.flags for f in DISKLESS_FLAGS)

    @property
    def is_tiebreaker(self) -> bool:
        return "TIE_BREAKER" in self.flags

    @property
    def deleting(self) -> bool:
        return "DELETE" in self.flags

    def volume(self, vnr: int = 0) -> Volume | None:
        return next((v for v in self.volumes if v.volume_number == vnr), None)

    def device_path(self, vnr: int = 0) -> str:
        vol = self.volume(vnr)
        return vol.device_path if vol is not None else ""

    @property
    def top_layer(self) -> str:
        """Top layer type of the first volume that reports a layer stack, or ""."""
        return next((v.top_layer for v in self.volumes if v.layer_data_list), "")

    @property
    def healthy(self) -> bool:
        """State reported and every volume UpToDate."""
        return self.reported and all(v.disk_state == "UpToDate" for v in self.volumes)


# ---------------------------------------------------------------------------------------------
# Snapshots and clones
# ---------------------------------------------------------------------------------------------


@MODEL
class SnapshotVolumeDefinition(Model):
    SCHEMA: ClassVar[str] = "SnapshotVolumeDefinition"
    volume_number: int | None = None
    size_kib: int = 0
    volume_definition_props: Mapping[str, str] = _map()  # the VD's, copied at the snapshot


@MODEL
class SnapshotNode(Model):
    SCHEMA: ClassVar[str] = "SnapshotNode"
    snapshot_name: str = ""
    node_name: str = ""
    create_timestamp: int | None = None  # ms since the epoch
    flags: tuple[str, ...] = ()


@MODEL
class Snapshot(Model):
    SCHEMA: ClassVar[str] = "Snapshot"
    name: str = ""
    resource_name: str = ""
    nodes: tuple[str, ...] = ()
    props: Mapping[str, str] = _map()  # deprecated spelling of snapshot_definition_props
    snapshot_definition_props: Mapping[str, str] = _map()
    resource_definition_props: Mapping[str, str] = _map()  # the RD's, copied at the snapshot
    flags: tuple[str, ...] = ()
    volume_definitions: tuple[SnapshotVolumeDefinition, ...] = ()
    snapshots: tuple[SnapshotNode, ...] = ()

    @property
    def definition_props(self) -> Mapping[str, str]:
        """The snapshot definition's props, whichever spelling the controller used."""
        return self.snapshot_definition_props or self.props

    def size_kib(self, vnr: int = 0) -> int:
        return next((vd.size_kib for vd in self.volume_definitions
                     if vd.volume_number == vnr), 0)

    @property
    def created_ms(self) -> int:
        """Earliest per-node creation time (ms), 0 when no node reports one."""
        stamps = [s.create_timestamp for s in self.snapshots if s.create_timestamp]
        return min(stamps) if stamps else 0

    @property
    def successful(self) -> bool:
        return "SUCCESSFUL" in self.flags

    @property
    def failed(self) -> bool:
        return "FAILED_DEPLOYMENT" in self.flags or "FAILED_DISCONNECT" in self.flags

    @property
    def deleting(self) -> bool:
        return "DELETE" in self.flags


@MODEL
class CloneStatus(Model):
    SCHEMA: ClassVar[str] = "ResourceDefinitionCloneStatus"
    status: str = ""  # CLONING, COMPLETE or FAILED


MODELS: tuple[type[Model], ...] = (
    ControllerVersion, Node, StoragePool, SelectFilter, ResourceGroup, VolumeDefinition,
    ResourceDefinition, VolumeState, VolumeLayer, Volume, ResourceState, Resource,
    SnapshotVolumeDefinition, SnapshotNode, Snapshot, CloneStatus,
)


def snapshot_props_fields(props: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The fields carrying a new snapshot's definition props in a snapshot create request (one
    snapshot, or each of /v1/actions/snapshot/multi). LINSTOR 1.33 reads only
    ``snapshot_definition_props`` (rest/v1/Snapshots.createSnapshot, Actions: multi) and ignores
    ``props``, its deprecated spelling, which older controllers read: both are sent."""
    return {"snapshot_definition_props": dict(props), "props": dict(props)}

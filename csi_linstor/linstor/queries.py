"""Typed reads: one function per LINSTOR GET the driver uses, each returning models.

Every function is exactly one REST call (the driver's call budgets count them). Errors are the
client's: a missing object raises ``LinstorError`` whose ``is_not_found()`` is true; a reply of
the wrong shape raises ``models.ModelError``. Name filters repeat the query parameter
(``?nodes=a&nodes=b``), as LINSTOR expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from csi_linstor.deadline import Deadline
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import (
    CloneStatus,
    Model,
    Node,
    Resource,
    ResourceDefinition,
    ResourceGroup,
    Snapshot,
    StoragePool,
    Volume,
    VolumeDefinition,
)

M = TypeVar("M", bound=Model)


def _streamed(client: LinstorClient, path: str, model: type[M], deadline: Deadline,
              params: dict[str, Any] | None) -> list[M]:
    """A list reply parsed into models element by element as it arrives
    (``LinstorClient.get_each``): for lists the size of the cluster, whose decoded JSON would
    otherwise be held whole next to the models (the snapshot view of 10,000 snapshots: 17 MB of
    JSON, about 45 MiB more at the peak than its models)."""
    out: list[M] = []
    client.get_each(path, lambda item: out.append(model.from_json(item)), deadline=deadline,
                    params=params)
    return out


def _filters(**names: Sequence[str] | None) -> dict[str, Any] | None:
    params = {key: list(value) for key, value in names.items() if value is not None}
    return params or None


def nodes(client: LinstorClient, deadline: Deadline,
          names: Sequence[str] | None = None) -> list[Node]:
    """``GET /v1/nodes``, optionally only the named nodes."""
    return Node.list_from_json(client.get("/v1/nodes", deadline=deadline,
                                          params=_filters(nodes=names)))


def node(client: LinstorClient, name: str, deadline: Deadline) -> Node:
    """``GET /v1/nodes/{node}``; a missing node raises LinstorError (NOT_FOUND)."""
    return Node.from_json(client.get(f"/v1/nodes/{name}", deadline=deadline))


def storage_pools(client: LinstorClient, deadline: Deadline, nodes: Sequence[str] | None = None,
                  pools: Sequence[str] | None = None) -> list[StoragePool]:
    """``GET /v1/view/storage-pools``, optionally filtered by node and pool names."""
    return StoragePool.list_from_json(client.get(
        "/v1/view/storage-pools", deadline=deadline,
        params=_filters(nodes=nodes, storage_pools=pools)))


def resource_group(client: LinstorClient, name: str, deadline: Deadline) -> ResourceGroup:
    """``GET /v1/resource-groups/{rg}``; a missing group raises LinstorError (NOT_FOUND)."""
    return ResourceGroup.from_json(client.get(f"/v1/resource-groups/{name}", deadline=deadline))


def resource_definitions(client: LinstorClient, deadline: Deadline,
                         names: Sequence[str] | None = None,
                         with_volume_definitions: bool = True) -> list[ResourceDefinition]:
    """``GET /v1/resource-definitions``, with their volume definitions unless told otherwise."""
    params: dict[str, Any] = _filters(resource_definitions=names) or {}
    if with_volume_definitions:
        params["with_volume_definitions"] = "true"
    if names is not None:  # a few objects: decoded whole, the cheaper path in CPU
        return ResourceDefinition.list_from_json(client.get(
            "/v1/resource-definitions", deadline=deadline, params=params or None))
    return _streamed(client, "/v1/resource-definitions", ResourceDefinition, deadline,
                     params or None)


def view_resources(client: LinstorClient, deadline: Deadline, rds: Sequence[str] | None = None,
                   nodes: Sequence[str] | None = None,
                   props: Sequence[str] | None = None) -> list[Resource]:
    """``GET /v1/view/resources``: resources with their volumes, device paths and state.

    ``props``: only resources whose own properties match every entry (``Key`` = the key is
    present, ``Key=Value`` = exactly that value; LINSTOR's ReadOnlyProps.contains, applied by
    CtrlVlmListApiCallHandler before the reply is built).
    """
    return Resource.list_from_json(client.get(
        "/v1/view/resources", deadline=deadline,
        params=_filters(resources=rds, nodes=nodes, props=props)))


def each_view_resource(client: LinstorClient, deadline: Deadline,
                       each: Callable[[Any], None]) -> None:
    """``GET /v1/view/resources`` of the whole cluster, each resource's JSON handed to ``each``
    as the reply arrives (``LinstorClient.get_each``): for reductions that must not hold it."""
    client.get_each("/v1/view/resources", each, deadline=deadline)


def resources(client: LinstorClient, rd: str, deadline: Deadline) -> list[Resource]:
    """``GET /v1/resource-definitions/{rd}/resources``."""
    return Resource.list_from_json(client.get(f"/v1/resource-definitions/{rd}/resources",
                                              deadline=deadline))


def volume_definition(client: LinstorClient, rd: str, vnr: int,
                      deadline: Deadline) -> VolumeDefinition:
    """``GET /v1/resource-definitions/{rd}/volume-definitions/{vnr}``."""
    return VolumeDefinition.from_json(client.get(
        f"/v1/resource-definitions/{rd}/volume-definitions/{vnr}", deadline=deadline))


def volume(client: LinstorClient, rd: str, node: str, vnr: int, deadline: Deadline) -> Volume:
    """``GET /v1/resource-definitions/{rd}/resources/{node}/volumes/{vnr}``.

    The endpoint is undocumented; it answers the object itself, but a one-element list is
    accepted too (an empty list or reply is a volume without fields).
    """
    data = client.get(f"/v1/resource-definitions/{rd}/resources/{node}/volumes/{vnr}",
                      deadline=deadline)
    if isinstance(data, list):
        data = data[0] if data else None
    return Volume.from_json(data if data is not None else {})


def view_snapshots(client: LinstorClient, deadline: Deadline,
                   resources: Sequence[str] | None = None) -> list[Snapshot]:
    """``GET /v1/view/snapshots``: every snapshot, or those of the named resource definitions.

    LINSTOR filters this view by ``resources`` and ``nodes`` only (View.listSnapshots); a
    ``snapshots=`` parameter is ignored and would download every snapshot in the cluster.
    """
    if resources is not None:  # the snapshots of a few RDs: decoded whole, cheaper in CPU
        return Snapshot.list_from_json(client.get("/v1/view/snapshots", deadline=deadline,
                                                  params=_filters(resources=resources)))
    return _streamed(client, "/v1/view/snapshots", Snapshot, deadline, None)


def snapshots(client: LinstorClient, rd: str, deadline: Deadline) -> list[Snapshot]:
    """``GET /v1/resource-definitions/{rd}/snapshots``."""
    return Snapshot.list_from_json(client.get(f"/v1/resource-definitions/{rd}/snapshots",
                                              deadline=deadline))


def snapshot(client: LinstorClient, rd: str, name: str, deadline: Deadline) -> Snapshot:
    """``GET /v1/resource-definitions/{rd}/snapshots/{snap}``; missing → LinstorError."""
    return Snapshot.from_json(client.get(f"/v1/resource-definitions/{rd}/snapshots/{name}",
                                         deadline=deadline))


def clone_status(client: LinstorClient, src: str, dst: str, deadline: Deadline) -> CloneStatus:
    """``GET /v1/resource-definitions/{src}/clone/{dst}``; an unknown clone → LinstorError."""
    data = client.get(f"/v1/resource-definitions/{src}/clone/{dst}", deadline=deadline)
    return CloneStatus.from_json(data if data is not None else {})

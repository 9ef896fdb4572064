"""Idempotent volume operations on LINSTOR: the only place that knows the CSI → LINSTOR mapping.

A CSI volume is a LINSTOR resource definition (RD) in the StorageClass's resource group (RG), with
one volume definition (VD 0). What later RPCs need is stored on the RD as ``Aux/`` properties:

- ``Aux/csi-provisioning-completed-by`` the "done" marker (value starts with ``linstor-csi`` so
  LINBIT's Go driver recognises our volumes too); absent while a multi-step create is underway;
- ``Aux/csi-volume-name`` the CSI request name (ownership and idempotency check);
- ``Aux/csi-access-type`` ``mount``/``block``, ``Aux/csi-fs-type``;
- ``Aux/csi-content-source`` ``snapshot:<id>`` / ``volume:<id>``;
- ``Aux/csi-deleted`` set by DeleteVolume on an RD LINSTOR must keep because it has snapshots:
  the volume is gone for every RPC; DeleteSnapshot removes the RD with its last snapshot.
- ``Aux/csi-clone-via-snapshot`` ``<source>/<snapshot>`` on a clone made through a temporary
  snapshot (pools LINSTOR cannot clone, e.g. FILE_THIN); the snapshot carries
  ``Aux/csi-clone-for`` = the clone, is hidden from ListSnapshots and deleted before the clone
  gets its done marker (or, when the clone was abandoned, when the source is deleted).

Create is one ``spawn`` (RD + VD + placement, atomic in LINSTOR, with the props): a retry finds
nothing or a complete RD. Multi-step creates (preferred topology with several replicas, manual
lists, restore, clone) leave the done marker for last and resume from what they find.

Operations that create or change volumes first check the controller's REST API version once
(``linstor.versions``): below 1.22.0 they fail with FAILED_PRECONDITION before writing anything.
Deletes, detaches and reads are not gated, so volumes can still be cleaned up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from csi_linstor import __version__, ids
from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    AlreadyExists,
    CsiError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from csi_linstor.linstor import consts, queries, versions
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import (
    Resource,
    ResourceDefinition,
    Snapshot,
    snapshot_props_fields,
)
from csi_linstor.nodeops import fs as nodeops_fs
from csi_linstor.params import ANYWHERE, RemoteAccessPolicy, VolumeParameters, prune_patterns
from csi_linstor.topology import NodeIndex

log = logging.getLogger("csi_linstor.volumes")

PROP_DONE = "Aux/csi-provisioning-completed-by"
PROP_NAME = "Aux/csi-volume-name"
PROP_ACCESS = "Aux/csi-access-type"
# A filesystem volume cloned or restored from a raw block volume: its data may have no
# signature, so the node mounts a filesystem it finds there but never formats it.
PROP_FROM_BLOCK = "Aux/csi-from-raw-block"
PROP_FS = "Aux/csi-fs-type"
PROP_SOURCE = "Aux/csi-content-source"
PROP_DELETED = "Aux/csi-deleted"
PROP_CLONE_VIA = "Aux/csi-clone-via-snapshot"  # "<source rd>/<temporary snapshot>"
PROP_CLONE_FOR = "Aux/csi-clone-for"  # on a temporary snapshot: the clone it is taken for
PROP_PVC_NAME = "Aux/csi.storage.k8s.io/pvc/name"
PROP_PVC_NAMESPACE = "Aux/csi.storage.k8s.io/pvc/namespace"
# Set by LINBIT's driver on the shared RD of a consistency group (value "<namespace>/<group>").
PROP_CONSISTENCY_GROUP = "Aux/linstor.csi.linbit.com/consistency-group"
DONE_VALUE = f"linstor-csi/csi-linstor-{__version__}"

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_SIZE = GIB
MIN_SIZE = {"block": 4 * KIB, "ext4": 2 * MIB, "xfs": 300 * MIB}
# Exactly what the node side can format, grow and check: a volume with another filesystem
# would be created and then never mount.
FS_TYPES = nodeops_fs.SUPPORTED

BAD_RESOURCE_FLAGS = ("DELETE", "FAILED_DEPLOYMENT", "FAILED_DISCONNECT")
# Props a clone copies from its source that say whose volume an RD is (see _unfixed_clone).
CLONED_OWNER_PROPS = (PROP_NAME, PROP_DONE, PROP_SOURCE, PROP_ACCESS, PROP_FS, PROP_PVC_NAME,
                      PROP_PVC_NAMESPACE)
# Source props a copy (clone, restore) must not keep unless it sets them itself.
COPIED_PROPS_TO_DROP = (PROP_DONE, PROP_PVC_NAME, PROP_PVC_NAMESPACE, PROP_SOURCE, PROP_FS,
                        PROP_DELETED, PROP_FROM_BLOCK, PROP_CLONE_VIA)


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    kind: str  # "snapshot" or "volume"
    id: str

    def render(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass
class CreateSpec:
    name: str
    rd: str
    required_bytes: int
    limit_bytes: int
    access_type: str  # "mount" or "block"
    fs_type: str  # "" for block
    params: VolumeParameters
    requisite: list[dict[str, str]] = field(default_factory=list)
    preferred: list[dict[str, str]] = field(default_factory=list)
    source: Source | None = None
    mutable_count: int | None = None
    mutable_props: dict[str, str] = field(default_factory=dict)
    from_raw_block: bool = False  # set by create() from the source


@dataclass
class Volume:
    id: str
    size_kib: int
    resource_group: str
    props: dict[str, str]
    flags: list[str]

    @property
    def capacity_bytes(self) -> int:
        return self.size_kib * KIB

    @property
    def access_type(self) -> str:
        return self.props.get(PROP_ACCESS, "mount")

    @property
    def fs_type(self) -> str:
        return self.props.get(PROP_FS, "")

    @property
    def complete(self) -> bool:
        return self.props.get(PROP_DONE, "").startswith("linstor-csi")


class _Exists(Exception):
    """The resource definition a create wanted to make exists already."""


def round_kib(value: int) -> int:
    return -(-value // KIB)


def allocation_kib(required: int, limit: int, min_bytes: int, floor_bytes: int = 0) -> int:
    """LINSTOR size in KiB for a capacity range; OUT_OF_RANGE when impossible."""
    if required < 0 or limit < 0:
        raise OutOfRange("capacity_range bytes must not be negative")
    if required and limit and required > limit:
        raise OutOfRange(f"capacity_range required_bytes {required} exceeds limit_bytes {limit}")
    want = required or (min(DEFAULT_SIZE, limit) if limit else DEFAULT_SIZE)
    want = max(want, min_bytes, floor_bytes)
    kib = round_kib(want)
    if limit and kib * KIB > limit:
        raise OutOfRange(
            f"the smallest possible volume ({kib * KIB} bytes: at least {min_bytes} bytes for "
            f"this filesystem{', and the source size' if floor_bytes else ''}, in whole KiB) "
            f"exceeds limit_bytes {limit}")
    return kib


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------


class Volumes:
    def __init__(self, client: LinstorClient, property_namespace: str = "Aux",
                 poll_interval: float = 0.5) -> None:
        self.client = client
        self.ns = property_namespace
        self.poll_interval = poll_interval
        self._known_rgs: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        # S3/Linstor snapshot ids -> a local snapshot (set by Snapshots: backups.materialize)
        self.remote_snapshots: Any = None

    # -- lookups ------------------------------------------------------------------------------

    def find(self, rd: str, deadline: Deadline, *, include_deleted: bool = False) -> Volume | None:
        """The volume ``rd`` (one REST call), or None when missing or deleted."""
        if not ids.is_valid_name(rd):
            return None
        for item in queries.resource_definitions(self.client, deadline, names=[rd]):
            if item.name.upper() == rd.upper():
                vol = self._volume(item)
                if vol.props.get(PROP_DELETED) and not include_deleted:
                    return None
                return vol
        return None

    def require(self, rd: str, deadline: Deadline) -> Volume:
        vol = self.find(rd, deadline)
        if vol is None:
            raise NotFound(f"volume {rd} does not exist")
        return vol

    @staticmethod
    def _volume(item: ResourceDefinition) -> Volume:
        vd = item.volume_definition(0)
        return Volume(id=item.name, size_kib=vd.size_kib if vd is not None else 0,
                      resource_group=item.resource_group_name,
                      props=dict(item.props), flags=list(item.flags))

    def list(self, deadline: Deadline) -> list[Volume]:
        """Every complete, not deleted, not cloning volume this driver created, sorted by id."""
        out = []
        for item in queries.resource_definitions(self.client, deadline):
            vol = self._volume(item)
            if not vol.complete or vol.props.get(PROP_DELETED) or "CLONING" in vol.flags:
                continue
            if item.volume_definition(0) is None:
                continue
            out.append(vol)
        return sorted(out, key=lambda v: v.id)

    def resources(self, rd: str | None, deadline: Deadline,
                  node: str | None = None) -> list[Resource]:
        return queries.view_resources(self.client, deadline,
                                      rds=[rd] if rd is not None else None,
                                      nodes=[node] if node is not None else None)

    # -- resource groups ----------------------------------------------------------------------

    def ensure_resource_group(self, p: VolumeParameters, deadline: Deadline,
                              force: bool = False) -> None:
        """Make sure the class's RG exists and carries the class's properties.

        Placement does not depend on the RG's select filter: every spawn and autoplace sends
        the class's own filter, whose fields win over the RG's (LINSTOR merges them field by
        field, ``AutoSelectFilterPojo.merge``). So two classes naming one ``resourceGroup``
        with different counts, or an admin editing the RG, never change what a class places;
        the RG's filter is only written when the RG is created (for ``linstor rg spawn`` and
        LINBIT's driver). Properties cannot be per volume: missing ones are added, a conflict
        is INVALID_ARGUMENT. Confirmed (name, properties) pairs are cached per process.
        """
        name = p.resource_group
        if not force and _rg_key(p) in self._known_rgs:
            return
        want_filter = p.select_filter()
        versions.check_select_filter(self.client, want_filter, deadline)
        want_props = p.props
        try:
            rg = queries.resource_group(self.client, name, deadline)
        except LinstorError as err:
            if not err.is_not_found():
                raise
            body: dict[str, Any] = {"name": name, "select_filter": want_filter}
            if want_props:
                body["props"] = want_props
            try:
                self.client.post("/v1/resource-groups", deadline=deadline, body=body)
            except LinstorError as cerr:
                if cerr.has(consts.FAIL_INVLD_PROP):
                    raise InvalidArgument(f"StorageClass property rejected by LINSTOR: "
                                          f"{cerr.message}") from cerr
                if not cerr.has(consts.FAIL_EXISTS_RSC_GRP):
                    raise
                return self.ensure_resource_group(p, deadline, force=True)
            self._known_rgs.add(_rg_key(p))
            return
        have_props = rg.props
        add_props = {}
        for key, value in want_props.items():
            if key not in have_props:
                add_props[key] = value
            elif have_props[key] != value:
                raise InvalidArgument(
                    f"resource group {name} already has property {key}={have_props[key]!r} but "
                    f"the StorageClass asks for {value!r}; properties of an existing resource "
                    "group are never changed: fix the class or the resource group")
        if add_props:
            self.client.put(f"/v1/resource-groups/{name}", deadline=deadline,
                            body={"override_props": add_props})
        self._known_rgs.add(_rg_key(p))

    def _group_count(self, p: VolumeParameters, deadline: Deadline) -> VolumeParameters:
        """``placementCount: 0`` (accepted as LINBIT's driver does) leaves the count to the
        resource group: read it, so that every later step places that many replicas."""
        self.ensure_resource_group(p, deadline)
        count = queries.resource_group(self.client, p.resource_group, deadline) \
            .select_filter.place_count
        if not count:
            raise InvalidArgument(
                f"placementCount is 0, which leaves the replica count to resource group "
                f"{p.resource_group}, but that group sets no place_count; set placementCount in "
                f"the StorageClass or `linstor resource-group modify {p.resource_group} "
                "--place-count N`")
        return replace(p, placement_count=count)

    def forget_resource_group(self, name: str) -> None:
        self._known_rgs = {k for k in self._known_rgs if k[0] != name.upper()}

    def require_supported(self, deadline: Deadline) -> None:
        """FAILED_PRECONDITION when the controller's REST API is too old (checked once)."""
        versions.require_supported(self.client, deadline)

    # -- create -------------------------------------------------------------------------------

    def props_for(self, spec: CreateSpec, done: bool) -> dict[str, str]:
        props = {PROP_NAME: spec.name, PROP_ACCESS: spec.access_type}
        if spec.fs_type:
            props[PROP_FS] = spec.fs_type
        if spec.source is not None:
            props[PROP_SOURCE] = spec.source.render()
        if spec.from_raw_block and spec.access_type == "mount":
            props[PROP_FROM_BLOCK] = "true"
        if spec.params.pvc_name:
            props[PROP_PVC_NAME] = spec.params.pvc_name
        if spec.params.pvc_namespace:
            props[PROP_PVC_NAMESPACE] = spec.params.pvc_namespace
        props.update(spec.mutable_props)
        if done:
            props[PROP_DONE] = DONE_VALUE
        return props

    def create(self, spec: CreateSpec, deadline: Deadline, call_log: Any = log) -> Volume:
        """CreateVolume: idempotent by name; resumes an interrupted multi-step create."""
        self.require_supported(deadline)
        if spec.params.placement_count == 0 and not spec.params.manual \
                and spec.mutable_count is None:
            spec.params = self._group_count(spec.params, deadline)
        p = spec.params
        floor = 0
        snap_info: Snapshot | None = None
        src_vol: Volume | None = None
        if spec.source is not None and spec.source.kind == "snapshot":
            snap_info = self._source_snapshot(spec.source.id, deadline)
            floor = snap_info.size_kib(0) * KIB
            origin = snap_info.resource_definition_props
            spec.from_raw_block = (origin.get(PROP_ACCESS) == "block"
                                   or origin.get(PROP_FROM_BLOCK) == "true")
        elif spec.source is not None:
            src_vol = self.find(spec.source.id, deadline)
            if src_vol is None or not src_vol.complete:
                raise NotFound(f"source volume {spec.source.id} does not exist")
            floor = src_vol.capacity_bytes
            spec.from_raw_block = (src_vol.access_type == "block"
                                   or src_vol.props.get(PROP_FROM_BLOCK) == "true")
        min_bytes = MIN_SIZE.get(spec.fs_type or "block", 2 * MIB)
        if floor and spec.required_bytes and spec.required_bytes < floor:
            raise OutOfRange(f"the requested size {spec.required_bytes} bytes is smaller than the "
                             f"source ({floor} bytes); request at least the source's size")
        kib = allocation_kib(spec.required_bytes, spec.limit_bytes, min_bytes, floor)

        if spec.source is not None:
            existing = self.find(spec.rd, deadline, include_deleted=True)
            if existing is not None:
                return self._resume(spec, existing, kib, snap_info, src_vol, deadline, call_log)
            self.ensure_resource_group(p, deadline)
            if snap_info is not None:
                return self._restore(spec, kib, snap_info, deadline, fresh=True)
            assert src_vol is not None
            return self._clone(spec, kib, src_vol, deadline, fresh=True)
        # The common case costs one REST call: spawn, and look only when the name is taken.
        self.ensure_resource_group(p, deadline)
        try:
            return self._spawn(spec, kib, deadline)
        except _Exists:
            existing = self.find(spec.rd, deadline, include_deleted=True)
            if existing is None:
                raise Aborted(f"volume {spec.rd} appeared and vanished concurrently; retry") \
                    from None
            return self._resume(spec, existing, kib, snap_info, src_vol, deadline, call_log)

    def _check_compatible(self, spec: CreateSpec, vol: Volume, kib: int) -> None:
        if vol.props.get(PROP_DELETED):
            raise FailedPrecondition(
                f"volume {spec.rd} was deleted but LINSTOR keeps its resource definition for "
                "its snapshots; delete those snapshots or use another name")
        owner = vol.props.get(PROP_NAME)
        if owner is None and not vol.complete:
            raise AlreadyExists(f"LINSTOR resource definition {spec.rd} exists and was not "
                                "created by this driver; use another name")
        if owner is not None and owner != spec.name:
            raise AlreadyExists(f"volume id {spec.rd} is taken by the volume named {owner!r}")
        if vol.resource_group.upper() != spec.params.resource_group.upper():
            raise AlreadyExists(
                f"volume {spec.name} exists in resource group {vol.resource_group}, but the "
                f"request's parameters map to {spec.params.resource_group}")
        if vol.access_type != spec.access_type:
            raise AlreadyExists(f"volume {spec.name} exists as a {vol.access_type} volume, the "
                                f"request asks for {spec.access_type}")
        if spec.fs_type and vol.fs_type and vol.fs_type != spec.fs_type:
            raise AlreadyExists(f"volume {spec.name} exists with filesystem {vol.fs_type}, the "
                                f"request asks for {spec.fs_type}")
        have_source = vol.props.get(PROP_SOURCE, "")
        want_source = spec.source.render() if spec.source else ""
        if have_source != want_source:
            raise AlreadyExists(f"volume {spec.name} exists with content source "
                                f"{have_source or 'none'}, the request asks for "
                                f"{want_source or 'none'}")
        if vol.size_kib and vol.complete:  # an unfinished create is grown when it resumes
            size = vol.size_kib * KIB
            if size < spec.required_bytes or (spec.limit_bytes and size > spec.limit_bytes):
                raise AlreadyExists(f"volume {spec.name} exists with {size} bytes, outside the "
                                    f"requested range [{spec.required_bytes}, "
                                    f"{spec.limit_bytes or 'unlimited'}]")

    def _resume(self, spec: CreateSpec, vol: Volume, kib: int, snap_info: Snapshot | None,
                src_vol: Volume | None, deadline: Deadline, call_log: Any) -> Volume:
        if src_vol is not None and vol.props.get(PROP_CLONE_VIA) \
                and _restored_over(spec, vol, src_vol.props):
            # restored from the temporary snapshot, which replaced our props with the source's
            call_log.info("resuming the clone of %s into %s: reclaiming its properties",
                          src_vol.id, spec.rd)
            self.ensure_resource_group(spec.params, deadline)
            self._reclaim_props(spec, src_vol.props, deadline, self._clone_via_props(spec, src_vol))
            return self._clone_via_snapshot(spec, kib, src_vol, deadline, fresh=False)
        if src_vol is not None and _unfixed_clone(spec, vol, src_vol):
            call_log.info("resuming the clone of %s into %s: setting its properties",
                          src_vol.id, spec.rd)
            self.ensure_resource_group(spec.params, deadline)
            self._set_clone_props(spec, src_vol, deadline)
            return self._clone(spec, kib, src_vol, deadline, fresh=False)
        if snap_info is not None and _restored_over(spec, vol,
                                                    snap_info.resource_definition_props):
            call_log.info("resuming the restore of %s/%s into %s: reclaiming its properties",
                          snap_info.resource_name, snap_info.name, spec.rd)
            self.ensure_resource_group(spec.params, deadline)
            self._reclaim_props(spec, snap_info.resource_definition_props, deadline)
            return self._restore(spec, kib, snap_info, deadline, fresh=False)
        self._check_compatible(spec, vol, kib)
        if vol.complete:
            return vol
        call_log.info("resuming the interrupted creation of volume %s", spec.rd)
        self.ensure_resource_group(spec.params, deadline)
        if src_vol is not None and vol.props.get(PROP_CLONE_VIA):
            return self._clone_via_snapshot(spec, kib, src_vol, deadline, fresh=False)
        if snap_info is not None:
            return self._restore(spec, kib, snap_info, deadline, fresh=False)
        if src_vol is not None:
            return self._clone(spec, kib, src_vol, deadline, fresh=False)
        self._place(spec, deadline)
        return self._finish(spec, deadline)

    def _finish(self, spec: CreateSpec, deadline: Deadline) -> Volume:
        self.client.put(f"/v1/resource-definitions/{spec.rd}", deadline=deadline,
                        body={"override_props": {PROP_DONE: DONE_VALUE}})
        vol = self.find(spec.rd, deadline)
        if vol is None:
            raise Aborted(f"volume {spec.rd} vanished while it was being created; retry")
        return vol

    # placement ------------------------------------------------------------------------------

    def _constraint(self, spec: CreateSpec, nodes: NodeIndex) -> list[str] | None:
        """Nodes replicas must be on (requisite under the remote-access policy); None = any."""
        if not spec.requisite:
            return None
        policy = spec.params.remote_access
        widened: list[dict[str, str]] = []
        for seg in spec.requisite:
            widened.extend(policy.accessible_segments(seg))
        widened = prune_patterns(widened)
        if any(not seg for seg in widened):
            return None
        return nodes.matching(widened)

    def _preferred_node(self, spec: CreateSpec, nodes: NodeIndex,
                        allowed: list[str] | None) -> str | None:
        if spec.params.placement_policy == "AutoPlace":
            return None
        for seg in spec.preferred:
            for node in nodes.matching([seg]):
                if allowed is None or node.upper() in {a.upper() for a in allowed}:
                    return node
        return None

    def _place_filter(self, spec: CreateSpec, allowed: list[str] | None) -> dict[str, Any]:
        """The class's own select filter (see ensure_resource_group), narrowed to ``allowed``."""
        sf = spec.params.select_filter()
        if spec.mutable_count is not None:
            sf["place_count"] = spec.mutable_count
        if allowed is not None:
            if not allowed:
                raise ResourceExhausted("no LINSTOR node lies in the requested topology "
                                        f"{spec.requisite}")
            sf["node_name_list"] = list(allowed)
        return sf

    def _spawn(self, spec: CreateSpec, kib: int, deadline: Deadline) -> Volume:
        p = spec.params
        if p.manual:
            self._spawn_call(spec, kib, {}, deadline, definitions_only=True)
            self._place(spec, deadline)
            return self._finish(spec, deadline)
        nodes = NodeIndex(self.client, self.ns, deadline)
        allowed = self._constraint(spec, nodes)
        preferred = self._preferred_node(spec, nodes, allowed)
        count = spec.mutable_count or p.placement_count
        if preferred is None:
            sf = self._place_filter(spec, allowed)
            self._spawn_call(spec, kib, sf, deadline, definitions_only=False)
            return self._spawned(spec, kib)
        if count == 1:
            sf = self._place_filter(spec, [preferred])
            try:
                self._spawn_call(spec, kib, sf, deadline, definitions_only=False)
                return self._spawned(spec, kib)
            except ResourceExhausted:
                pass  # the preferred node cannot hold it: anywhere allowed
            self._spawn_call(spec, kib, self._place_filter(spec, allowed), deadline,
                             definitions_only=False)
            return self._spawned(spec, kib)
        self._spawn_call(spec, kib, {}, deadline, definitions_only=True)
        self._place(spec, deadline, nodes=nodes, allowed=allowed, preferred=preferred)
        return self._finish(spec, deadline)

    def _spawned(self, spec: CreateSpec, kib: int) -> Volume:
        return Volume(id=spec.rd, size_kib=kib, resource_group=spec.params.resource_group,
                      props=self.props_for(spec, True), flags=[])

    def _spawn_call(self, spec: CreateSpec, kib: int, sf: dict[str, Any], deadline: Deadline,
                    definitions_only: bool) -> None:
        body: dict[str, Any] = {
            "resource_definition_name": spec.rd,
            "volume_sizes": [kib],
            "resource_definition_props": self.props_for(spec, done=not definitions_only),
        }
        # Always the class's own filter (layer stack included), never only the RG's.
        body["select_filter"] = sf or spec.params.select_filter()
        if definitions_only:
            body["definitions_only"] = True
        rg = spec.params.resource_group
        for attempt in range(3):
            try:
                self.client.post(f"/v1/resource-groups/{rg}/spawn", deadline=deadline, body=body)
                return
            except LinstorError as err:
                if err.has(consts.FAIL_NOT_FOUND_RSC_GRP) and attempt < 2:
                    self.forget_resource_group(rg)
                    self.ensure_resource_group(spec.params, deadline, force=True)
                    continue
                if err.has(consts.FAIL_EXISTS_RSC_DFN):
                    raise _Exists(spec.rd) from err
                self._cleanup_failed_create(spec, deadline)
                raise self._placement_error(spec, err, deadline) from err

    def _cleanup_failed_create(self, spec: CreateSpec, deadline: Deadline) -> None:
        """Remove an RD a failed create of ours may have left (never one with the done marker)."""
        try:
            vol = self.find(spec.rd, deadline)
            if vol is not None and not vol.complete and vol.props.get(PROP_NAME) == spec.name:
                self.client.delete(f"/v1/resource-definitions/{spec.rd}", deadline=deadline)
        except CsiError as err:  # best effort: the retry converges anyway
            log.warning("cleanup of the failed create of %s failed: %s", spec.rd, err)

    def _placement_error(self, spec: CreateSpec, err: LinstorError,
                         deadline: Deadline) -> Exception:
        p = spec.params
        if err.has(consts.FAIL_INVLD_PROP):
            return InvalidArgument(f"a LINSTOR property from the StorageClass or "
                                   f"VolumeAttributesClass was rejected: {err.message}")
        if err.has(consts.FAIL_NOT_FOUND_STOR_POOL) or err.has(
                consts.FAIL_NOT_FOUND_STOR_POOL_DFN) or (
                err.has(consts.FAIL_NOT_ENOUGH_NODES) and p.storage_pools):
            missing = self._missing_pools(p, deadline)
            if missing:
                return InvalidArgument(
                    f"parameter storagePool names {', '.join(missing)}, which no LINSTOR node "
                    "has; create the storage pool or fix the StorageClass")
        if err.has(consts.FAIL_NOT_ENOUGH_NODES) or err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
            where = f" in topology {spec.requisite}" if spec.requisite else ""
            return ResourceExhausted(
                f"LINSTOR cannot place {spec.mutable_count or p.placement_count} replica(s) of "
                f"{spec.rd}{where}: {err.message}; add nodes or space, or lower placementCount")
        if err.has(consts.FAIL_NOT_FOUND_NODE):
            return InvalidArgument(f"a node named in the StorageClass does not exist: "
                                   f"{err.message}")
        return err

    def _missing_pools(self, p: VolumeParameters, deadline: Deadline) -> list[str]:
        try:
            pools = queries.storage_pools(self.client, deadline, pools=p.storage_pools)
        except LinstorError:
            return []
        have = {x.storage_pool_name.upper() for x in pools}
        return [name for name in p.storage_pools if name.upper() not in have]

    def _place(self, spec: CreateSpec, deadline: Deadline, nodes: NodeIndex | None = None,
               allowed: list[str] | None = None, preferred: str | None = None,
               skip_constraint: bool = False) -> None:
        """Bring an existing RD's placement up to the class (every call idempotent)."""
        p = spec.params
        rd = spec.rd
        if p.manual:
            have = {r.node_name.upper() for r in queries.resources(self.client, rd, deadline)}
            body = []
            diskless_flag = "DRBD_DISKLESS" if "DRBD" in p.layer_list else "NVME_INITIATOR"
            for node in p.node_list:
                if node.upper() not in have:
                    body.append({"resource": {"node_name": node}, "layer_list": list(p.layer_list)})
            for node in p.client_list:
                if node.upper() not in have:
                    body.append({"resource": {"node_name": node, "flags": [diskless_flag],
                                              "props": {"StorPoolName": p.diskless_storage_pool}},
                                 "layer_list": list(p.layer_list)})
            if body:
                try:
                    self.client.post(f"/v1/resource-definitions/{rd}/resources",
                                     deadline=deadline, body=body)
                except LinstorError as err:
                    if not err.has(consts.FAIL_EXISTS_RSC):
                        self._cleanup_failed_create(spec, deadline)
                        raise self._placement_error(spec, err, deadline) from err
            return
        if nodes is None:
            nodes = NodeIndex(self.client, self.ns, deadline)
            allowed = self._constraint(spec, nodes)
            preferred = self._preferred_node(spec, nodes, allowed)
        if preferred is not None:
            try:
                first = {**p.select_filter(), "place_count": 1, "node_name_list": [preferred]}
                self.client.post(f"/v1/resource-definitions/{rd}/autoplace", deadline=deadline,
                                 body={"select_filter": first})
            except LinstorError as err:
                if not (err.has(consts.FAIL_NOT_ENOUGH_NODES)
                        or err.has(consts.FAIL_NOT_FOUND_STOR_POOL)):
                    raise
        sf = self._place_filter(spec, None if skip_constraint else allowed)
        try:
            self.client.post(f"/v1/resource-definitions/{rd}/autoplace", deadline=deadline,
                             body={"select_filter": sf})
        except LinstorError as err:
            self._cleanup_failed_create(spec, deadline)
            raise self._placement_error(spec, err, deadline) from err

    # restore --------------------------------------------------------------------------------

    def lookup_snapshot(self, snapshot_id: str, deadline: Deadline) -> Snapshot | None:
        """The LINSTOR snapshot a CSI snapshot id names (one GET), or None when there is none.

        ``InCluster:///<rd>/<snap>`` is read directly; a legacy handle without a scheme (the Go
        driver's bare snapshot name) is searched by name across the cluster, and an ambiguous
        one is FAILED_PRECONDITION rather than a guess. S3/Linstor ids are INVALID_ARGUMENT.
        """
        legacy = ids.legacy_snapshot_name(snapshot_id)
        if legacy is not None:
            # A bare name says nothing of its RD: this reads every snapshot (legacy ids only).
            found = [s for s in queries.view_snapshots(self.client, deadline)
                     if s.name.upper() == legacy.upper() and not s.deleting]
            if len(found) > 1:
                raise FailedPrecondition(
                    f"legacy snapshot id {snapshot_id} matches the LINSTOR snapshots "
                    f"{', '.join(f'{s.resource_name}/{s.name}' for s in found)}; handle it with "
                    "`linstor snapshot` commands")
            return found[0] if found else None
        sid = ids.parse_snapshot_id(snapshot_id)
        if sid is None:
            return None
        if sid.type != "InCluster":  # hook: S3/Linstor snapshots (backups.py materialize)
            if self.remote_snapshots is None:
                raise InvalidArgument(f"snapshot {snapshot_id}: {sid.type} snapshots need "
                                      "the snapshot service")
            return self.remote_snapshots(sid, deadline)
        try:
            return queries.snapshot(self.client, sid.resource, sid.snapshot, deadline)
        except LinstorError as err:
            if err.is_not_found():
                return None
            raise

    def _source_snapshot(self, snapshot_id: str, deadline: Deadline) -> Snapshot:
        snap = self.lookup_snapshot(snapshot_id, deadline)
        if snap is None:
            raise NotFound(f"source snapshot {snapshot_id} does not exist")
        if not snap.successful:
            raise Unavailable(f"source snapshot {snapshot_id} is not ready (flags "
                              f"{', '.join(snap.flags) or 'none'}); retry when it is")
        return snap

    def _restore(self, spec: CreateSpec, kib: int, snap: Snapshot, deadline: Deadline,
                 fresh: bool, before_finish: Any = None,
                 extra: dict[str, str] | None = None) -> Volume:
        """Restore ``snap`` into ``spec.rd``, resumable after a crash at any step.

        Steps: RD (props, no done marker) → VDs at the snapshot's size
        (snapshot-restore-volume-definition) → resources (snapshot-restore-resource) → grow the
        VD to the requested size → more replicas → done marker. LINSTOR restores only into a VD
        of exactly the snapshot's size (linstor-facts C7, CtrlSnapshotRestoreApiCallHandler:
        FAIL_INVLD_VLM_SIZE otherwise), so the VD is grown only once resources exist; what a
        retry finds (VD size, resources) tells it where to continue. snapshot-restore-resource
        copies the source RD's props (as they were at the snapshot) over the target's
        (CtrlSnapshotRestoreApiCallHandler): ours, and ``extra``, are set again right after it.
        """
        src, name = snap.resource_name, snap.name
        rd = spec.rd
        snap_kib = snap.size_kib(0)
        if fresh:
            self._restore_rd(spec, deadline)
        vol = self.find(rd, deadline)
        if vol is None:
            raise Aborted(f"volume {rd} vanished while it was being restored; retry")
        present = queries.resources(self.client, rd, deadline)
        if not present and vol.size_kib and vol.size_kib != snap_kib:
            # Left by a driver that grew the VD before restoring: LINSTOR would refuse the
            # restore on every retry. The RD has no resources (no data): start it over.
            log.warning("volume %s has a %d KiB volume definition but snapshot %s/%s is %d KiB;"
                        " recreating its resource definition to restore at the snapshot's size",
                        rd, vol.size_kib, src, name, snap_kib)
            self.client.delete(f"/v1/resource-definitions/{rd}", deadline=deadline)
            self._restore_rd(spec, deadline)
            vol.size_kib = 0
        if not vol.size_kib:
            try:
                self.client.post(
                    f"/v1/resource-definitions/{src}/snapshot-restore-volume-definition/{name}",
                    deadline=deadline, body={"to_resource": rd})
            except LinstorError as err:
                if not err.has(consts.FAIL_EXISTS_VLM_DFN):
                    raise self._restore_error(spec, err) from err
            vol.size_kib = snap_kib
        count = spec.mutable_count or spec.params.placement_count
        nodes: NodeIndex | None = None
        allowed: list[str] | None = None
        if not present:
            nodes = NodeIndex(self.client, self.ns, deadline)
            allowed = self._constraint(spec, nodes)
            preferred = self._preferred_node(spec, nodes, allowed)
            snap_nodes = list(snap.nodes)
            ok = [n for n in snap_nodes
                  if allowed is None or n.upper() in {a.upper() for a in allowed}]
            order = sorted(ok, key=lambda n: (preferred is None or n.upper() != preferred.upper()))
            targets = order[:max(1, count)]
            if not targets:
                raise ResourceExhausted(
                    f"snapshot {src}/{name} lives on {', '.join(snap_nodes)}, none of which is "
                    f"in the requested topology {spec.requisite}")
            try:
                self.client.post(
                    f"/v1/resource-definitions/{src}/snapshot-restore-resource/{name}",
                    deadline=deadline, body={"to_resource": rd, "nodes": targets})
            except LinstorError as err:
                if not err.has(consts.FAIL_EXISTS_RSC):
                    raise self._restore_error(spec, err) from err
            self._reclaim_props(spec, snap.resource_definition_props, deadline, extra)
            diskful = len(targets)
        else:
            diskful = len([r for r in present if not r.is_diskless])
        if kib > vol.size_kib:
            self._grow(rd, kib, deadline)
        if diskful < count:
            if nodes is not None:
                self._place(spec, deadline, nodes=nodes, allowed=allowed, preferred=None)
            else:
                self._place(spec, deadline)  # resumed after the restore: add the other replicas
        if before_finish is not None:
            before_finish()
        return self._finish(spec, deadline)

    def _reclaim_props(self, spec: CreateSpec, origin: Mapping[str, str], deadline: Deadline,
                       extra: dict[str, str] | None = None) -> None:
        """Make a copy of ``origin``'s props (a restore) ours again: our props and ``extra`` set,
        the origin's done marker, owner and deletion props it copied removed."""
        override = {**self.props_for(spec, done=False), **(extra or {})}
        drop = [k for k in COPIED_PROPS_TO_DROP if k in origin and k not in override]
        body: dict[str, Any] = {"override_props": override}
        if drop:
            body["delete_props"] = drop
        self.client.put(f"/v1/resource-definitions/{spec.rd}", deadline=deadline, body=body)

    def _restore_rd(self, spec: CreateSpec, deadline: Deadline,
                    extra: dict[str, str] | None = None) -> None:
        """The restore's target RD: our props, no volume definitions, no done marker."""
        props = self.props_for(spec, done=False)
        props.update(extra or {})
        try:
            self.client.post("/v1/resource-definitions", deadline=deadline, body={
                "resource_definition": {"name": spec.rd,
                                        "resource_group_name": spec.params.resource_group,
                                        "props": props}})
        except LinstorError as err:
            if err.has(consts.FAIL_EXISTS_RSC_DFN):
                raise Aborted(f"volume {spec.rd} was created concurrently; retry") from err
            if err.has(consts.FAIL_NOT_FOUND_RSC_GRP):
                self.forget_resource_group(spec.params.resource_group)
            raise

    def _grow(self, rd: str, kib: int, deadline: Deadline) -> None:
        """Grow VD 0 of ``rd`` to ``kib`` (one PUT); the errors a user can act on, typed."""
        try:
            self.client.put(f"/v1/resource-definitions/{rd}/volume-definitions/0",
                            deadline=deadline, body={"size_kib": kib})
        except LinstorError as err:
            if err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
                raise ResourceExhausted(f"not enough space to grow {rd}: {err.message}") from err
            if err.has(consts.FAIL_NOT_ALL_UPTODATE):
                raise Unavailable(f"{rd} cannot grow while a replica is not UpToDate: "
                                  f"{err.message}; retry when it has synced") from err
            raise

    def _restore_error(self, spec: CreateSpec, err: LinstorError) -> Exception:
        if err.has(consts.FAIL_NOT_ENOUGH_NODES) or err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
            return ResourceExhausted(f"restoring {spec.rd} failed: {err.message}")
        if err.is_not_found():
            return NotFound(f"restoring {spec.rd}: {err.message}")
        return err

    # clone ----------------------------------------------------------------------------------

    def _clone(self, spec: CreateSpec, kib: int, src: Volume, deadline: Deadline,
               fresh: bool) -> Volume:
        rd = spec.rd
        if fresh:
            inline = versions.clone_props_supported(self.client, deadline)
            body: dict[str, Any] = {"name": rd}
            if versions.clone_resource_group_supported(self.client, deadline):
                body["resource_group"] = spec.params.resource_group
            if inline:
                override, drop = self._clone_props(spec, src)
                body["override_props"] = override
                if drop:
                    body["delete_props"] = drop
            try:
                self.client.post_raw(f"/v1/resource-definitions/{src.id}/clone",
                                     deadline=deadline, body=body)
            except LinstorError as err:
                if err.has(consts.FAIL_EXISTS_RSC_DFN):
                    raise Aborted(f"volume {rd} was created concurrently; retry") from err
                if err.is_not_found():
                    raise NotFound(f"source volume {src.id}: {err.message}") from err
                if err.has(consts.FAIL_NOT_ENOUGH_NODES) or err.has(
                        consts.FAIL_NOT_ENOUGH_FREE_SPACE):
                    raise ResourceExhausted(f"cloning {src.id} into {rd}: {err.message}") from err
                if err.has(consts.FAIL_INVLD_PROVIDER):
                    # LINSTOR clones only LVM, LVM_THIN, ZFS, ZFS_THIN pools (linstor-server
                    # DeviceProviderKind.isCloneSupported); it rolled the clone back entirely.
                    log.info("LINSTOR cannot clone the pool of %s (%s); cloning into %s "
                                  "through a temporary snapshot", src.id, err.message, rd)
                    return self._clone_via_snapshot(spec, kib, src, deadline, fresh=True)
                raise
            if not inline:
                self._set_clone_props(spec, src, deadline)
        while True:
            try:
                state = queries.clone_status(self.client, src.id, rd, deadline).status
            except LinstorError as err:
                if not err.is_not_found():
                    raise
                state = "COMPLETE"  # LINSTOR forgot the clone job: check the RD
            if state == "COMPLETE":
                break
            if state == "FAILED":
                self._cleanup_failed_create(spec, deadline)
                raise Internal(f"LINSTOR failed to clone {src.id} into {rd}; the partial clone "
                               "was removed, retry to clone again (see the LINSTOR error reports)")
            if deadline.remaining() < self.poll_interval + 1.0:
                raise Aborted(f"the clone of {src.id} into {rd} is still running; retry to "
                              "continue waiting")
            time.sleep(self.poll_interval)
        vol = self.find(rd, deadline)
        if vol is None:
            raise Aborted(f"volume {rd} vanished while it was being cloned; retry")
        if "CLONING" in vol.flags:
            raise Aborted(f"the clone of {src.id} into {rd} is still being finalised; retry")
        if "FAILED" in vol.flags:
            self._cleanup_failed_create(spec, deadline)
            raise Internal(f"LINSTOR failed to clone {src.id} into {rd}; retry")
        if kib > vol.size_kib:
            self._grow(rd, kib, deadline)
        count = spec.mutable_count or spec.params.placement_count
        present = [r for r in queries.resources(self.client, rd, deadline) if not r.is_diskless]
        if len(present) < count:
            self._place(spec, deadline, skip_constraint=True)
        return self._finish(spec, deadline)

    @staticmethod
    def _clone_via_props(spec: CreateSpec, src: Volume) -> dict[str, str]:
        return {PROP_CLONE_VIA: f"{src.id}/{ids.snapshot_name(f'clone-for-{spec.rd}')}"}

    def _clone_via_snapshot(self, spec: CreateSpec, kib: int, src: Volume, deadline: Deadline,
                            fresh: bool) -> Volume:
        """Clone ``src`` as temporary snapshot → restore → delete the snapshot → done marker.

        Every step is resumable: the RD (created first) names the temporary snapshot, whose
        name derives from the clone's, so a retry finds both and continues where it stopped.
        """
        rd = spec.rd
        tmp = ids.snapshot_name(f"clone-for-{rd}")
        if fresh:
            self._restore_rd(spec, deadline, extra=self._clone_via_props(spec, src))
        snap = self._temp_snapshot(src.id, tmp, deadline)
        present = queries.resources(self.client, rd, deadline)
        if snap is None and not present:
            try:
                self.client.post(f"/v1/resource-definitions/{src.id}/snapshots",
                                 deadline=deadline,
                                 body={"name": tmp,
                                       **snapshot_props_fields({PROP_CLONE_FOR: rd})})
            except LinstorError as err:
                if err.has(consts.FAIL_SNAPSHOTS_NOT_SUPPORTED):
                    self._cleanup_failed_create(spec, deadline)
                    raise InvalidArgument(
                        f"volume {src.id} cannot be cloned: LINSTOR can neither clone nor "
                        f"snapshot its storage pool {self._pools_of(src.id, deadline)} "
                        f"({err.message}); use a storage pool of kind LVM, LVM_THIN, ZFS or "
                        "ZFS_THIN for volumes that are cloned") from err
                if err.has(consts.FAIL_NOT_CONNECTED):
                    raise Unavailable(f"cloning {src.id} into {rd}: a node holding the source "
                                      f"is offline: {err.message}; retry") from err
                if not err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN):
                    raise
            snap = self._temp_snapshot(src.id, tmp, deadline)
            if snap is None:
                raise Aborted(f"the temporary snapshot {src.id}/{tmp} for clone {rd} vanished "
                              "right after it was taken; retry")
        if snap is not None and not snap.successful:
            raise Unavailable(f"the temporary snapshot {src.id}/{tmp} for clone {rd} is not "
                              f"ready (flags {', '.join(snap.flags) or 'none'}); retry")

        def drop_snapshot() -> None:
            self._drop_temp_snapshot(src.id, tmp, deadline)

        if snap is not None:
            return self._restore(spec, kib, snap, deadline, fresh=False,
                                 before_finish=drop_snapshot,
                                 extra=self._clone_via_props(spec, src))
        # resumed after the snapshot was restored and deleted: finish the placement
        vol = self.find(rd, deadline)
        if vol is None:
            raise Aborted(f"volume {rd} vanished while it was being cloned; retry")
        if kib > vol.size_kib:
            self._grow(rd, kib, deadline)
        count = spec.mutable_count or spec.params.placement_count
        if len([r for r in present if not r.is_diskless]) < count:
            self._place(spec, deadline)
        return self._finish(spec, deadline)

    def _pools_of(self, rd: str, deadline: Deadline) -> str:
        """``pool (KIND) on node, ...`` of ``rd``'s diskful replicas, for error messages."""
        out = sorted({f"{v.storage_pool_name} ({v.provider_kind}) on {r.node_name}"
                      for r in queries.view_resources(self.client, deadline, rds=[rd])
                      if not r.is_diskless for v in r.volumes})
        return ", ".join(out) or "(no diskful replica)"

    def _temp_snapshot(self, rd: str, name: str, deadline: Deadline) -> Snapshot | None:
        """A clone's temporary snapshot; a failed one is deleted (and one being deleted waited
        out by the retry: ABORTED), so the caller takes it again."""
        try:
            snap = queries.snapshot(self.client, rd, name, deadline)
        except LinstorError as err:
            if err.is_not_found():
                return None
            raise
        if snap.deleting:
            raise Aborted(f"LINSTOR is still deleting the temporary snapshot {rd}/{name}; retry")
        if snap.failed:
            log.warning("temporary snapshot %s/%s failed in LINSTOR; deleting and retaking it",
                        rd, name)
            self._drop_temp_snapshot(rd, name, deadline)
            raise Aborted(f"the temporary snapshot {rd}/{name} failed in LINSTOR and was "
                          "deleted; retry to take it again (see the LINSTOR error reports)")
        return snap

    def _drop_temp_snapshot(self, rd: str, name: str, deadline: Deadline) -> None:
        try:
            self.client.delete(f"/v1/resource-definitions/{rd}/snapshots/{name}",
                               deadline=deadline)
        except LinstorError as err:
            if err.has(consts.FAIL_IN_USE):
                raise Unavailable(f"the temporary snapshot {rd}/{name} is still in use by "
                                  f"LINSTOR: {err.message}; retry") from err
            if not err.is_not_found():
                raise
        self.collect_if_retired(rd, deadline)

    def _clone_props(self, spec: CreateSpec, src: Volume) -> tuple[dict[str, str], list[str]]:
        """(props to set, source props to drop) turning a copy of ``src`` into this volume.

        The source's done marker is always dropped (it is set last, by ``_finish``).
        """
        override = self.props_for(spec, done=False)
        drop = [k for k in (PROP_DONE, PROP_PVC_NAME, PROP_PVC_NAMESPACE, PROP_SOURCE, PROP_FS,
                            PROP_DELETED, PROP_FROM_BLOCK)
                if k in src.props and k not in override]
        return override, drop

    def _set_clone_props(self, spec: CreateSpec, src: Volume, deadline: Deadline) -> None:
        """REST < 1.26: a clone request cannot carry props, so LINSTOR copies the source's
        (done marker and owner included) and they are replaced right after the clone starts;
        below REST 1.24 the same PUT moves the clone into the class's resource group.

        Until this PUT lands the clone looks like a finished volume of the source's owner, so a
        create interrupted here is recognised by ``_unfixed_clone`` and resumed through this
        method; ListVolumes hides it as long as LINSTOR flags it CLONING.
        """
        override, drop = self._clone_props(spec, src)
        body: dict[str, Any] = {"override_props": override}
        if drop:
            body["delete_props"] = drop
        if src.resource_group.upper() != spec.params.resource_group.upper():
            # REST < 1.24: the clone request cannot name the group, the clone is in the source's
            body["resource_group"] = spec.params.resource_group
        try:
            self.client.put(f"/v1/resource-definitions/{spec.rd}", deadline=deadline, body=body)
        except LinstorError as err:
            if err.has(consts.FAIL_INVLD_PROP):
                raise InvalidArgument(f"LINSTOR rejected a property of clone {spec.rd}: "
                                      f"{err.message}") from err
            raise

    # -- accessible topology ------------------------------------------------------------------

    def accessible_topology(self, rd: str, policy: RemoteAccessPolicy, deadline: Deadline,
                            resources: list[Resource] | None = None) -> list[dict[str, str]]:
        """Segments from which the volume is reachable; [] means everywhere (Go: nil)."""
        if policy.anywhere:
            return []
        if resources is None:
            resources = self.resources(rd, deadline)
        keys = {k for rule in policy.rules for k in rule}
        nodes = NodeIndex(self.client, self.ns, deadline)
        out: list[dict[str, str]] = []
        for res in resources:
            if res.is_diskless or any(f in res.flags for f in BAD_RESOURCE_FLAGS):
                continue
            segs = nodes.segments_of(res.node_name, keys)
            out.extend(policy.accessible_segments(segs))
        return prune_patterns([s for s in out if s])

    # -- consistency groups of LINBIT's driver -------------------------------------------------

    def consistency_group_member(self, volume_id: str,
                                 deadline: Deadline) -> tuple[str, int, str] | None:
        """``(resource, volume number, group)`` when ``volume_id`` names an existing member of a
        consistency group made by LINBIT's driver (``cg-…/<vnr>``, or ``cg-…`` for number 0);
        None otherwise. Costs a GET only for those id forms."""
        member = ids.parse_member_volume_id(volume_id)
        if member is not None:
            rd, vnr = member
        elif ids.is_valid_name(volume_id) and ids.may_be_consistency_group(volume_id):
            rd, vnr = volume_id, 0
        else:
            return None
        for item in queries.resource_definitions(self.client, deadline, names=[rd]):
            if item.name.upper() != rd.upper():
                continue
            group = item.props.get(PROP_CONSISTENCY_GROUP)
            if group is None and member is None:
                return None  # an ordinary volume whose name happens to start with cg-
            if item.volume_definition(vnr) is None:
                return None
            return item.name, vnr, group or "?"
        return None

    def refuse_consistency_group(self, volume_id: str, action: str, deadline: Deadline) -> None:
        """FAILED_PRECONDITION for a LINBIT consistency-group member: this driver cannot act on
        one volume number of a shared resource without touching the other members."""
        member = self.consistency_group_member(volume_id, deadline)
        if member is None:
            return
        rd, vnr, group = member
        raise FailedPrecondition(
            f"volume {volume_id} is volume number {vnr} of consistency group {group} (LINSTOR "
            f"resource {rd}), created by LINBIT's driver with --enable-consistency-groups; this "
            f"driver does not manage consistency-group volumes yet, so it was not {action}. "
            f"Keep LINBIT's driver for such volumes, or by hand, once no pod uses it: `linstor "
            f"volume-definition delete {rd} {vnr}`, and `linstor resource-definition delete "
            f"{rd}` after the last member")

    def refuse_consistency_group_snapshot(self, snapshot_id: str, deadline: Deadline) -> None:
        """FAILED_PRECONDITION for an existing member of a consistency-group snapshot made by
        LINBIT's driver: all members are one LINSTOR snapshot, which DeleteSnapshot of one
        member must neither delete nor leak by answering OK."""
        member = ids.parse_member_snapshot_id(snapshot_id)
        if member is not None:
            rd, vnr, snap = member
        else:
            sid = ids.parse_snapshot_id(snapshot_id)
            if sid is None or sid.type != "InCluster" or \
                    not ids.may_be_consistency_group(sid.resource):
                return
            rd, vnr, snap = sid.resource, 0, sid.snapshot
            if self.consistency_group_member(rd, deadline) is None:
                return
        try:
            queries.snapshot(self.client, rd, snap, deadline)
        except LinstorError as err:
            if err.is_not_found():
                return
            raise
        raise FailedPrecondition(
            f"snapshot {snapshot_id} is volume number {vnr} of the consistency-group snapshot "
            f"{snap} of {rd}, made by LINBIT's driver: one LINSTOR snapshot holds every member, "
            f"so it cannot be deleted alone. Delete its VolumeGroupSnapshot (group snapshot id "
            f"{snap}), or by hand `linstor snapshot delete {rd} {snap}`")

    # -- delete -------------------------------------------------------------------------------

    def delete(self, rd: str, deadline: Deadline) -> None:
        """DeleteVolume: one DELETE normally; keeps (and hides) an RD that still has snapshots."""
        if not ids.is_valid_name(rd) or ids.may_be_consistency_group(rd):
            # Answering OK for a member that exists would leak it; deleting the shared
            # resource would delete every member.
            self.refuse_consistency_group(rd, "deleted", deadline)
            if not ids.is_valid_name(rd):
                return
        try:
            self.client.delete(f"/v1/resource-definitions/{rd}", deadline=deadline)
            return
        except LinstorError as err:
            if err.has(consts.FAIL_IN_USE):
                raise FailedPrecondition(f"volume {rd} is still in use: {err.message}") from err
            if not err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN):
                raise
        self._retire(rd, deadline)
        self._drop_abandoned_clone_snapshots(rd, deadline)

    def _drop_abandoned_clone_snapshots(self, rd: str, deadline: Deadline) -> None:
        """Delete the temporary clone snapshots of ``rd`` whose clone is finished or gone (a
        clone abandoned midway), so the deleted volume's RD can go; the RD goes with the last."""
        for snap in queries.snapshots(self.client, rd, deadline):
            target = snap.definition_props.get(PROP_CLONE_FOR)
            if not target:
                continue
            clone = self.find(target, deadline, include_deleted=True) \
                if ids.is_valid_name(target) else None
            if clone is None or clone.complete:
                log.info("deleting the temporary snapshot %s/%s of clone %s, which is %s",
                         rd, snap.name, target, "gone" if clone is None else "complete")
                self._drop_temp_snapshot(rd, snap.name, deadline)

    def _retire(self, rd: str, deadline: Deadline) -> None:
        resources = self.resources(rd, deadline)
        busy = [r.node_name for r in resources if r.in_use]
        if busy:
            raise FailedPrecondition(f"volume {rd} is in use on {', '.join(busy)}; unmount it first")
        self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                        body={"override_props": {PROP_DELETED: "true"}})
        ordered = sorted(resources, key=lambda r: not r.is_diskless)
        for res in ordered:
            node = res.node_name
            try:
                self.client.delete(f"/v1/resource-definitions/{rd}/resources/{node}",
                                   deadline=deadline, params={"keep_tiebreaker": "false"})
            except LinstorError as err:
                if err.has(consts.FAIL_IN_USE):
                    raise FailedPrecondition(f"volume {rd} is in use on {node}: "
                                             f"{err.message}") from err
                if not err.is_not_found():
                    raise

    def collect_if_retired(self, rd: str, deadline: Deadline) -> None:
        """Delete the RD of a deleted volume once its last snapshot is gone."""
        vol = self.find(rd, deadline, include_deleted=True)
        if vol is None or not vol.props.get(PROP_DELETED):
            return
        try:
            self.client.delete(f"/v1/resource-definitions/{rd}", deadline=deadline)
        except LinstorError as err:
            if not (err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN) or err.has(consts.FAIL_IN_USE)):
                raise

    # -- attach -------------------------------------------------------------------------------

    def publish(self, rd: str, node: str, policy: RemoteAccessPolicy,
                deadline: Deadline) -> str:
        """Make ``rd`` available on ``node``; returns the device path there."""
        if not ids.is_valid_node_name(node):
            # Checked before any call: the name becomes a REST path component.
            raise NotFound(f"node {node!r} does not exist: it is not a valid LINSTOR node name "
                           "(RFC 1123 host name); NodeGetInfo reports the LINSTOR node name")
        self.refuse_consistency_group(rd, "attached", deadline)
        self.require_supported(deadline)
        resources = self.resources(rd, deadline)
        if not resources:
            vol = self.find(rd, deadline)
            if vol is None:
                raise NotFound(f"volume {rd} does not exist")
            raise FailedPrecondition(f"volume {rd} has no replica in LINSTOR; it cannot be "
                                     "attached (check `linstor resource list -r {rd}`)")
        mine = next((r for r in resources if r.node_name.upper() == node.upper()), None)
        # LINSTOR's quorum tiebreaker holds no data: its node is a node without a replica, so
        # the remote-access policy decides as for any other; make-available below converts it.
        if mine is not None and not mine.deleting:
            if not mine.reported:
                raise FailedPrecondition(
                    f"LINSTOR has no state for {rd} on node {node}: the satellite is offline or "
                    "not reporting; bring it online and retry")
        if mine is not None and not mine.deleting and not mine.is_tiebreaker:
            path = mine.device_path(0)
            if path:
                return path
            return self._volume_device_path(rd, node, deadline)
        if not remote_capable(resources):
            self._require_node(node, deadline)  # an unknown node is NOT_FOUND first
            on = ", ".join(r.node_name for r in resources if not r.is_diskless)
            raise FailedPrecondition(
                f"volume {rd} has no DRBD layer (layers: {resources[0].top_layer or 'unknown'}"
                f" on top), so only the nodes holding its data can use it: {on}; node {node} "
                "holds none, and attaching it there would give it a new, empty disk. Schedule "
                "the workload on one of those nodes (use WaitForFirstConsumer), or use a "
                "StorageClass with the drbd layer")
        if not policy.anywhere:
            keys = {k for rule in policy.rules for k in rule}
            nodes = NodeIndex(self.client, self.ns, deadline)
            replicas = [nodes.segments_of(r.node_name, keys) for r in resources
                        if not r.is_diskless]
            if not policy.allows(replicas, nodes.segments_of(node, keys)):
                on = ", ".join(r.node_name for r in resources if not r.is_diskless)
                raise FailedPrecondition(
                    f"volume {rd} has no replica on node {node} and its StorageClass does not "
                    f"allow remote access from there (allowRemoteVolumeAccess: "
                    f"{policy.render().strip()}); replicas are on {on}")
        self._make_available(rd, node, deadline)
        for res in resources:
            path = res.device_path(0)
            if path and res.top_layer == "DRBD":
                return path  # DRBD device paths are the same on every node
        return self._volume_device_path(rd, node, deadline)

    def _require_node(self, node: str, deadline: Deadline) -> None:
        try:
            queries.node(self.client, node, deadline)
        except CsiError as err:
            if err.code == NotFound.code:
                raise NotFound(f"node {node} does not exist in LINSTOR") from err
            raise

    def _make_available(self, rd: str, node: str, deadline: Deadline) -> None:
        try:
            rcs = self.client.post(
                f"/v1/resource-definitions/{rd}/resources/{node}/make-available",
                deadline=deadline, body={"diskful": False})
        except LinstorError as err:
            if err.has(consts.FAIL_NOT_FOUND_NODE):
                raise NotFound(f"node {node} does not exist in LINSTOR") from err
            if err.has(consts.FAIL_NOT_FOUND_RSC_DFN):
                raise NotFound(f"volume {rd} does not exist") from err
            if err.has(consts.FAIL_NOT_CONNECTED):
                raise FailedPrecondition(f"node {node} is offline: {err.message}") from err
            if err.has(consts.FAIL_NOT_ENOUGH_NODES):
                raise FailedPrecondition(f"volume {rd} cannot be attached on {node}: "
                                         f"{err.message}") from err
            raise
        if any(rc.is_(consts.WARN_NOT_CONNECTED) and
               str(rc.obj_refs.get("Node", "")).upper() == node.upper() for rc in rcs):
            try:
                self.client.delete(f"/v1/resource-definitions/{rd}/resources/{node}",
                                   deadline=deadline, params={"keep_tiebreaker": "true"})
            except CsiError as err:  # best effort: the error below says what to do
                log.warning("could not undo the attach of %s on offline node %s: %s",
                            rd, node, err)
            raise FailedPrecondition(f"node {node} is offline in LINSTOR; volume {rd} cannot be "
                                     "attached there until its satellite is back")

    def _volume_device_path(self, rd: str, node: str, deadline: Deadline) -> str:
        path = queries.volume(self.client, rd, node, 0, deadline).device_path
        if not path:
            raise Unavailable(f"LINSTOR reports no device path for {rd} on {node} yet; retry")
        return path

    def unpublish(self, rd: str, node: str | None, deadline: Deadline) -> None:
        """Remove diskless attachments (never a diskful replica); missing → OK.

        A member of a LINBIT consistency group shares one resource with the other members:
        its diskless attachment is removed unless another member still uses it on that node
        (LINSTOR refuses: in use), in which case the last member's unpublish removes it.
        """
        if node is not None and not ids.is_valid_node_name(node):
            return  # a node that cannot exist has nothing attached
        shared = False
        if not ids.is_valid_name(rd) or ids.may_be_consistency_group(rd):
            member = self.consistency_group_member(rd, deadline)
            if member is not None:
                rd, shared = member[0], True
            elif not ids.is_valid_name(rd):
                return  # a volume that cannot exist is not attached anywhere
        resources = self.resources(rd, deadline, node=node)
        for res in resources:
            if not res.is_diskless or res.is_tiebreaker:
                continue
            name = res.node_name
            try:
                self.client.delete(f"/v1/resource-definitions/{rd}/resources/{name}",
                                   deadline=deadline, params={"keep_tiebreaker": "true"})
            except LinstorError as err:
                if err.has(consts.FAIL_IN_USE) and shared:
                    log.info("consistency group %s is still in use on %s by another member; "
                             "its attachment stays until the last member is unpublished",
                             rd, name)
                    continue
                if err.has(consts.FAIL_IN_USE):
                    raise FailedPrecondition(f"volume {rd} is still in use on {name}; unmount "
                                             f"it there first: {err.message}") from err
                if not err.is_not_found():
                    raise

    # -- expand -------------------------------------------------------------------------------

    def expand(self, rd: str, required: int, limit: int, deadline: Deadline) -> Volume:
        self.require_supported(deadline)
        vol = self.require(rd, deadline)
        if limit and required > limit:
            raise OutOfRange(f"required_bytes {required} exceeds limit_bytes {limit}")
        if limit and vol.capacity_bytes > limit:
            raise OutOfRange(f"volume {rd} is already {vol.capacity_bytes} bytes, more than "
                             f"limit_bytes {limit}; volumes cannot shrink")
        kib = round_kib(max(required, 0))
        if limit and kib * KIB > limit:
            raise OutOfRange(f"{required} bytes rounded up to whole KiB exceeds limit_bytes {limit}")
        if kib <= vol.size_kib:
            return vol
        self._grow(rd, kib, deadline)
        vol.size_kib = kib
        return vol

    # -- modify -------------------------------------------------------------------------------

    def modify(self, rd: str, count: int | None, props: dict[str, str],
               deadline: Deadline) -> None:
        self.require_supported(deadline)
        self.refuse_consistency_group(rd, "modified", deadline)
        self.require(rd, deadline)
        if props:
            try:
                self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                                body={"override_props": props})
            except LinstorError as err:
                if err.has(consts.FAIL_INVLD_PROP):
                    raise InvalidArgument(f"LINSTOR rejected a property: {err.message}") from err
                raise
        if count is None:
            return
        resources = self.resources(rd, deadline)
        diskful = [r for r in resources if not r.is_diskless and not r.deleting]
        if len(diskful) < count:
            try:
                self.client.post(f"/v1/resource-definitions/{rd}/autoplace", deadline=deadline,
                                 body={"select_filter": {"place_count": count}})
            except LinstorError as err:
                if err.has(consts.FAIL_NOT_ENOUGH_NODES):
                    raise ResourceExhausted(f"cannot place {count} replicas of {rd}: "
                                            f"{err.message}") from err
                raise
        elif len(diskful) > count:
            idle = [r for r in diskful if not r.in_use]
            extra = len(diskful) - count
            if len(idle) < extra:
                raise FailedPrecondition(f"cannot drop to {count} replicas of {rd}: the "
                                         "remaining ones are in use")
            # drop the replicas that are not in use, unhealthy ones first
            idle.sort(key=lambda r: (r.healthy, r.node_name))
            for res in idle[:extra]:
                node = res.node_name
                try:
                    self.client.delete(f"/v1/resource-definitions/{rd}/resources/{node}",
                                       deadline=deadline, params={"keep_tiebreaker": "true"})
                except LinstorError as err:
                    if err.has(consts.FAIL_IN_USE):
                        raise FailedPrecondition(f"cannot remove the replica of {rd} on {node}: "
                                                 f"{err.message}") from err
                    if not err.is_not_found():
                        raise

    # -- health -------------------------------------------------------------------------------

    @staticmethod
    def condition(resources: list[Resource]) -> tuple[bool, str]:
        """(abnormal, message) from replica states."""
        if not resources:
            return True, "no replica of the volume exists in LINSTOR"
        problems = []
        notes = []
        for res in resources:
            node = res.node_name
            if res.is_tiebreaker:
                # LINSTOR's quorum tiebreaker (linstor-facts §9 C5) holds no data: its state
                # never makes the volume abnormal, but an unreachable one is worth a word
                if not res.reported or any(f in res.flags for f in ("FAILED_DEPLOYMENT",
                                                                     "FAILED_DISCONNECT")):
                    notes.append(f"quorum tiebreaker on {node} unreachable")
                continue
            if not res.reported:
                problems.append(f"{node} (no state reported: satellite offline?)")
                continue
            if any(f in res.flags for f in ("FAILED_DEPLOYMENT", "FAILED_DISCONNECT")):
                problems.append(f"{node} ({', '.join(res.flags)})")
                continue
            if res.top_layer not in ("DRBD", ""):
                continue  # no DRBD: LINSTOR reports no disk state for plain storage volumes
            want = "Diskless" if res.is_diskless else "UpToDate"
            for vol in res.volumes:
                if vol.disk_state != want:
                    problems.append(f"{node} (disk {vol.disk_state or 'unknown'})")
        if problems:
            return True, "replica problems on " + "; ".join(problems + notes)
        if notes:
            return False, "volume healthy: every replica UpToDate; " + "; ".join(notes)
        return False, "volume healthy: every replica UpToDate"


def _rg_key(p: VolumeParameters) -> tuple[str, tuple[tuple[str, str], ...]]:
    return p.resource_group.upper(), tuple(sorted(p.properties))


def remote_capable(resources: list[Resource]) -> bool:
    """Whether a node without a replica can use the volume: only through DRBD (a diskless
    client) or NVMe-oF (an initiator). Without either, LINSTOR's make-available places a new,
    empty diskful replica (linstor-facts §9 C6). Unknown layers (no resource reported yet)
    count as capable."""
    tops = {r.top_layer for r in resources if not r.is_diskless} - {""}
    return not tops or bool(tops & {"DRBD", "NVME"})


def _restored_over(spec: CreateSpec, vol: Volume, origin: Mapping[str, str]) -> bool:
    """Whether ``vol`` is our restore of a snapshot of an RD with props ``origin``, interrupted
    right after snapshot-restore-resource: LINSTOR copied the origin's props over ours (a union:
    ours that the origin lacks stay), so it carries the origin's ownership props."""
    return (origin.get(PROP_NAME, spec.name) != spec.name
            and vol.props.get(PROP_NAME) == origin[PROP_NAME]
            and all(vol.props.get(k) == v for k, v in origin.items() if k in CLONED_OWNER_PROPS))


def _unfixed_clone(spec: CreateSpec, vol: Volume, src: Volume) -> bool:
    """Whether ``vol`` is our clone of ``src`` made on REST < 1.26 whose props were not set yet:
    it still carries exactly the source's ownership props (a clone copies them all)."""
    return (vol.id.upper() != src.id.upper() and vol.props.get(PROP_NAME) != spec.name
            and all(vol.props.get(k) == src.props.get(k) for k in CLONED_OWNER_PROPS))


__all__ = ["ANYWHERE", "CreateSpec", "Source", "Volume", "Volumes", "allocation_kib"]

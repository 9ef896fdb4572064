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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from csi_linstor import __version__
from csi_linstor.deadline import Deadline
from csi_linstor.errors import NotFound, OutOfRange
from csi_linstor.linstor import queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import Resource, ResourceDefinition
from csi_linstor.mapping import ids, listing
from csi_linstor.mapping.params import VolumeParameters
from csi_linstor.nodeops import fs as nodeops_fs

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


def _rg_key(p: VolumeParameters) -> tuple[str, tuple[tuple[str, str], ...]]:
    return p.resource_group.upper(), tuple(sorted(p.properties))


def remote_capable(resources: list[Resource]) -> bool:
    """Whether a node without a replica can use the volume: only through DRBD (a diskless
    client) or NVMe-oF (an initiator). Without either, LINSTOR's make-available places a new,
    empty diskful replica (linstor-facts §9 C6). Unknown layers (no resource reported yet)
    count as capable."""
    tops = {r.top_layer for r in resources if not r.is_diskless} - {""}
    return not tops or bool(tops & {"DRBD", "NVME"})


def member_volume(item: ResourceDefinition, vnr: int) -> Volume | None:
    """Volume number ``vnr`` of consistency-group RD ``item`` as a volume (id ``<rd>/<vnr>``):
    the RD's props overlaid with the member's volume-definition props (its name, access and
    filesystem; the done marker is on the VD for this driver's groups, on the RD for LINBIT's).
    None when that volume definition does not exist."""
    vd = item.volume_definition(vnr)
    if vd is None:
        return None
    return Volume(id=ids.member_volume_id(item.name, vnr), size_kib=vd.size_kib,
                  resource_group=item.resource_group_name,
                  props={**item.props, **vd.props}, flags=list(item.flags))


class VolumeLookups:
    """The client, the property namespace and the lookups every volume job shares."""

    def __init__(self, client: LinstorClient, property_namespace: str = "Aux",
                 poll_interval: float = 0.5) -> None:
        self.client = client
        self.ns = property_namespace
        self.poll_interval = poll_interval
        self._known_rgs: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        # S3/Linstor snapshot ids -> a local snapshot (set by Snapshots: backups.materialize)
        self.remote_snapshots: Callable[..., Any] | None = None

    def find(self, rd: str, deadline: Deadline, *, include_deleted: bool = False) -> Volume | None:
        """The volume ``rd`` (one REST call), or None when missing or deleted; a
        consistency-group member id (``cg-…/<vnr>``) finds that member."""
        member = ids.parse_member_volume_id(rd)
        if member is not None:
            return self._find_member(member[0], member[1], deadline, include_deleted)
        if not ids.is_valid_name(rd):
            return None
        for item in queries.resource_definitions(self.client, deadline, names=[rd]):
            if item.name.upper() == rd.upper():
                vol = self._volume(item)
                if vol.props.get(PROP_DELETED) and not include_deleted:
                    return None
                if "DELETE" in vol.flags and not include_deleted:
                    # LINSTOR is deleting it (a satellite was offline when it was deleted; it
                    # goes when the satellite reconnects): not a volume any more (issue 15)
                    return None
                return vol
        return None

    def _find_member(self, rd: str, vnr: int, deadline: Deadline,
                     include_deleted: bool) -> Volume | None:
        for item in queries.resource_definitions(self.client, deadline, names=[rd]):
            if item.name.upper() != rd.upper() or PROP_CONSISTENCY_GROUP not in item.props:
                continue
            if ("DELETE" in item.flags or item.props.get(PROP_DELETED)) and not include_deleted:
                return None
            return member_volume(item, vnr)
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
            out.extend(self.volumes_of(item))
        return sorted(out, key=lambda v: v.id)

    def page(self, max_entries: int, token: str,
             deadline: Deadline) -> tuple[list[Volume], str]:
        """A ListVolumes page read by offset from LINSTOR's sorted resource definition list
        (mapping/listing.py: O(page), not O(cluster)), and the next page's token."""
        def items_of(item: ResourceDefinition) -> list[tuple[int, Volume]]:
            out = []
            for vol in self.volumes_of(item):
                vnr = ids.volume_rd(vol.id)[1]
                out.append((-1 if vnr is None else vnr, vol))
            return out

        return listing.page(self.client, "/v1/resource-definitions", ResourceDefinition,
                            lambda item: (item.name.upper(),), items_of, max_entries,
                            listing.parse_token(token, 1, _legacy_position), deadline,
                            params={"with_volume_definitions": "true"})

    @classmethod
    def volumes_of(cls, item: ResourceDefinition) -> list[Volume]:
        """The listable volumes resource definition ``item`` holds: none, itself, or (a
        consistency group) one per complete member, by volume number."""
        if PROP_CONSISTENCY_GROUP in item.props:  # one volume per member, not the RD
            if "DELETE" in item.flags or item.props.get(PROP_DELETED):
                return []
            members = (member_volume(item, vd.volume_number or 0)
                       for vd in sorted(item.volume_definitions,
                                        key=lambda vd: vd.volume_number or 0))
            return [m for m in members if m is not None and m.complete]
        vol = cls._volume(item)
        if not vol.complete or vol.props.get(PROP_DELETED) or "CLONING" in vol.flags:
            return []
        if "DELETE" in vol.flags:  # LINSTOR is deleting it (see find)
            return []
        if item.volume_definition(0) is None:
            return []
        return [vol]

    def resources(self, rd: str | None, deadline: Deadline,
                  node: str | None = None) -> list[Resource]:
        return queries.view_resources(self.client, deadline,
                                      rds=[rd] if rd is not None else None,
                                      nodes=[node] if node is not None else None)


def _legacy_position(volume_id: str) -> listing.Position | None:
    """Where an ``after:<volume id>`` token (an earlier driver's) continues."""
    rd, vnr = ids.volume_rd(volume_id)
    if not ids.is_valid_name(rd):
        return None
    return listing.Position(key=(rd.upper(),), vnr=-1 if vnr is None else vnr, offset=-1)

"""Snapshot operations: CSI snapshots are LINSTOR snapshots of a volume's resource definition.

- LINSTOR snapshot name: ``ids.snapshot_name(csi name)`` (the CSI name when valid, else
  ``snapshot-<uuid5>``), so a retry finds its snapshot with one
  ``GET /v1/resource-definitions/{source}/snapshots/{name}``.
- Lookups use LINSTOR's real filters: ``GET /v1/view/snapshots`` filters by ``resources`` and
  ``nodes`` only (``snapshots=`` is ignored, linstor-facts C8). Whether a *new* snapshot name is
  taken by another source (CSI's ALREADY_EXISTS) is asked of the snapshot index
  (mapping/snapshot_index.py: one key-value store read per name, its holders verified with one
  GET each); only until the existing snapshots are indexed does it read every snapshot.
  Retries and readiness polls never make it.
- A snapshot LINSTOR is still deleting (flag DELETE) keeps its name: taking it again waits
  for the deletion within the RPC's deadline, then answers ABORTED (retry).
- Snapshot id: ``InCluster:///<rd>/<snapshot>``.
- Snapshot props: ``Aux/csi-snapshot-name`` (the CSI name) and, for members of a group snapshot,
  ``Aux/csi-group-snapshot-id`` and ``Aux/csi-group-snapshot-sources`` (every member's RD, so
  one member tells where the others are without reading every snapshot).
- Group snapshots: one ``POST /v1/actions/snapshot/multi`` (one instant for every source); every
  member is the LINSTOR snapshot ``<group snapshot name>`` of its source; the group id is
  ``InCluster:///group/<group snapshot name>``.
- Consistency groups (issue 17 item 5): a group snapshot of every member of one group is one
  LINSTOR snapshot of the group's RD; it stands for one CSI snapshot per member, id
  ``InCluster:///<rd>/<vnr>/<snapshot>`` with source ``<rd>/<vnr>`` (``expand``). A member's
  snapshot is never deleted alone (FAILED_PRECONDITION), nor taken alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from csi_linstor.deadline import Deadline
from csi_linstor.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Snapshot, snapshot_props_fields
from csi_linstor.mapping import ids, listing
from csi_linstor.mapping.backups import Backups
from csi_linstor.mapping.snapshot_index import SnapshotIndex
from csi_linstor.mapping.volume_model import PROP_CLONE_FOR, PROP_CONSISTENCY_GROUP, PROP_NAME
from csi_linstor.mapping.volumes import Volumes

log = logging.getLogger("csi_linstor.snapshots")

PROP_SNAPSHOT_NAME = "Aux/csi-snapshot-name"
PROP_GROUP = "Aux/csi-group-snapshot-id"
PROP_GROUP_SOURCES = "Aux/csi-group-snapshot-sources"  # the group's RDs, comma-separated
DELETE_POLL = 0.25  # seconds between looks at a snapshot LINSTOR is deleting


@dataclass
class SnapshotInfo:
    resource: str
    name: str
    size_bytes: int
    created_ms: int
    ready: bool
    failed: bool
    props: dict[str, str]
    handle: str = ""  # the id it was found by, when that was a legacy (scheme-less) one
    # a consistency group's snapshot: volume number -> bytes of each member it holds
    members: dict[int, int] | None = None
    source: str = ""  # the source volume id when it is not ``resource`` (a group member)

    @property
    def id(self) -> str:
        return self.handle or ids.snapshot_id(self.resource, self.name)

    @property
    def source_volume_id(self) -> str:
        return self.source or self.resource

    @property
    def group_id(self) -> str:
        return self.props.get(PROP_GROUP, "")

    @property
    def group_sources(self) -> list[str] | None:
        """The RDs of every member of its group; None for groups made before it was recorded."""
        value = self.props.get(PROP_GROUP_SOURCES)
        return None if value is None else [v for v in value.split(",") if v]


def _listable(snap: Snapshot) -> bool:
    """Listed by ListSnapshots: not being deleted, and not a clone's temporary snapshot
    (volumes.PROP_CLONE_FOR), which is no CSI snapshot."""
    return not snap.deleting and PROP_CLONE_FOR not in snap.definition_props


def snapshot_info(snap: Snapshot) -> SnapshotInfo:
    members = None
    if PROP_CONSISTENCY_GROUP in snap.resource_definition_props:
        members = {vd.volume_number or 0: vd.size_kib * 1024 for vd in snap.volume_definitions}
    return SnapshotInfo(resource=snap.resource_name, name=snap.name,
                        size_bytes=snap.size_kib(0) * 1024, created_ms=snap.created_ms,
                        ready=snap.successful, failed=snap.failed,
                        props=dict(snap.definition_props), members=members)


def expand(infos: Sequence[SnapshotInfo],
           named: dict[tuple[str, int], str] | None = None) -> list[SnapshotInfo]:
    """One CSI snapshot per member of each consistency group's snapshot; others as they are.
    ``named``: (RD upper, vnr) -> the id the caller knows the member by (LINBIT's bare form)."""
    out = []
    for info in infos:
        if info.members is None:
            out.append(info)
            continue
        for vnr, size in sorted(info.members.items()):
            out.append(replace(info, size_bytes=size, members=None,
                               source=(named or {}).get((info.resource.upper(), vnr))
                               or ids.member_volume_id(info.resource, vnr),
                               handle=ids.member_snapshot_id(info.resource, vnr, info.name)))
    return out


class Snapshots:
    def __init__(self, client: LinstorClient, volumes: Volumes) -> None:
        self.client = client
        self.volumes = volumes
        self.index = SnapshotIndex(client)  # issue 19: who holds a name, without every snapshot
        # S3/Linstor snapshots (issue 18): mapping/backups.py; restores ask it for them
        self.backups = Backups(client, self)
        volumes.remote_snapshots = self.backups.materialize

    # -- lookups ------------------------------------------------------------------------------

    def by_name(self, name: str, deadline: Deadline,
                resources: Sequence[str] | None = None) -> list[SnapshotInfo]:
        """The LINSTOR snapshots named ``name`` in ``resources`` (None: in every RD, which reads
        every snapshot in the cluster: only for checks that cannot be narrowed)."""
        return [snapshot_info(s)
                for s in queries.view_snapshots(self.client, deadline, resources)
                if s.name.upper() == name.upper() and not s.deleting]

    def _own(self, rd: str, name: str, deadline: Deadline) -> Snapshot | None:
        """Snapshot ``name`` of ``rd`` (one GET), None when it or the RD does not exist."""
        if not ids.is_valid_name(rd):
            return None
        try:
            return queries.snapshot(self.client, rd, name, deadline)
        except LinstorError as err:
            if err.is_not_found():
                return None
            raise

    def _await_deletion(self, rd: str, name: str, deadline: Deadline) -> None:
        """Wait (within the deadline) until LINSTOR has removed snapshot ``rd/name``."""
        while True:
            snap = self._own(rd, name, deadline)
            if snap is None:
                return
            if not snap.deleting:
                return  # someone took it again meanwhile: the caller looks at it
            if deadline.remaining() < DELETE_POLL + 1.0:
                raise Aborted(f"LINSTOR is still deleting the earlier snapshot {rd}/{name} (flag "
                              "DELETE; its satellites have not confirmed yet); retry shortly. "
                              "If it stays, check the satellites with `linstor node list`")
            time.sleep(DELETE_POLL)

    def get(self, snapshot_id: str, deadline: Deadline) -> SnapshotInfo | None:
        """The snapshot ``snapshot_id`` names; None when missing or not a snapshot id at all."""
        sid = ids.parse_snapshot_id(snapshot_id)
        if sid is not None and sid.type != "InCluster":  # hook: remote snapshots (backups.py)
            remote = self.backups.get(sid, deadline)
            return None if remote is None else SnapshotInfo(
                resource=sid.resource, name=sid.snapshot, size_bytes=remote.size_bytes,
                created_ms=remote.created_ms, ready=remote.ready, failed=False, props={},
                handle=remote.id)
        member = ids.parse_member_snapshot_id(snapshot_id)
        if member is not None:  # a consistency-group member's part of a group's snapshot
            found = self._own(member[0], member[2], deadline)
            return next((i for i in expand([snapshot_info(found)]) if i.id == snapshot_id),
                        None) if found is not None and not found.deleting else None
        snap = self.volumes.lookup_snapshot(snapshot_id, deadline)
        if snap is None:
            return None
        info = snapshot_info(snap)
        if ids.legacy_snapshot_name(snapshot_id) is not None:
            info.handle = snapshot_id  # answer with the id the caller knows it by
        return info

    def list(self, deadline: Deadline, source: str | None = None) -> list[SnapshotInfo]:
        if source is not None:
            rd = ids.volume_rd(source)[0]
            if not ids.is_valid_name(rd):
                return []
            try:
                items = queries.snapshots(self.client, rd, deadline)
            except LinstorError as err:
                if err.is_not_found():
                    return []
                raise
        else:
            items = queries.view_snapshots(self.client, deadline)
        out = [snapshot_info(s) for s in items if _listable(s)]
        out = self.backups.relabel(out, deadline, SnapshotInfo)  # hook: remote ids, S3-only backups
        out = expand(out)
        if source is not None:
            out = [i for i in out if i.source_volume_id.upper() == source.upper()]
        return sorted(out, key=lambda s: s.id)

    def page(self, max_entries: int, token: str,
             deadline: Deadline) -> tuple[list[SnapshotInfo], str]:
        """A ListSnapshots page of every snapshot: read by offset from LINSTOR's sorted
        snapshot view (mapping/listing.py, O(page)); from the whole list when an S3 remote is
        configured, whose backups without a local snapshot are listed too."""
        kinds = self.backups.remotes(deadline)
        if "S3" in kinds.values():
            return listing.paginate(self.list(deadline), lambda s: s.id, max_entries, token)

        def items_of(snap: Snapshot) -> list[tuple[int, SnapshotInfo]]:
            if not _listable(snap):
                return []
            infos = expand(self.backups.relabel([snapshot_info(snap)], deadline, SnapshotInfo,
                                                kinds))
            return [(_member_number(i), i) for i in infos]

        return listing.page(self.client, "/v1/view/snapshots", Snapshot,
                            lambda s: (s.resource_name.upper(), s.name.upper()), items_of,
                            max_entries, listing.parse_token(token, 2, _legacy_position),
                            deadline)

    # -- create -------------------------------------------------------------------------------

    def create(self, name: str, source: str, deadline: Deadline) -> SnapshotInfo:
        self.volumes.require_supported(deadline)
        snap = ids.snapshot_name(name)
        have = self._existing(name, snap, source, deadline)
        if have is not None:
            return have
        # A new name: CSI names are unique across sources, so look for it in the other RDs.
        other = self._held_elsewhere(snap, source, deadline)
        if other is not None:
            raise AlreadyExists(f"snapshot {name} exists for volume {other}, not for {source}")
        if not ids.is_valid_name(source) or self.volumes.find(source, deadline) is None:
            raise NotFound(f"source volume {source} does not exist")
        self.index.claim(snap, [source], deadline)  # before the snapshot: see snapshot_index
        try:
            self.client.post(f"/v1/resource-definitions/{source}/snapshots", deadline=deadline,
                             body={"name": snap,
                                   **snapshot_props_fields({PROP_SNAPSHOT_NAME: name})})
        except LinstorError as err:
            if err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN):
                # taken concurrently, or still being deleted: look again
                have = self._existing(name, snap, source, deadline)
                if have is not None:
                    return have
            raise self._create_error(err, [source], deadline) from err
        info = self.get(ids.snapshot_id(source, snap), deadline)
        if info is None:
            raise NotFound(f"snapshot {snap} of {source} vanished right after it was taken; retry")
        return info

    def _held_elsewhere(self, snap: str, source: str, deadline: Deadline) -> str | None:
        """Another RD holding a snapshot named ``snap`` (LINSTOR deleting it does not count),
        or None. Asks the index and verifies each holder; stale claims are released."""
        holders = self.index.holders(snap, deadline)
        if holders is None:  # existing snapshots not indexed yet: read them all
            return next((i.resource for i in self.by_name(snap, deadline)
                         if i.resource.upper() != source.upper()), None)
        for rd in holders:
            if rd.upper() == source.upper():
                continue
            found = self._own(rd, snap, deadline)
            if found is not None and not found.deleting:
                return found.resource_name or rd
            if found is None:
                self.index.release(snap, rd, deadline)  # a claim left by a crash
        return None

    def _existing(self, name: str, snap: str, source: str,
                  deadline: Deadline) -> SnapshotInfo | None:
        """CreateSnapshot's own earlier snapshot in ``source`` (one GET), None when there is
        none to return: a failed one is deleted, and one LINSTOR is deleting is waited for."""
        found = self._own(source, snap, deadline)
        if found is not None and not found.deleting and found.failed:
            log.warning("snapshot %s of %s failed in LINSTOR; deleting and retaking it",
                        snap, source)
            self._delete(source, found.name, deadline)
            found = self._own(source, snap, deadline)
        if found is not None and found.deleting:
            self._await_deletion(source, snap, deadline)
            found = self._own(source, snap, deadline)
            if found is not None and found.deleting:
                raise Aborted(f"LINSTOR is still deleting snapshot {source}/{snap}; retry")
        if found is None:
            return None
        info = snapshot_info(found)
        if info.group_id:
            raise AlreadyExists(f"snapshot {name} exists as a member of group snapshot "
                                f"{info.group_id}")
        if info.failed:
            raise Aborted(f"snapshot {source}/{snap} failed again in LINSTOR as it was retaken; "
                          "retry (see the LINSTOR error reports)")
        return info

    def _create_error(self, err: LinstorError, sources: list[str],
                      deadline: Deadline) -> Exception:
        if err.has(consts.FAIL_SNAPSHOTS_NOT_SUPPORTED):
            pools = "; ".join(f"{s}: {self.volumes._pools_of(s, deadline)}" for s in sources
                              if ids.is_valid_name(s))
            return FailedPrecondition(
                f"LINSTOR cannot take snapshots of {', '.join(sources)} in its storage pool "
                f"({pools}): {err.message}; snapshots need a pool of kind LVM_THIN, ZFS, "
                "ZFS_THIN, or FILE_THIN on a filesystem with reflink")
        if err.is_not_found():
            return NotFound(f"source volume not found: {err.message}")
        if err.has(consts.FAIL_NOT_ENOUGH_NODES):
            return FailedPrecondition(f"{', '.join(sources)} has no diskful replica to "
                                      f"snapshot: {err.message}")
        if err.has(consts.FAIL_NOT_CONNECTED):
            return FailedPrecondition(f"a node holding {', '.join(sources)} is offline: "
                                      f"{err.message}")
        if err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN):
            return AlreadyExists(f"snapshot exists already: {err.message}")
        return err

    # -- delete -------------------------------------------------------------------------------

    def delete(self, snapshot_id: str, deadline: Deadline) -> None:
        """DeleteSnapshot: unknown or malformed ids are OK; collects a deleted volume's RD."""
        legacy = ids.legacy_snapshot_name(snapshot_id)
        if legacy is not None:
            snap = self.volumes.lookup_snapshot(snapshot_id, deadline)
            if snap is not None:
                self._delete(snap.resource_name, snap.name, deadline)
            return
        sid = ids.parse_snapshot_id(snapshot_id)
        if sid is None:
            return
        if sid.type != "InCluster":  # hook: remote snapshots (backups.py)
            self.backups.delete(sid, deadline)
            return
        self._delete(sid.resource, sid.snapshot, deadline)

    def _delete(self, rd: str, snap: str, deadline: Deadline) -> None:
        try:
            self.client.delete(f"/v1/resource-definitions/{rd}/snapshots/{snap}",
                               deadline=deadline)
        except LinstorError as err:
            if err.has(consts.FAIL_IN_USE):
                raise FailedPrecondition(f"snapshot {rd}/{snap} is in use (a restore or "
                                         f"shipment is running): {err.message}") from err
            if not err.is_not_found():
                raise
        self.index.release(snap, rd, deadline)  # after the snapshot: see snapshot_index
        self.volumes.collect_if_retired(rd, deadline)

    # -- groups -------------------------------------------------------------------------------

    def create_group(self, name: str, sources: list[str], deadline: Deadline
                     ) -> tuple[str, list[SnapshotInfo]]:
        self.volumes.require_supported(deadline)
        named: dict[tuple[str, int], str] = {}
        group_rd = self._consistency_group_source(sources, deadline, named)
        if group_rd is not None:
            sources = [group_rd]  # one LINSTOR snapshot holds every member
        snap = ids.snapshot_name(name)
        gid = ids.group_snapshot_id(snap)
        want = sorted({s.upper() for s in sources})
        valid = sorted({s for s in sources if ids.is_valid_name(s)})
        found = self.by_name(snap, deadline, resources=valid) if valid else []
        found = [i for i in found if i.group_id != gid] + self._complete(
            snap, gid, [i for i in found if i.group_id == gid], deadline)
        if not found:  # a new name: is it taken in other RDs (CSI names are unique)?
            found = self.by_name(snap, deadline)
        if found:
            have = sorted(i.resource.upper() for i in found)
            if have != want or any(i.group_id != gid for i in found):
                raise AlreadyExists(f"group snapshot {name} exists with other source volumes "
                                    f"({', '.join(sorted(i.resource for i in found))})")
            return gid, expand(sorted(found, key=lambda i: i.resource), named)
        for source in sources:
            if not ids.is_valid_name(source):
                raise NotFound(f"source volume {source} does not exist")
        props = {PROP_SNAPSHOT_NAME: name, PROP_GROUP: gid,
                 PROP_GROUP_SOURCES: ",".join(sorted(set(sources)))}
        body = {"snapshots": [{"name": snap, "resource_name": s, **snapshot_props_fields(props)}
                              for s in sorted(set(sources))]}
        self.index.claim(snap, sorted(set(sources)), deadline)  # CreateSnapshot sees members
        try:
            self.client.post("/v1/actions/snapshot/multi", deadline=deadline, body=body)
        except LinstorError as err:
            raise self._create_error(err, sources, deadline) from err
        found = self.by_name(snap, deadline, resources=valid)
        return gid, expand(sorted(found, key=lambda i: i.resource), named)

    def _consistency_group_source(self, sources: list[str], deadline: Deadline,
                                  named: dict[tuple[str, int], str]) -> str | None:
        """The group RD when ``sources`` are consistency-group members: then they must be every
        member of one group (INVALID_ARGUMENT otherwise: a snapshot of part of a group would be
        the whole resource, and other volumes cannot share its LINSTOR snapshot)."""
        found = []
        for source in sources:
            if ids.parse_member_volume_id(source) is None and \
                    not ids.may_be_consistency_group(source):
                continue
            member = self.volumes.consistency_group_member(source, deadline)
            if member is None and ids.parse_member_volume_id(source) is not None:
                raise NotFound(f"source volume {source} does not exist")
            if member is not None:
                found.append(member)
                named[(member[0].upper(), member[1])] = source
        if not found:
            return None
        if len(found) != len(sources) or len({m[0].upper() for m in found}) != 1:
            raise InvalidArgument(
                f"source_volume_ids {', '.join(sources)} mix members of consistency groups with "
                "other volumes; a group snapshot takes either every member of one consistency "
                "group (select the claims by their linstor.csi.linbit.com/consistency-group "
                "label) or volumes of no group")
        rd, group = found[0][0], found[0][2]
        item = next((i for i in queries.resource_definitions(self.client, deadline, names=[rd])
                     if i.name.upper() == rd.upper()), None)
        vds = item.volume_definitions if item is not None else ()
        taken = {m[1] for m in found}
        missing = [f"{ids.member_volume_id(rd, vd.volume_number or 0)} "
                   f"({vd.props.get(PROP_NAME, '?')})" for vd in vds
                   if (vd.volume_number or 0) not in taken]
        if missing:
            raise InvalidArgument(
                f"a group snapshot of consistency group {group} must take every member (they are "
                f"one LINSTOR resource); missing: {', '.join(missing)}")
        return rd

    def group_members(self, gid: str, deadline: Deadline,
                      snapshot_ids: Sequence[str] = ()) -> list[SnapshotInfo]:
        """The members of group snapshot ``gid``, read from the RDs ``snapshot_ids`` name (CSI
        requires them) and those the members record; from every snapshot only without them."""
        snap = ids.parse_group_snapshot_id(gid)
        if snap is None:
            return []
        rds = sorted({sid.resource for sid in map(ids.parse_snapshot_id, snapshot_ids)
                      if sid is not None and sid.type == "InCluster"
                      and ids.is_valid_name(sid.resource)}
                     | {m[0] for m in map(ids.parse_member_snapshot_id, snapshot_ids)
                        if m is not None})
        found = [i for i in self.by_name(snap, deadline, resources=rds or None)
                 if i.group_id == gid]
        found = self._complete(snap, gid, found, deadline)
        return expand(sorted((i for i in found if i.group_id == gid), key=lambda i: i.resource))

    def _complete(self, snap: str, gid: str, members: list[SnapshotInfo],
                  deadline: Deadline) -> list[SnapshotInfo]:
        """``members`` (of group ``gid``) plus those in other RDs: read from the RDs the members
        record (one filtered read), or from every snapshot for groups that record none."""
        if not members:
            return members
        recorded = members[0].group_sources
        if recorded is not None:
            if {r.upper() for r in recorded} <= {i.resource.upper() for i in members}:
                return members
            return [i for i in self.by_name(snap, deadline, resources=sorted(recorded))
                    if i.group_id == gid]
        return [i for i in self.by_name(snap, deadline) if i.group_id == gid]

    def delete_group(self, gid: str, snapshot_ids: list[str], deadline: Deadline) -> None:
        members = self.group_members(gid, deadline, snapshot_ids)
        if snapshot_ids and members and sorted(snapshot_ids) != sorted(m.id for m in members):
            raise InvalidArgument(f"snapshot_ids do not match the members of group snapshot "
                                  f"{gid}: {', '.join(sorted(m.id for m in members))}")
        for rd, name in dict.fromkeys((m.resource, m.name) for m in members):  # a group's: once
            self._delete(rd, name, deadline)


def _member_number(info: SnapshotInfo) -> int:
    member = ids.parse_member_snapshot_id(info.id)
    return member[1] if member is not None else -1


def _legacy_position(snapshot_id: str) -> listing.Position | None:
    """Where an ``after:<snapshot id>`` token (an earlier driver's) continues."""
    member = ids.parse_member_snapshot_id(snapshot_id)
    if member is not None:
        return listing.Position(key=(member[0].upper(), member[2].upper()), vnr=member[1],
                                offset=-1)
    sid = ids.parse_snapshot_id(snapshot_id)
    if sid is None or not (ids.is_valid_name(sid.resource) and ids.is_valid_name(sid.snapshot)):
        return None
    return listing.Position(key=(sid.resource.upper(), sid.snapshot.upper()), vnr=-1, offset=-1)

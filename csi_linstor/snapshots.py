"""Snapshot operations: CSI snapshots are LINSTOR snapshots of a volume's resource definition.

- LINSTOR snapshot name: ``ids.snapshot_name(csi name)`` (the CSI name when valid, else
  ``snapshot-<uuid5>``), so a retry finds its snapshot with ``GET /v1/view/snapshots?snapshots=``.
- Snapshot id: ``InCluster:///<rd>/<snapshot>``.
- Snapshot props: ``Aux/csi-snapshot-name`` (the CSI name) and, for members of a group snapshot,
  ``Aux/csi-group-snapshot-id``.
- Group snapshots: one ``POST /v1/actions/snapshot/multi`` (one instant for every source); every
  member is the LINSTOR snapshot ``<group snapshot name>`` of its source; the group id is
  ``InCluster:///group/<group snapshot name>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from csi_linstor import ids
from csi_linstor.deadline import Deadline
from csi_linstor.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Snapshot
from csi_linstor.volumes import Volumes

log = logging.getLogger("csi_linstor.snapshots")

PROP_SNAPSHOT_NAME = "Aux/csi-snapshot-name"
PROP_GROUP = "Aux/csi-group-snapshot-id"


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

    @property
    def id(self) -> str:
        return self.handle or ids.snapshot_id(self.resource, self.name)

    @property
    def group_id(self) -> str:
        return self.props.get(PROP_GROUP, "")


def snapshot_info(snap: Snapshot) -> SnapshotInfo:
    return SnapshotInfo(resource=snap.resource_name, name=snap.name,
                        size_bytes=snap.size_kib(0) * 1024, created_ms=snap.created_ms,
                        ready=snap.successful, failed=snap.failed,
                        props=dict(snap.definition_props))


class Snapshots:
    def __init__(self, client: LinstorClient, volumes: Volumes) -> None:
        self.client = client
        self.volumes = volumes

    # -- lookups ------------------------------------------------------------------------------

    def by_name(self, name: str, deadline: Deadline) -> list[SnapshotInfo]:
        """Every LINSTOR snapshot named ``name`` (in any resource definition)."""
        return [snapshot_info(s) for s in queries.view_snapshots(self.client, deadline, [name])
                if s.name.upper() == name.upper() and not s.deleting]

    def get(self, snapshot_id: str, deadline: Deadline) -> SnapshotInfo | None:
        """The snapshot ``snapshot_id`` names; None when missing or not a snapshot id at all."""
        try:
            snap = self.volumes.lookup_snapshot(snapshot_id, deadline)
        except InvalidArgument:
            return None  # S3/Linstor ids: nothing of ours to report
        if snap is None:
            return None
        info = snapshot_info(snap)
        if ids.legacy_snapshot_name(snapshot_id) is not None:
            info.handle = snapshot_id  # answer with the id the caller knows it by
        return info

    def list(self, deadline: Deadline, source: str | None = None) -> list[SnapshotInfo]:
        if source is not None:
            if not ids.is_valid_name(source):
                return []
            try:
                items = queries.snapshots(self.client, source, deadline)
            except LinstorError as err:
                if err.is_not_found():
                    return []
                raise
        else:
            items = queries.view_snapshots(self.client, deadline)
        out = [snapshot_info(s) for s in items if not s.deleting]
        return sorted(out, key=lambda s: s.id)

    # -- create -------------------------------------------------------------------------------

    def create(self, name: str, source: str, deadline: Deadline) -> SnapshotInfo:
        self.volumes.require_supported(deadline)
        snap = ids.snapshot_name(name)
        for _attempt in range(2):
            found = self.by_name(snap, deadline)
            for info in found:
                if info.resource.upper() != source.upper():
                    raise AlreadyExists(f"snapshot {name} exists for volume {info.resource}, not "
                                        f"for {source}")
                if info.group_id:
                    raise AlreadyExists(f"snapshot {name} exists as a member of group snapshot "
                                        f"{info.group_id}")
                if info.failed:
                    log.warning("snapshot %s of %s failed in LINSTOR; deleting and retaking it",
                                snap, source)
                    self._delete(info.resource, info.name, deadline)
                    break
                return info
            else:
                break
        if not ids.is_valid_name(source) or self.volumes.find(source, deadline) is None:
            raise NotFound(f"source volume {source} does not exist")
        try:
            self.client.post(f"/v1/resource-definitions/{source}/snapshots", deadline=deadline,
                             body={"name": snap, "props": {PROP_SNAPSHOT_NAME: name}})
        except LinstorError as err:
            raise self._create_error(err, [source]) from err
        info = self.get(ids.snapshot_id(source, snap), deadline)
        if info is None:
            raise NotFound(f"snapshot {snap} of {source} vanished right after it was taken; retry")
        return info

    @staticmethod
    def _create_error(err: LinstorError, sources: list[str]) -> Exception:
        if err.has(consts.FAIL_SNAPSHOTS_NOT_SUPPORTED):
            return FailedPrecondition(f"the storage pool of {', '.join(sources)} cannot take "
                                      f"snapshots (thick LVM?): {err.message}")
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
        if sid.type != "InCluster":
            raise InvalidArgument(f"{sid.type} snapshots are not supported by this driver yet; "
                                  f"delete {snapshot_id} with LINSTOR's backup commands")
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
        self.volumes.collect_if_retired(rd, deadline)

    # -- groups -------------------------------------------------------------------------------

    def create_group(self, name: str, sources: list[str], deadline: Deadline
                     ) -> tuple[str, list[SnapshotInfo]]:
        self.volumes.require_supported(deadline)
        snap = ids.snapshot_name(name)
        gid = ids.group_snapshot_id(snap)
        want = sorted({s.upper() for s in sources})
        found = self.by_name(snap, deadline)
        if found:
            have = sorted(i.resource.upper() for i in found)
            if have != want or any(i.group_id != gid for i in found):
                raise AlreadyExists(f"group snapshot {name} exists with other source volumes "
                                    f"({', '.join(sorted(i.resource for i in found))})")
            return gid, sorted(found, key=lambda i: i.resource)
        for source in sources:
            if not ids.is_valid_name(source):
                raise NotFound(f"source volume {source} does not exist")
        body = {"snapshots": [{"name": snap, "resource_name": s,
                               "props": {PROP_SNAPSHOT_NAME: name, PROP_GROUP: gid}}
                              for s in sorted(set(sources))]}
        try:
            self.client.post("/v1/actions/snapshot/multi", deadline=deadline, body=body)
        except LinstorError as err:
            raise self._create_error(err, sources) from err
        found = self.by_name(snap, deadline)
        return gid, sorted(found, key=lambda i: i.resource)

    def group_members(self, gid: str, deadline: Deadline) -> list[SnapshotInfo]:
        snap = ids.parse_group_snapshot_id(gid)
        if snap is None:
            return []
        return sorted((i for i in self.by_name(snap, deadline) if i.group_id == gid),
                      key=lambda i: i.resource)

    def delete_group(self, gid: str, snapshot_ids: list[str], deadline: Deadline) -> None:
        members = self.group_members(gid, deadline)
        if snapshot_ids and members and sorted(snapshot_ids) != sorted(m.id for m in members):
            raise InvalidArgument(f"snapshot_ids do not match the members of group snapshot "
                                  f"{gid}: {', '.join(sorted(m.id for m in members))}")
        for m in members:
            self._delete(m.resource, m.name, deadline)

"""Sources, part 1: a volume restored from a snapshot (CreateVolume with a snapshot source).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Snapshot
from csi_linstor.mapping import ids
from csi_linstor.mapping.replica_states import describe_not_uptodate
from csi_linstor.mapping.topology import NodeIndex
from csi_linstor.mapping.volume_model import (
    CLONED_OWNER_PROPS,
    COPIED_PROPS_TO_DROP,
    PROP_NAME,
    CreateSpec,
    Volume,
    VolumeLookups,
    log,
)


def _restored_over(spec: CreateSpec, vol: Volume, origin: Mapping[str, str]) -> bool:
    """Whether ``vol`` is our restore of a snapshot of an RD with props ``origin``, interrupted
    right after snapshot-restore-resource: LINSTOR copied the origin's props over ours (a union:
    ours that the origin lacks stay), so it carries the origin's ownership props."""
    return (origin.get(PROP_NAME, spec.name) != spec.name
            and vol.props.get(PROP_NAME) == origin[PROP_NAME]
            and all(vol.props.get(k) == v for k, v in origin.items() if k in CLONED_OWNER_PROPS))


class Restoring(VolumeLookups):
    """Restore a snapshot into a new volume, resumable after a crash."""

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
        if ids.parse_member_snapshot_id(snapshot_id) is not None:
            raise InvalidArgument(
                f"source snapshot {snapshot_id} is one member of a consistency-group snapshot; "
                "restoring single members is not supported by this driver yet (LINSTOR restores "
                "a snapshot's volumes together, into a resource without replicas): restore with "
                "`linstor snapshot resource restore` by hand, or keep LINBIT's driver for it")
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

    def _grow(self, rd: str, kib: int, deadline: Deadline, vnr: int = 0) -> None:
        """Grow VD ``vnr`` of ``rd`` to ``kib`` (one PUT); the errors a user can act on, typed."""
        try:
            self.client.put(f"/v1/resource-definitions/{rd}/volume-definitions/{vnr}",
                            deadline=deadline, body={"size_kib": kib})
        except LinstorError as err:
            if err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
                raise ResourceExhausted(f"not enough space to grow {rd}: {err.message}") from err
            if err.has(consts.FAIL_NOT_ALL_UPTODATE):
                # name the replicas: LINSTOR's message does not (issue 15)
                which = describe_not_uptodate(lambda: self.resources(rd, deadline))
                raise Unavailable(f"{rd} cannot grow while a replica is not UpToDate{which}: "
                                  f"{err.message}; retry when it has synced") from err
            raise

    def _restore_error(self, spec: CreateSpec, err: LinstorError) -> Exception:
        if err.has(consts.FAIL_NOT_ENOUGH_NODES) or err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
            return ResourceExhausted(f"restoring {spec.rd} failed: {err.message}")
        if err.is_not_found():
            return NotFound(f"restoring {spec.rd}: {err.message}")
        return err

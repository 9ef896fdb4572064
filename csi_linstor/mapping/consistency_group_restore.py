"""Restoring consistency-group members from a group snapshot (issue 17 item 5).

A claim labelled with group ``g'`` whose data source is a member snapshot
``InCluster:///<source rd>/<vnr>/<snapshot>`` becomes volume number ``vnr`` of ``g'``'s resource,
holding that member's data. LINSTOR restores a snapshot only as a whole, into a resource
definition without resources (``snapshot-restore-volume-definition`` creates every volume
definition the snapshot has, untagged; ``snapshot-restore-resource`` the replicas with the data;
CtrlSnapshotRestoreVlmDfnApiCallHandler, CtrlSnapshotRestoreApiCallHandler). So:

1. the first restored member creates ``g'``'s RD with ``Aux/csi-restored-from=<rd>/<snapshot>``
   (in the same request) and restores the whole snapshot into it;
2. LINSTOR copies the source members' volume-definition props too (their names and done
   markers): those of every volume no claim of this restore took (``Aux/csi-content-source`` is
   the claim's mark) are removed, so they are nobody's;
3. each member then claims its number: tags that volume definition with its name (the same props
   CreateVolume writes, and its content source), and grows it when the claim asks for more than
   the snapshot's size;
4. volume definitions no claim takes stay untagged: they are not volumes (never listed) and go
   with the resource when its last tagged member is deleted.

Every step is found again by a retry (RD prop, volume definitions, resources, tag), so a crash at
any point resumes. ``g'`` must be new (or emptied: retired by its last delete) or restored from
the same snapshot; a group holding other volumes is INVALID_ARGUMENT (LINSTOR cannot restore into
a resource that has replicas). A member snapshot is restored only into a group (an unlabelled
claim from one is refused in restore.py), and a group member only from a member snapshot.
"""

from __future__ import annotations

from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import ResourceDefinition, Snapshot
from csi_linstor.mapping import ids
from csi_linstor.mapping.volume_model import (
    COPIED_PROPS_TO_DROP,
    KIB,
    PROP_ACCESS,
    PROP_CONSISTENCY_GROUP,
    PROP_DELETED,
    PROP_DONE,
    PROP_FROM_BLOCK,
    PROP_FS,
    PROP_NAME,
    PROP_PVC_NAME,
    PROP_PVC_NAMESPACE,
    PROP_SOURCE,
    CreateSpec,
    VolumeLookups,
    log,
)

# what CreateVolume writes on a member's volume definition (consistency_group_create)
MEMBER_PROPS = (PROP_NAME, PROP_DONE, PROP_ACCESS, PROP_FS, PROP_PVC_NAME, PROP_PVC_NAMESPACE,
                PROP_SOURCE, PROP_FROM_BLOCK)
PROP_RESTORED_FROM = "Aux/csi-restored-from"  # "<source rd>/<snapshot>" on a restored group's RD


class ConsistencyGroupRestore(VolumeLookups):
    """The restore path of ``ConsistencyGroupCreate.create_member``."""

    def _member_snapshot(self, spec: CreateSpec, key: str,
                         deadline: Deadline) -> tuple[Snapshot, int]:
        assert spec.source is not None
        member = ids.parse_member_snapshot_id(spec.source.id)
        if member is None:
            raise InvalidArgument(
                f"volume {spec.name} asks to join consistency group {key} restored from "
                f"{spec.source.id}; a group member is restored only from a member of a "
                "consistency-group snapshot (InCluster:///cg-…/<vnr>/<snapshot>): restore it "
                "without the consistency-group label")
        src, vnr, name = member
        try:
            snap = queries.snapshot(self.client, src, name, deadline)
        except LinstorError as err:
            if err.is_not_found():
                raise NotFound(f"source snapshot {spec.source.id} does not exist") from err
            raise
        if snap.deleting or not any((vd.volume_number or 0) == vnr
                                    for vd in snap.volume_definitions):
            raise NotFound(f"source snapshot {spec.source.id} does not exist")
        if not snap.successful:
            raise Unavailable(f"source snapshot {spec.source.id} is not ready (flags "
                              f"{', '.join(snap.flags) or 'none'}); retry when it is")
        return snap, vnr

    def restore_member(self, spec: CreateSpec, key: str, kib: int, deadline: Deadline,
                       call_log: Any = log) -> int:
        """Restore (or resume restoring) the group snapshot into ``spec.rd`` and claim the
        member's volume number; returns it. Runs under the group's lock."""
        snap, vnr = self._member_snapshot(spec, key, deadline)
        origin = f"{snap.resource_name}/{snap.name}"
        size = snap.size_kib(vnr) * KIB
        if spec.required_bytes and spec.required_bytes < size:
            raise OutOfRange(f"the requested size {spec.required_bytes} bytes is smaller than "
                             f"the source ({size} bytes); request at least the source's size")
        if spec.limit_bytes and size > spec.limit_bytes:
            raise OutOfRange(f"the source is {size} bytes, more than limit_bytes "
                             f"{spec.limit_bytes}")
        kib = max(kib, snap.size_kib(vnr))
        rd = spec.rd
        item = self._restore_target(spec, key, origin, deadline)
        if not item.volume_definitions:
            call_log.info("restoring group snapshot %s into consistency group %s (%s)",
                          origin, key, rd)
            self._restore_call("snapshot-restore-volume-definition", snap, rd, spec, deadline,
                               consts.FAIL_EXISTS_VLM_DFN)
        if not queries.resources(self.client, rd, deadline):
            count = spec.mutable_count or spec.params.placement_count or 1
            self._restore_call("snapshot-restore-resource", snap, rd, spec, deadline,
                               consts.FAIL_EXISTS_RSC, nodes=list(snap.nodes)[:count])
        # restore-resource copied the source RD's props over ours (CtrlSnapshotRestoreApi-
        # CallHandler): the group is this one, and nothing of the source's volumes stays
        drop = [k for k in (*COPIED_PROPS_TO_DROP, PROP_NAME)
                if k in snap.resource_definition_props]
        self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline, body={
            "override_props": {PROP_CONSISTENCY_GROUP: key, PROP_RESTORED_FROM: origin},
            **({"delete_props": drop} if drop else {})})
        item = self._group_rd(rd, deadline) or item  # type: ignore[attr-defined]
        # restore-resource also copied each source member's volume-definition props (its name,
        # done marker, claim): a volume no claim of this restore took is nobody's yet
        for other in item.volume_definitions:
            n = other.volume_number or 0
            mine = other.props.get(PROP_SOURCE) == \
                f"snapshot:{ids.member_snapshot_id(snap.resource_name, n, snap.name)}"
            stale = [k for k in MEMBER_PROPS if k in other.props]
            if not mine and stale:
                self.client.put(f"/v1/resource-definitions/{rd}/volume-definitions/{n}",
                                deadline=deadline, body={"delete_props": stale})
        item = self._group_rd(rd, deadline) or item  # type: ignore[attr-defined]
        vd = item.volume_definition(vnr)
        if vd is None:
            raise NotFound(f"group snapshot {origin} has no volume {vnr} in its restore {rd}")
        owner = vd.props.get(PROP_NAME)
        if owner is not None and owner != spec.name:
            raise AlreadyExists(f"volume {vnr} of consistency group {key}, restored from "
                                f"{origin}, is already restored as {owner}")
        if owner is None:
            props = {**self._member_props(spec), PROP_SOURCE: spec.source.render()}  # type: ignore[attr-defined,union-attr]
            origin_vd = next((v.volume_definition_props for v in snap.volume_definitions
                              if (v.volume_number or 0) == vnr), {})
            if spec.access_type == "mount" and (origin_vd.get(PROP_ACCESS) == "block" or
                                                origin_vd.get(PROP_FROM_BLOCK) == "true"):
                props[PROP_FROM_BLOCK] = "true"  # raw data: mounted if it has a filesystem,
                # never formatted (as restore.py does for whole volumes)
            self.client.put(f"/v1/resource-definitions/{rd}/volume-definitions/{vnr}",
                            deadline=deadline, body={"override_props": props})
        if kib > vd.size_kib:
            self._grow(rd, kib, deadline, vnr=vnr)  # type: ignore[attr-defined]
        return vnr

    def _restore_target(self, spec: CreateSpec, key: str, origin: str,
                        deadline: Deadline) -> ResourceDefinition:
        """The group's RD, new or resumable for this restore; INVALID_ARGUMENT when it holds
        other volumes."""
        rd = spec.rd
        item: ResourceDefinition | None = self._group_rd(rd, deadline)  # type: ignore[attr-defined]
        if item is None:
            return self._ensure_group_rd(  # type: ignore[attr-defined,no-any-return]
                rd, key, spec, deadline, extra={PROP_RESTORED_FROM: origin})
        if item.props.get(PROP_RESTORED_FROM) == origin and not item.props.get(PROP_DELETED):
            # this restore, resumed
            if "DELETE" in item.flags:
                raise Aborted(f"consistency group {key} ({rd}) is still being deleted by "
                              "LINSTOR; retry once it is gone")
            return item
        item = self._ensure_group_rd(rd, key, spec, deadline)  # type: ignore[attr-defined]
        assert item is not None
        if item.volume_definitions or queries.resources(self.client, rd, deadline):
            raise InvalidArgument(
                f"consistency group {key} already holds other volumes; restored members join "
                f"only a new group (or one restored from the same snapshot {origin}): give the "
                "restored claims a new consistency-group label")
        self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                        body={"override_props": {PROP_RESTORED_FROM: origin}})
        return self._group_rd(rd, deadline) or item  # type: ignore[attr-defined,no-any-return]

    def _restore_call(self, action: str, snap: Snapshot, rd: str, spec: CreateSpec,
                      deadline: Deadline, exists: int, nodes: list[str] | None = None) -> None:
        body: dict[str, Any] = {"to_resource": rd}
        if nodes:
            body["nodes"] = nodes
        try:
            self.client.post(f"/v1/resource-definitions/{snap.resource_name}/{action}/"
                             f"{snap.name}", deadline=deadline, body=body)
        except LinstorError as err:
            if err.has(exists):
                return  # done by an earlier, interrupted try
            if err.has(consts.FAIL_NOT_ENOUGH_NODES) or \
                    err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
                raise ResourceExhausted(f"restoring {spec.name} into {rd} failed: "
                                        f"{err.message}") from err
            raise

"""Consistency groups this driver makes (issue 17 item 5, ``--enable-consistency-groups``).

Claims in one namespace labelled ``linstor.csi.linbit.com/consistency-group: <g>`` become volume
numbers of one LINSTOR resource definition, so one LINSTOR snapshot of it is crash-consistent
across all of them (all disks of a VM). The layout is LINBIT's driver's:

- the RD ``cg-<uuid5("<namespace>/<g>")>`` in the class's resource group, with the RD property
  ``Aux/linstor.csi.linbit.com/consistency-group = <namespace>/<g>``;
- each member one volume definition (VD) whose props tag it: ``Aux/csi-volume-name`` (the CSI
  name), its access type, filesystem, claim and the done marker;
- the CSI volume id ``cg-…/<vnr>`` (this driver writes ``/0`` too; LINBIT's bare ``cg-…`` for
  number 0 is read).

CreateVolume of a member is crash-safe and idempotent without any lock between controllers:

1. the RD is created when missing (``FAIL_EXISTS_RSC_DFN`` tolerated: a concurrent member);
2. the member's VD is looked up by its tag; when there is none, one ``POST volume-definitions``
   without a number creates it *with* its tag (LINSTOR picks the lowest number used neither by
   a VD nor by a snapshot: ``CtrlRscDfnApiCallHandler.getVlmNr``), so no untagged VD can be left
   by a crash; a retry finds the tagged VD;
3. two creates of one name racing (a controller fail-over) may both add a VD: the lowest tagged
   number is kept and the others are deleted, by whichever create looks;
4. the first member places the RD with the class's filter (later members' VDs are deployed by
   LINSTOR on the RD's existing resources); a placement failure deletes the member's VD (and the
   RD when it was the only one), so a claim deleted meanwhile leaves nothing.

DeleteVolume deletes the member's VD only (LINSTOR refuses while any member is in use on a node:
FAILED_PRECONDITION); the last member deletes the RD, or, when snapshots of the group remain,
retires it like any volume's RD (``Aux/csi-deleted``; the last snapshot's delete collects it)
until a new member revives it.

A member restored from a group snapshot: consistency_group_restore.py.

Refused with INVALID_ARGUMENT: a clone into a group, a resource-group mismatch with the group's
RD, and multi-node access modes (two primaries would apply to every member).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    AlreadyExists,
    CsiError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import ResourceDefinition, VolumeDefinition
from csi_linstor.mapping import ids
from csi_linstor.mapping.volume_model import (
    DONE_VALUE,
    KIB,
    MIB,
    MIN_SIZE,
    PROP_ACCESS,
    PROP_CONSISTENCY_GROUP,
    PROP_DELETED,
    PROP_DONE,
    PROP_FS,
    PROP_NAME,
    PROP_PVC_NAME,
    PROP_PVC_NAMESPACE,
    CreateSpec,
    Volume,
    VolumeLookups,
    allocation_kib,
    log,
)

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _group_lock(rd: str) -> threading.Lock:
    """One lock per group RD in this process: members of one group are created and deleted one
    at a time here (a last-member delete never races a new member's create in one controller)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(rd.upper(), threading.Lock())


class ConsistencyGroupCreate(VolumeLookups):
    """Create, delete and grow members of this driver's consistency groups."""

    # -- lookups ------------------------------------------------------------------------------

    def _group_rd(self, rd: str, deadline: Deadline) -> ResourceDefinition | None:
        for item in queries.resource_definitions(self.client, deadline, names=[rd]):
            if item.name.upper() == rd.upper():
                return item
        return None

    @staticmethod
    def _tagged(item: ResourceDefinition, name: str) -> list[int]:
        return sorted(vd.volume_number or 0 for vd in item.volume_definitions
                      if vd.props.get(PROP_NAME) == name)

    # -- create -------------------------------------------------------------------------------

    def create_member(self, spec: CreateSpec, namespace: str, group: str,
                      deadline: Deadline, call_log: Any = log) -> Volume:
        """CreateVolume of a claim labelled with consistency group ``group``."""
        key = f"{namespace}/{group}"
        if spec.source is not None and spec.source.kind == "volume":
            raise InvalidArgument(
                f"volume {spec.name} asks to join consistency group {key} as a clone of "
                f"{spec.source.id}; a clone cannot join a consistency group (LINSTOR clones "
                "whole resources): create it without the label, or snapshot the group")
        self.require_supported(deadline)
        if spec.params.placement_count == 0 and not spec.params.manual \
                and spec.mutable_count is None:
            spec.params = self._group_count(spec.params, deadline)  # type: ignore[attr-defined]
        p = spec.params
        kib = allocation_kib(spec.required_bytes, 0 if spec.source else spec.limit_bytes,
                             MIN_SIZE.get(spec.fs_type or "block", 2 * MIB))
        rd = ids.consistency_group_rd(namespace, group)
        spec = replace(spec, rd=rd)
        self.ensure_resource_group(p, deadline)  # type: ignore[attr-defined]
        with _group_lock(rd):
            if spec.source is not None:  # a member of a group snapshot
                vnr = self.restore_member(spec, key, kib, deadline,  # type: ignore[attr-defined]
                                          call_log)
                item = self._group_rd(rd, deadline)
                vd = item.volume_definition(vnr) if item is not None else None
                if vd is None:
                    raise Aborted(f"the restore of {spec.name} into {rd} vanished; retry")
                self._check_member(spec, vd)
            else:
                item = self._ensure_group_rd(rd, key, spec, deadline)
                vnr = self._claim_number(item, spec, kib, deadline, call_log)
            resources = self.resources(rd, deadline)
            if not [r for r in resources if not r.is_diskless and not r.deleting]:
                try:
                    self._place(spec, deadline)  # type: ignore[attr-defined]
                except CsiError:
                    call_log.info("placing consistency group %s failed: deleting member %s "
                                  "(volume number %d) again", key, spec.name, vnr)
                    self._drop_member(rd, vnr, deadline)
                    raise
        vol = self.find(ids.member_volume_id(rd, vnr), deadline)
        if vol is None:
            raise Aborted(f"member {spec.name} of consistency group {key} vanished while it was "
                          "being created; retry")
        return vol

    def _ensure_group_rd(self, rd: str, key: str, spec: CreateSpec, deadline: Deadline,
                         extra: dict[str, str] | None = None) -> ResourceDefinition:
        """The group's RD (created with ``extra`` props when missing), checked to be this
        group's, in the class's resource group, not being deleted; revived when retired."""
        p = spec.params
        item = self._group_rd(rd, deadline)
        if item is None:
            body: dict[str, Any] = {"name": rd, "resource_group_name": p.resource_group,
                                    "props": {PROP_CONSISTENCY_GROUP: key, **(extra or {})}}
            if p.layer_list:
                body["layer_data"] = [{"type": layer} for layer in p.layer_list]
            try:
                self.client.post("/v1/resource-definitions", deadline=deadline,
                                 body={"resource_definition": body})
            except LinstorError as err:
                if not err.has(consts.FAIL_EXISTS_RSC_DFN):  # a concurrent member made it
                    raise
            item = self._group_rd(rd, deadline)
            if item is None:
                raise Aborted(f"the resource definition {rd} of consistency group {key} "
                              "appeared and vanished concurrently; retry")
        if "DELETE" in item.flags:
            raise Aborted(f"consistency group {key} (LINSTOR resource {rd}) is still being "
                          "deleted by LINSTOR (flag DELETE: a satellite holding it has not "
                          "confirmed); retry once it is gone")
        if item.props.get(PROP_CONSISTENCY_GROUP) != key:
            raise AlreadyExists(f"LINSTOR resource definition {rd} exists and is not consistency "
                                f"group {key}; it was not changed")
        if item.resource_group_name.upper() != p.resource_group.upper():
            raise InvalidArgument(
                f"consistency group {key} is in resource group {item.resource_group_name}, but "
                f"claim {spec.name}'s StorageClass maps to {p.resource_group}; every member of "
                "a group is one LINSTOR resource, so all must use StorageClasses with the same "
                "placement and properties")
        if item.props.get(PROP_DELETED):
            # its last member was deleted while snapshots of the group remained: it lives again
            self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                            body={"delete_props": [PROP_DELETED]})
            item = self._group_rd(rd, deadline) or item
        return item

    def _member_props(self, spec: CreateSpec) -> dict[str, str]:
        props = {PROP_NAME: spec.name, PROP_ACCESS: spec.access_type, PROP_DONE: DONE_VALUE}
        if spec.fs_type:
            props[PROP_FS] = spec.fs_type
        if spec.params.pvc_name:
            props[PROP_PVC_NAME] = spec.params.pvc_name
        if spec.params.pvc_namespace:
            props[PROP_PVC_NAMESPACE] = spec.params.pvc_namespace
        return props

    def _claim_number(self, item: ResourceDefinition, spec: CreateSpec, kib: int,
                      deadline: Deadline, call_log: Any) -> int:
        """The member's volume number: its tagged VD, else a new tagged VD (LINSTOR numbers it)."""
        rd = item.name
        tagged = self._tagged(item, spec.name)
        if not tagged:
            try:
                self.client.post(f"/v1/resource-definitions/{rd}/volume-definitions",
                                 deadline=deadline, body={"volume_definition": {
                                     "size_kib": kib, "props": self._member_props(spec)}})
            except LinstorError as err:
                if err.has(consts.FAIL_NOT_ENOUGH_FREE_SPACE):
                    raise ResourceExhausted(f"no space for member {spec.name} in consistency "
                                            f"group {rd}: {err.message}") from err
                raise
            item = self._group_rd(rd, deadline) or item
            tagged = self._tagged(item, spec.name)
            if not tagged:
                raise Aborted(f"the volume definition of {spec.name} in {rd} vanished right "
                              "after it was created; retry")
        keep, *duplicates = tagged
        for vnr in duplicates:  # a racing create of the same name (controller fail-over)
            call_log.warning("consistency group %s: member %s has volume numbers %s; keeping %d",
                             rd, spec.name, tagged, keep)
            self._drop_vd(rd, vnr, deadline)
        vd = item.volume_definition(keep)
        assert vd is not None
        self._check_member(spec, vd)
        return keep

    @staticmethod
    def _check_member(spec: CreateSpec, vd: VolumeDefinition) -> None:
        have_access = vd.props.get(PROP_ACCESS, "mount")
        if have_access != spec.access_type:
            raise AlreadyExists(f"volume {spec.name} exists as a {have_access} volume, the "
                                f"request asks for {spec.access_type}")
        have_fs = vd.props.get(PROP_FS, "")
        if spec.fs_type and have_fs and have_fs != spec.fs_type:
            raise AlreadyExists(f"volume {spec.name} exists with filesystem {have_fs}, the "
                                f"request asks for {spec.fs_type}")
        size = vd.size_kib * KIB
        if size < spec.required_bytes or (spec.limit_bytes and size > spec.limit_bytes):
            raise AlreadyExists(f"volume {spec.name} exists with {size} bytes, outside the "
                                f"requested range [{spec.required_bytes}, "
                                f"{spec.limit_bytes or 'unlimited'}]")

    # -- delete -------------------------------------------------------------------------------

    def delete_member(self, rd: str, vnr: int, deadline: Deadline) -> None:
        """DeleteVolume of member ``vnr``: its VD; the RD with the last one. Missing → OK."""
        with _group_lock(rd):
            self._drop_member(rd, vnr, deadline)

    def _drop_member(self, rd: str, vnr: int, deadline: Deadline) -> None:
        item = self._group_rd(rd, deadline)
        if item is None or PROP_CONSISTENCY_GROUP not in item.props:
            return  # gone (or never a group: such a member id names nothing)
        if item.volume_definition(vnr) is not None:
            self._drop_vd(rd, vnr, deadline)
            item = self._group_rd(rd, deadline)
        if item is not None and not any(vd.props.get(PROP_NAME)
                                        for vd in item.volume_definitions):
            # the last member: the untagged VDs left are a restore's volumes no claim took;
            # they go first, so an RD kept for snapshots is always empty
            for vd in item.volume_definitions:
                self._drop_vd(rd, vd.volume_number or 0, deadline)
            self._drop_group_rd(rd, deadline)

    def _drop_vd(self, rd: str, vnr: int, deadline: Deadline) -> None:
        try:
            self.client.delete(f"/v1/resource-definitions/{rd}/volume-definitions/{vnr}",
                               deadline=deadline)
        except LinstorError as err:
            if err.has(consts.FAIL_IN_USE):
                raise FailedPrecondition(
                    f"volume number {vnr} of consistency group {rd} cannot be deleted while a "
                    f"member of the group is in use (LINSTOR refuses to delete a volume of an "
                    f"in-use resource): {err.message}; stop the pods using the group's "
                    "volumes, the delete is retried") from err
            if not err.is_not_found():
                raise

    def _drop_group_rd(self, rd: str, deadline: Deadline) -> None:
        try:
            self.client.delete(f"/v1/resource-definitions/{rd}", deadline=deadline)
            return
        except LinstorError as err:
            if err.is_not_found():
                return
            if err.has(consts.FAIL_IN_USE):
                raise FailedPrecondition(f"consistency group {rd} is still in use: "
                                         f"{err.message}") from err
            if not err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN):
                raise
        # snapshots of the group remain: keep the RD for them, hidden (like any volume's), and
        # without replicas. Its resources are read per RD: real LINSTOR's /v1/view/resources
        # leaves out resources that have no volumes (seen on 1.33.3), and these have none now.
        self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                        body={"override_props": {PROP_DELETED: "true"}})
        for res in sorted(queries.resources(self.client, rd, deadline),
                          key=lambda r: not r.is_diskless):
            try:
                self.client.delete(f"/v1/resource-definitions/{rd}/resources/{res.node_name}",
                                   deadline=deadline, params={"keep_tiebreaker": "false"})
            except LinstorError as err:
                if err.has(consts.FAIL_IN_USE):
                    raise FailedPrecondition(f"consistency group {rd} is in use on "
                                             f"{res.node_name}: {err.message}") from err
                if not err.is_not_found():
                    raise

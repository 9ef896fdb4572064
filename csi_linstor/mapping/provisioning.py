"""Provisioning: CreateVolume's resource group, spawn and resume, and DeleteVolume's retire/collect.

The done marker is written last, so a retry after a crash at any point resumes from what it
finds (see volume_model for the props).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    AlreadyExists,
    CsiError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from csi_linstor.linstor import consts, queries, versions
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Snapshot
from csi_linstor.mapping import ids, qos
from csi_linstor.mapping.clone import _unfixed_clone
from csi_linstor.mapping.params import VolumeParameters
from csi_linstor.mapping.restore import _restored_over
from csi_linstor.mapping.topology import NodeIndex
from csi_linstor.mapping.volume_model import (
    DONE_VALUE,
    KIB,
    MIB,
    MIN_SIZE,
    PROP_ACCESS,
    PROP_CLONE_FOR,
    PROP_CLONE_VIA,
    PROP_DELETED,
    PROP_DONE,
    PROP_FROM_BLOCK,
    PROP_FS,
    PROP_NAME,
    PROP_PVC_NAME,
    PROP_PVC_NAMESPACE,
    PROP_SOURCE,
    CreateSpec,
    Volume,
    VolumeLookups,
    _Exists,
    _rg_key,
    allocation_kib,
    log,
)


class Provisioning(VolumeLookups):
    """Create (spawn or multi-step, resumable) and delete (retire while snapshots remain)."""

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
        props.update(qos.rd_props(spec.params.qos))  # issue 17 hook: IO QoS limits
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
        if "DELETE" in vol.flags:  # never hand out a volume LINSTOR is deleting (issue 15)
            raise Aborted(
                f"volume {spec.rd} is still being deleted by LINSTOR (its resource definition "
                "is marked DELETE until every satellite holding it confirms; a satellite is "
                "probably offline): retry once it is gone")
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

    def delete(self, rd: str, deadline: Deadline) -> None:
        """DeleteVolume: one DELETE normally; keeps (and hides) an RD that still has snapshots."""
        if not ids.is_valid_name(rd) or ids.may_be_consistency_group(rd):
            # A consistency-group member is one volume definition of the shared resource:
            # deleting the resource would delete every member.
            # A retry after a crash between the last member's VD and the RD finds no VD and
            # still deletes the empty RD, so member ids go to delete_member unchecked.
            member = ids.parse_member_volume_id(rd)
            if member is None:
                found = self.consistency_group_member(rd, deadline)  # LINBIT's bare form
                member = found[:2] if found is not None else None
            if member is not None:
                self.delete_member(member[0], member[1], deadline)  # type: ignore[attr-defined]
                return
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

"""Sources, part 2: a volume cloned from a volume (LINSTOR's clone, or a temporary snapshot where
the pool cannot clone).
"""

from __future__ import annotations

import time
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from csi_linstor.linstor import consts, queries, versions
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Snapshot, snapshot_props_fields
from csi_linstor.mapping import ids
from csi_linstor.mapping import volume_model as model
from csi_linstor.mapping.volume_model import CreateSpec, Volume, VolumeLookups, log


def _unfixed_clone(spec: CreateSpec, vol: Volume, src: Volume) -> bool:
    """Whether ``vol`` is our clone of ``src`` made on REST < 1.26 whose props were not set yet:
    it still carries exactly the source's ownership props (a clone copies them all)."""
    return (vol.id.upper() != src.id.upper() and vol.props.get(model.PROP_NAME) != spec.name
            and all(vol.props.get(k) == src.props.get(k) for k in model.CLONED_OWNER_PROPS))


class Cloning(VolumeLookups):
    """Clone a volume, natively or through a temporary snapshot, resumable after a crash."""

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
        return {model.PROP_CLONE_VIA: f"{src.id}/{ids.snapshot_name(f'clone-for-{spec.rd}')}"}

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
                                       **snapshot_props_fields({model.PROP_CLONE_FOR: rd})})
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
        drop = [k for k in (model.PROP_DONE, model.PROP_PVC_NAME, model.PROP_PVC_NAMESPACE,
                            model.PROP_SOURCE, model.PROP_FS, model.PROP_DELETED,
                            model.PROP_FROM_BLOCK)
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

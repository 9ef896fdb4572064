"""Resizing and modification: ControllerExpandVolume, ControllerModifyVolume and the volume
condition reported by ListVolumes/GetVolume.
"""

from __future__ import annotations

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition, InvalidArgument, OutOfRange, ResourceExhausted
from csi_linstor.linstor import consts
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping import ids
from csi_linstor.mapping.volume_model import KIB, Volume, VolumeLookups, round_kib


class Resizing(VolumeLookups):
    """Grow a volume, change its replica count or props, and report its condition."""

    def expand(self, volume_id: str, required: int, limit: int, deadline: Deadline) -> Volume:
        """ControllerExpandVolume: grow the volume's VD (a consistency-group member's own VD,
        ``cg-…/<vnr>``, only)."""
        self.require_supported(deadline)
        vol = self.require(volume_id, deadline)
        rd, vnr = ids.volume_rd(volume_id)
        if limit and required > limit:
            raise OutOfRange(f"required_bytes {required} exceeds limit_bytes {limit}")
        if limit and vol.capacity_bytes > limit:
            raise OutOfRange(f"volume {volume_id} is already {vol.capacity_bytes} bytes, more "
                             f"than limit_bytes {limit}; volumes cannot shrink")
        kib = round_kib(max(required, 0))
        if limit and kib * KIB > limit:
            raise OutOfRange(f"{required} bytes rounded up to whole KiB exceeds limit_bytes {limit}")
        if kib <= vol.size_kib:
            return vol
        self._grow(rd, kib, deadline, vnr=vnr or 0)
        vol.size_kib = kib
        return vol

    def modify(self, rd: str, count: int | None, props: dict[str, str],
               deadline: Deadline) -> None:
        self.require_supported(deadline)
        self.refuse_consistency_group(
            rd, "modified", deadline, "change the resource group's properties for the whole "
            "group (`linstor resource-group set-property`), or the resource by hand")
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

"""Consistency groups: which volumes belong to one (an RD prop) and refusing the per-volume actions
not taken on members (modify, a snapshot of one member, deleting one member's snapshot).
"""

from __future__ import annotations

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition
from csi_linstor.linstor import queries
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.mapping import ids
from csi_linstor.mapping.volume_model import PROP_CONSISTENCY_GROUP, VolumeLookups


class ConsistencyGroups(VolumeLookups):
    """Consistency-group membership checks."""

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

    def refuse_consistency_group(self, volume_id: str, action: str, deadline: Deadline,
                                 hint: str = "") -> None:
        """FAILED_PRECONDITION for a consistency-group member, for the actions this driver does
        not take on one volume number of a shared resource (``action``: "modified",
        "snapshotted alone")."""
        member = self.consistency_group_member(volume_id, deadline)
        if member is None:
            return
        rd, vnr, group = member
        raise FailedPrecondition(
            f"volume {volume_id} is volume number {vnr} of consistency group {group} (LINSTOR "
            f"resource {rd}); its members are one LINSTOR resource, so it cannot be {action}"
            f"{'; ' + hint if hint else ''}")

    def refuse_consistency_group_snapshot(self, snapshot_id: str, deadline: Deadline) -> None:
        """FAILED_PRECONDITION for an existing member of a consistency-group snapshot: all
        members are one LINSTOR snapshot, which DeleteSnapshot of one member must neither delete
        nor leak by answering OK."""
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
            f"{snap} of {rd}: one LINSTOR snapshot holds every member, so it cannot be deleted "
            f"alone. Delete its VolumeGroupSnapshot, or by hand `linstor snapshot delete {rd} "
            f"{snap}`")

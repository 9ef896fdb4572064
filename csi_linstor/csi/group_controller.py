"""GroupController service: crash-consistent snapshots of several volumes at one instant.

A group snapshot is one ``POST /v1/actions/snapshot/multi``; its id is
``InCluster:///group/<snapshot name>`` and each member is the LINSTOR snapshot of that name in
its source volume, tagged ``Aux/csi-group-snapshot-id``. Members are ordinary snapshots: they
restore like any other and appear in ListSnapshots.

LINBIT's driver used the bare LINSTOR snapshot name as the group snapshot id, with the members
being every snapshot of that name (one per source; one for a whole consistency group). Such ids
are resolved the same way, so Get and Delete act on what they name instead of answering
NOT_FOUND or, worse, OK while the snapshots stay.
"""

from __future__ import annotations

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.csi.messages import _timestamp, snapshot_message
from csi_linstor.deadline import Deadline
from csi_linstor.errors import InvalidArgument, NotFound
from csi_linstor.mapping import ids
from csi_linstor.mapping.snapshot_params import parse_snapshot_parameters
from csi_linstor.mapping.snapshots import SnapshotInfo, Snapshots
from csi_linstor.rpc import Call, Runtime, rpc

GroupCap = csi_pb2.GroupControllerServiceCapability.RPC


def _group(gid: str, members: list[SnapshotInfo]) -> csi_pb2.VolumeGroupSnapshot:
    created = min((m.created_ms for m in members), default=0)
    return csi_pb2.VolumeGroupSnapshot(
        group_snapshot_id=gid, snapshots=[snapshot_message(m, gid) for m in members],
        creation_time=_timestamp(created), ready_to_use=all(m.ready for m in members))


class GroupControllerServicer(csi_pb2_grpc.GroupControllerServicer):
    def __init__(self, runtime: Runtime, snapshots: Snapshots) -> None:
        self.runtime = runtime
        self.snapshots = snapshots

    def _members(self, gid: str, deadline: Deadline,
                 snapshot_ids: list[str] | None = None) -> list[SnapshotInfo]:
        """Members of ``gid`` in this driver's form, or of a bare-name id of LINBIT's driver."""
        legacy = ids.legacy_snapshot_name(gid)
        if legacy is None:
            return self.snapshots.group_members(gid, deadline, snapshot_ids or ())
        return sorted(self.snapshots.by_name(legacy, deadline), key=lambda i: i.resource)

    @rpc()
    def GroupControllerGetCapabilities(
            self, request: csi_pb2.GroupControllerGetCapabilitiesRequest,
            call: Call) -> csi_pb2.GroupControllerGetCapabilitiesResponse:
        return csi_pb2.GroupControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.GroupControllerServiceCapability(rpc=GroupCap(
                type=GroupCap.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT))])

    @rpc(required=("name", "source_volume_ids"), lock=lambda r: f"group:{r.name}")
    def CreateVolumeGroupSnapshot(self, request: csi_pb2.CreateVolumeGroupSnapshotRequest,
                                  call: Call) -> csi_pb2.CreateVolumeGroupSnapshotResponse:
        parse_snapshot_parameters(dict(request.parameters))
        sources = list(request.source_volume_ids)
        if len({s.upper() for s in sources}) != len(sources):
            raise InvalidArgument("source_volume_ids lists a volume twice")
        gid, members = self.snapshots.create_group(request.name, sources, call.deadline)
        return csi_pb2.CreateVolumeGroupSnapshotResponse(group_snapshot=_group(gid, members))

    @rpc(required=("group_snapshot_id",), lock=lambda r: f"groupid:{r.group_snapshot_id}")
    def DeleteVolumeGroupSnapshot(self, request: csi_pb2.DeleteVolumeGroupSnapshotRequest,
                                  call: Call) -> csi_pb2.DeleteVolumeGroupSnapshotResponse:
        gid = request.group_snapshot_id
        if ids.legacy_snapshot_name(gid) is None:
            self.snapshots.delete_group(gid, list(request.snapshot_ids), call.deadline)
            return csi_pb2.DeleteVolumeGroupSnapshotResponse()
        members = self._members(gid, call.deadline)
        if request.snapshot_ids and members and \
                _names(request.snapshot_ids) != _names(m.id for m in members):
            raise InvalidArgument(f"snapshot_ids do not match the members of group snapshot "
                                  f"{gid}: {', '.join(sorted(m.id for m in members))}")
        for member in members:
            self.snapshots.delete(ids.snapshot_id(member.resource, member.name), call.deadline)
        return csi_pb2.DeleteVolumeGroupSnapshotResponse()

    @rpc(required=("group_snapshot_id",))
    def GetVolumeGroupSnapshot(self, request: csi_pb2.GetVolumeGroupSnapshotRequest,
                               call: Call) -> csi_pb2.GetVolumeGroupSnapshotResponse:
        gid = request.group_snapshot_id
        members = self._members(gid, call.deadline, list(request.snapshot_ids))
        if not members:
            raise NotFound(f"group snapshot {gid} does not exist")
        if request.snapshot_ids and _names(request.snapshot_ids) != _names(m.id for m in members):
            raise InvalidArgument(f"snapshot_ids do not match the members of {gid}: "
                                  f"{', '.join(sorted(m.id for m in members))}")
        return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=_group(gid, members))


def _names(snapshot_ids: object) -> set[tuple[str, str]]:
    """(resource, snapshot) of member ids, volume-number forms included (LINBIT's driver lists
    a consistency group's members as ``InCluster:///<rd>/<vnr>/<snap>``)."""
    out = set()
    for text in snapshot_ids:  # type: ignore[attr-defined]
        member = ids.parse_member_snapshot_id(text)
        if member is not None:
            out.add((member[0].upper(), member[2].upper()))
            continue
        sid = ids.parse_snapshot_id(text)
        out.add((sid.resource.upper(), sid.snapshot.upper()) if sid else (text, ""))
    return out

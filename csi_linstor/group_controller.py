"""GroupController service: crash-consistent snapshots of several volumes at one instant.

A group snapshot is one ``POST /v1/actions/snapshot/multi``; its id is
``InCluster:///group/<snapshot name>`` and each member is the LINSTOR snapshot of that name in
its source volume, tagged ``Aux/csi-group-snapshot-id``. Members are ordinary snapshots: they
restore like any other and appear in ListSnapshots.
"""

from __future__ import annotations

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.errors import InvalidArgument, NotFound
from csi_linstor.params import parse_snapshot_parameters
from csi_linstor.rpc import Call, Runtime, rpc
from csi_linstor.snapshots import SnapshotInfo, Snapshots

GroupCap = csi_pb2.GroupControllerServiceCapability.RPC


def _group(gid: str, members: list[SnapshotInfo]) -> csi_pb2.VolumeGroupSnapshot:
    from csi_linstor.controller import _timestamp, snapshot_message

    created = min((m.created_ms for m in members), default=0)
    return csi_pb2.VolumeGroupSnapshot(
        group_snapshot_id=gid, snapshots=[snapshot_message(m, gid) for m in members],
        creation_time=_timestamp(created), ready_to_use=all(m.ready for m in members))


class GroupControllerServicer(csi_pb2_grpc.GroupControllerServicer):
    def __init__(self, runtime: Runtime, snapshots: Snapshots) -> None:
        self.runtime = runtime
        self.snapshots = snapshots

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
        self.snapshots.delete_group(request.group_snapshot_id, list(request.snapshot_ids),
                                    call.deadline)
        return csi_pb2.DeleteVolumeGroupSnapshotResponse()

    @rpc(required=("group_snapshot_id",))
    def GetVolumeGroupSnapshot(self, request: csi_pb2.GetVolumeGroupSnapshotRequest,
                               call: Call) -> csi_pb2.GetVolumeGroupSnapshotResponse:
        gid = request.group_snapshot_id
        members = self.snapshots.group_members(gid, call.deadline, list(request.snapshot_ids))
        if not members:
            raise NotFound(f"group snapshot {gid} does not exist")
        if request.snapshot_ids and sorted(request.snapshot_ids) != sorted(m.id for m in members):
            raise InvalidArgument(f"snapshot_ids do not match the members of {gid}: "
                                  f"{', '.join(sorted(m.id for m in members))}")
        return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=_group(gid, members))

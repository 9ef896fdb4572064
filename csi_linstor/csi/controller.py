"""Controller service: thin servicers that parse the request, call one operation, build the reply.

Capabilities advertised are exactly what is implemented: CREATE_DELETE_VOLUME,
PUBLISH_UNPUBLISH_VOLUME, LIST_VOLUMES, GET_CAPACITY, CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS,
CLONE_VOLUME, EXPAND_VOLUME, GET_VOLUME, VOLUME_CONDITION, SINGLE_NODE_MULTI_WRITER,
MODIFY_VOLUME, GET_SNAPSHOT, PUBLISH_READONLY and LIST_VOLUMES_PUBLISHED_NODES (both from the
attachment records of ``mapping/attachment_records.py``, which also enforce ``--max-volumes-per-node``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import wrappers_pb2

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.csi.group_controller import GroupControllerServicer
from csi_linstor.csi.messages import (
    CAPABILITIES,
    CTX_FS_OPTS,
    CTX_MOUNT_OPTS,
    CTX_REMOTE,
    CTX_USES,
    CTX_XFS_OPTS,
    DRBD_MAX_BYTES,
    PUB_ACCESS,
    PUB_DEVICE,
    PUB_FS,
    PUB_MAY_FORMAT,
    PUB_USES,
    Mode,
    _timestamp,
    check_capabilities,
    snapshot_message,
    unsupported_reason,
)
from csi_linstor.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from csi_linstor.kube.api import LazyKubeApi
from csi_linstor.kube.consistency_groups import GroupLabel
from csi_linstor.kube.kubevirt import KubeVirtCheck
from csi_linstor.linstor import paged
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping import attachment_records as attachments
from csi_linstor.mapping import ids, listing, qos
from csi_linstor.mapping.backups import backup_class
from csi_linstor.mapping.capacity import ReservedCapacity, capacity
from csi_linstor.mapping.multiattach import PROP_MARKER as PROP_TWO_PRIMARIES_MARKER
from csi_linstor.mapping.multiattach import MultiAttach
from csi_linstor.mapping.mutable_params import parse_mutable_parameters
from csi_linstor.mapping.params import VolumeParameters, parse_volume_parameters
from csi_linstor.mapping.remote_access import ANYWHERE, parse_remote_access
from csi_linstor.mapping.snapshot_params import parse_snapshot_parameters
from csi_linstor.mapping.snapshots import Snapshots
from csi_linstor.mapping.volume_model import PROP_FROM_BLOCK, CreateSpec, Source
from csi_linstor.mapping.volumes import Volumes
from csi_linstor.rpc import Call, Runtime, rpc

MULTI_NODE = (Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER,
              Mode.MULTI_NODE_MULTI_WRITER)

# ---------------------------------------------------------------------------------------------
# The servicer
# ---------------------------------------------------------------------------------------------


class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    def __init__(self, runtime: Runtime, config: Any, linstor: Any) -> None:
        self.runtime = runtime
        self.config = config
        self.linstor = linstor
        ns = getattr(config, "property_namespace", "Aux")
        self.volumes = Volumes(linstor, ns)
        self.snapshots = Snapshots(linstor, self.volumes)
        # issue 17: attachment records (limits, readonly, published nodes)
        self.attachments = attachments.Attachments(
            linstor, getattr(config, "max_volumes_per_node", attachments.UNLIMITED))
        # issue 17: RWX block (two DRBD primaries, the KubeVirt check) and single-node modes
        check = None
        if getattr(config, "rwx_block_validation", True):
            check = KubeVirtCheck(LazyKubeApi(getattr(config, "kubeconfig", None)))
        self.multiattach = MultiAttach(linstor, check)
        # issue 17: consistency groups (a claim's label; tests replace group_label)
        self.group_label: Any = None
        if getattr(config, "enable_consistency_groups", False):
            self.group_label = GroupLabel(LazyKubeApi(getattr(config, "kubeconfig", None)))
        self.group_controller = GroupControllerServicer(runtime, self.snapshots)
        # issue 19: overProvision's reservations, read once per capacity-tracking round
        self.reservations = ReservedCapacity(linstor)

    def _params(self, parameters: Any) -> VolumeParameters:
        return parse_volume_parameters(
            dict(parameters), property_namespace=getattr(self.config, "property_namespace", "Aux"),
            default_remote_access=getattr(self.config, "default_remote_access_policy", "true"))

    @staticmethod
    def _volume_context(p: VolumeParameters) -> dict[str, str]:
        ctx = {CTX_USES: "true", CTX_MOUNT_OPTS: p.mount_opts,
               CTX_XFS_OPTS: p.post_mount_xfs_opts, CTX_REMOTE: p.remote_access.render()}
        if p.fs_opts:
            ctx[CTX_FS_OPTS] = p.fs_opts
        return ctx

    @staticmethod
    def _topology(segments: list[dict[str, str]]) -> list[csi_pb2.Topology]:
        return [csi_pb2.Topology(segments=s) for s in segments]

    # -- capabilities -------------------------------------------------------------------------

    @rpc()
    def ControllerGetCapabilities(self, request: csi_pb2.ControllerGetCapabilitiesRequest,
                                  call: Call) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(
                rpc=csi_pb2.ControllerServiceCapability.RPC(type=c)) for c in CAPABILITIES])

    # -- volumes ------------------------------------------------------------------------------

    @rpc(required=("name", "volume_capabilities"), lock=lambda r: f"create:{r.name}")
    def CreateVolume(self, request: csi_pb2.CreateVolumeRequest,
                     call: Call) -> csi_pb2.CreateVolumeResponse:
        p = self._params(request.parameters)
        access, fs = check_capabilities(request.volume_capabilities, p.layer_list)
        mutable = parse_mutable_parameters(dict(request.mutable_parameters))
        source = None
        if request.HasField("volume_content_source"):
            src = request.volume_content_source
            kind = src.WhichOneof("type")
            if kind == "snapshot":
                if not src.snapshot.snapshot_id:
                    raise InvalidArgument("volume_content_source.snapshot.snapshot_id is empty")
                source = Source("snapshot", src.snapshot.snapshot_id)
            elif kind == "volume":
                if not src.volume.volume_id:
                    raise InvalidArgument("volume_content_source.volume.volume_id is empty")
                if ids.parse_member_volume_id(src.volume.volume_id) is not None:
                    raise InvalidArgument(
                        f"source volume {src.volume.volume_id} is a consistency-group member; "
                        "LINSTOR clones whole resources, so one member is not cloned: take a "
                        "VolumeGroupSnapshot of the group and restore from it")
                if not ids.is_valid_name(src.volume.volume_id):
                    raise NotFound(f"source volume {src.volume.volume_id} does not exist")
                source = Source("volume", src.volume.volume_id)
            else:
                raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")
        if "DRBD" in p.layer_list and request.capacity_range.required_bytes > DRBD_MAX_BYTES:
            raise OutOfRange(f"required_bytes {request.capacity_range.required_bytes} exceeds "
                             f"{DRBD_MAX_BYTES} (1 PiB), the largest volume DRBD can replicate")
        rd = ids.volume_id(request.name, use_pvc_name=p.use_pvc_name, pvc_name=p.pvc_name,
                           pvc_namespace=p.pvc_namespace)
        req_top = request.accessibility_requirements
        spec = CreateSpec(
            name=request.name, rd=rd,
            required_bytes=request.capacity_range.required_bytes,
            limit_bytes=request.capacity_range.limit_bytes,
            access_type=access, fs_type=fs if access == "mount" else "", params=p,
            requisite=[dict(t.segments) for t in req_top.requisite],
            preferred=[dict(t.segments) for t in req_top.preferred],
            source=source, mutable_count=mutable.placement_count,
            mutable_props=dict(mutable.properties))
        for warning in p.warnings:
            call.log.warning("CreateVolume %s: %s", request.name, warning)
        group = self._consistency_group(p, request, call)
        if group is not None:
            vol = self.volumes.create_member(spec, p.pvc_namespace, group, call.deadline,
                                             call.log)
            rd = ids.volume_rd(vol.id)[0]
        else:
            vol = self.volumes.create(spec, call.deadline, call.log)
        topology = self.volumes.accessible_topology(rd, p.remote_access, call.deadline)
        return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(
            capacity_bytes=vol.capacity_bytes, volume_id=vol.id,
            volume_context=self._volume_context(p),
            content_source=request.volume_content_source if source else None,
            accessible_topology=self._topology(topology)))

    def _consistency_group(self, p: VolumeParameters, request: csi_pb2.CreateVolumeRequest,
                           call: Call) -> str | None:
        """The claim's consistency group (issue 17), None without the flag, claim or label."""
        if self.group_label is None or not p.pvc_name or not p.pvc_namespace:
            return None
        group: str | None = self.group_label(p.pvc_namespace, p.pvc_name, call.deadline)
        if group is None:
            return None
        modes = {c.access_mode.mode for c in request.volume_capabilities}
        if modes & set(MULTI_NODE):
            raise InvalidArgument(
                f"claim {p.pvc_namespace}/{p.pvc_name} is in consistency group {group} and asks "
                "for a multi-node access mode; a group's members are one LINSTOR resource, "
                "attached to one node at a time: use ReadWriteOnce, or drop the label")
        return group

    @rpc(required=("volume_id",), lock=lambda r: f"vol:{r.volume_id}")
    def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest,
                     call: Call) -> csi_pb2.DeleteVolumeResponse:
        self.volumes.delete(request.volume_id, call.deadline)
        return csi_pb2.DeleteVolumeResponse()

    @rpc(required=("volume_id", "node_id", "volume_capability"),
         lock=lambda r: f"vol:{r.volume_id}")
    def ControllerPublishVolume(self, request: csi_pb2.ControllerPublishVolumeRequest,
                                call: Call) -> csi_pb2.ControllerPublishVolumeResponse:
        access, fs = check_capabilities([request.volume_capability])
        may_format = ""
        if not ids.is_valid_name(request.volume_id) and \
                ids.parse_member_volume_id(request.volume_id) is None:
            raise NotFound(f"volume {request.volume_id} does not exist")
        if not ids.is_valid_node_name(request.node_id):
            # before any call: the name becomes a REST path component
            raise NotFound(f"node {request.node_id!r} does not exist: it is not a valid LINSTOR "
                           "node name (RFC 1123 host name); NodeGetInfo reports the LINSTOR node "
                           "name")
        # The RD's props: the access type (mount publishes) and the IO QoS limits (issue 17).
        vol = self.volumes.find(request.volume_id, call.deadline)  # a group member too
        member = ids.parse_member_volume_id(request.volume_id) is not None
        if access == "mount":
            # A raw block volume holds data without a signature that a filesystem publish would
            # format (e.g. a re-created PV).
            if vol is not None and vol.access_type == "block":
                raise FailedPrecondition(
                    f"volume {request.volume_id} was created as a raw block volume and cannot "
                    "be published as a filesystem (that would format its data); use "
                    "volumeMode: Block")
            if vol is not None and vol.props.get(PROP_FROM_BLOCK) == "true":
                may_format = "false"  # cloned/restored from raw block: mount, never format
        ctx = dict(request.volume_context)
        policy = ANYWHERE
        if ctx.get(CTX_REMOTE):
            policy = parse_remote_access(CTX_REMOTE, ctx[CTX_REMOTE])
        # issue 17 hook: attach limit, read-only compatibility and the attachment record
        with self.attachments.attach(request.volume_id, request.node_id, request.readonly,
                                     call.deadline) as record:
            resources = None
            if vol is not None and not member:
                # who else has it attached: single-node modes, RWX block's two primaries
                resources = self.volumes.resources(request.volume_id, call.deadline)
                mode = request.volume_capability.access_mode.mode
                record |= self.multiattach.before_publish(
                    request.volume_id, request.node_id, multi_node=mode in MULTI_NODE,
                    multi_writer_block=access == "block" and
                    mode == Mode.MULTI_NODE_MULTI_WRITER,
                    resources=resources, rd_props=vol.props, deadline=call.deadline)
            path = self.volumes.publish(request.volume_id, request.node_id, policy,
                                        call.deadline, resources=resources)
        pctx = {PUB_USES: "true", PUB_DEVICE: path, PUB_FS: fs if access == "mount" else "",
                PUB_ACCESS: access}
        if may_format:
            pctx[PUB_MAY_FORMAT] = may_format
        if vol is not None:
            pctx.update(qos.publish_context(vol.props, path))  # issue 17: IO QoS for nri
        return csi_pb2.ControllerPublishVolumeResponse(publish_context=pctx)

    @rpc(required=("volume_id",), lock=lambda r: f"vol:{r.volume_id}")
    def ControllerUnpublishVolume(self, request: csi_pb2.ControllerUnpublishVolumeRequest,
                                  call: Call) -> csi_pb2.ControllerUnpublishVolumeResponse:
        node = request.node_id or None
        resources = None
        rd, vnr = ids.volume_rd(request.volume_id)
        if ids.is_valid_name(rd) and (node is None or ids.is_valid_node_name(node)):
            # issue 17 hook: what unpublish keeps (diskful replicas, tiebreakers) loses only its
            # attachment record; a removed diskless attachment takes its record with it. A
            # group member's record goes from every resource: the shared diskless attachment
            # stays while another member's record is on it.
            resources = self.volumes.resources(rd, call.deadline, node=node)
            self.attachments.forget(request.volume_id, [
                r for r in resources if not r.is_diskless or r.is_tiebreaker or vnr is not None],
                call.deadline)
        self.volumes.unpublish(request.volume_id, node, call.deadline, resources=resources)
        if resources is not None and vnr is None and (
                any(r.props.get(PROP_TWO_PRIMARIES_MARKER) for r in resources)
                or not any(attachments.recorded(r) for r in resources)):
            # attached while two DRBD primaries were allowed, or an attach that never finished
            # (a publish that allowed two primaries may have stopped before its record): back
            # to one primary? An ordinary unpublish (its record found, no marker) costs nothing.
            # Group members are never multi-node (CreateVolume refuses those modes).
            vol = self.volumes.find(request.volume_id, call.deadline)
            if vol is not None:
                self.multiattach.after_unpublish(
                    request.volume_id, vol.props,
                    self.volumes.resources(request.volume_id, call.deadline), call.deadline)
        return csi_pb2.ControllerUnpublishVolumeResponse()

    @rpc(required=("volume_id", "volume_capabilities"))
    def ValidateVolumeCapabilities(self, request: csi_pb2.ValidateVolumeCapabilitiesRequest,
                                   call: Call) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        vol = self.volumes.find(request.volume_id, call.deadline)
        if vol is None or not vol.complete:
            raise NotFound(f"volume {request.volume_id} does not exist")
        reason = unsupported_reason(request.volume_capabilities, vol)
        if not reason and request.parameters:
            try:
                p = self._params(request.parameters)
                if p.resource_group.upper() != vol.resource_group.upper():
                    reason = (f"volume {vol.id} is in resource group {vol.resource_group}, the "
                              f"parameters map to {p.resource_group}")
            except InvalidArgument as err:
                reason = err.message
        if not reason and request.mutable_parameters:
            try:
                parse_mutable_parameters(dict(request.mutable_parameters))
            except InvalidArgument as err:
                reason = err.message
        if reason:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=reason)
        return csi_pb2.ValidateVolumeCapabilitiesResponse(
            confirmed=csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=request.volume_context,
                volume_capabilities=request.volume_capabilities,
                parameters=request.parameters, mutable_parameters=request.mutable_parameters))

    @rpc()
    def ListVolumes(self, request: csi_pb2.ListVolumesRequest,
                    call: Call) -> csi_pb2.ListVolumesResponse:
        if request.max_entries or request.starting_token:  # issue 19: O(page) reads
            page, token = self.volumes.page(request.max_entries, request.starting_token,
                                            call.deadline)
            total = None
        else:
            page, token = self.volumes.list(call.deadline), ""
            total = len(page)
        by_rd: dict[str, list[Resource]] = {}
        if page:
            # issue 19: only the page's resources (csi_linstor/linstor/paged.py)
            rds = list(dict.fromkeys(ids.volume_rd(v.id)[0] for v in page))  # groups: once
            for res in paged.resources_of(self.linstor, rds, total, call.deadline):
                by_rd.setdefault(res.name.upper(), []).append(res)
        entries = []
        for vol in page:
            mine = by_rd.get(ids.volume_rd(vol.id)[0].upper(), [])
            abnormal, message = Volumes.condition(mine)
            entries.append(csi_pb2.ListVolumesResponse.Entry(
                volume=csi_pb2.Volume(volume_id=vol.id, capacity_bytes=vol.capacity_bytes),
                status=csi_pb2.ListVolumesResponse.VolumeStatus(
                    published_node_ids=attachments.published_nodes(mine, vol.id),
                    volume_condition=csi_pb2.VolumeCondition(abnormal=abnormal,
                                                             message=message))))
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=token)

    @rpc(required=("volume_id",))
    def ControllerGetVolume(self, request: csi_pb2.ControllerGetVolumeRequest,
                            call: Call) -> csi_pb2.ControllerGetVolumeResponse:
        vol = self.volumes.find(request.volume_id, call.deadline)
        if vol is None or not vol.complete:
            raise NotFound(f"volume {request.volume_id} does not exist")
        resources = self.volumes.resources(ids.volume_rd(vol.id)[0], call.deadline)
        abnormal, message = Volumes.condition(resources)
        return csi_pb2.ControllerGetVolumeResponse(
            volume=csi_pb2.Volume(volume_id=vol.id, capacity_bytes=vol.capacity_bytes),
            status=csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
                published_node_ids=attachments.published_nodes(resources, vol.id),
                volume_condition=csi_pb2.VolumeCondition(abnormal=abnormal, message=message)))

    @rpc()
    def GetCapacity(self, request: csi_pb2.GetCapacityRequest,
                    call: Call) -> csi_pb2.GetCapacityResponse:
        p = self._params(request.parameters)
        if request.volume_capabilities:
            check_capabilities(request.volume_capabilities, p.layer_list)
        segment = dict(request.accessible_topology.segments) \
            if request.HasField("accessible_topology") else {}
        size = capacity(self.linstor, p, segment, getattr(self.config, "property_namespace", "Aux"),
                        call.deadline, self.reservations)
        return csi_pb2.GetCapacityResponse(available_capacity=size,
                                           maximum_volume_size=wrappers_pb2.Int64Value(value=size))

    @rpc(required=("volume_id", "capacity_range"), lock=lambda r: f"vol:{r.volume_id}")
    def ControllerExpandVolume(self, request: csi_pb2.ControllerExpandVolumeRequest,
                               call: Call) -> csi_pb2.ControllerExpandVolumeResponse:
        rng = request.capacity_range
        if rng.required_bytes < 0 or rng.limit_bytes < 0:
            raise InvalidArgument(f"capacity_range must not be negative (required_bytes "
                                  f"{rng.required_bytes}, limit_bytes {rng.limit_bytes})")
        if not ids.is_valid_name(request.volume_id) and \
                ids.parse_member_volume_id(request.volume_id) is None:
            raise NotFound(f"volume {request.volume_id} does not exist")
        vol = self.volumes.expand(request.volume_id, rng.required_bytes, rng.limit_bytes,
                                  call.deadline)  # a group member grows only its own VD
        block = vol.access_type == "block"
        if request.HasField("volume_capability"):
            block = request.volume_capability.WhichOneof("access_type") == "block"
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=vol.capacity_bytes,
                                                      node_expansion_required=not block)

    @rpc(required=("volume_id",), lock=lambda r: f"vol:{r.volume_id}")
    def ControllerModifyVolume(self, request: csi_pb2.ControllerModifyVolumeRequest,
                               call: Call) -> csi_pb2.ControllerModifyVolumeResponse:
        mutable = parse_mutable_parameters(dict(request.mutable_parameters))
        if not ids.is_valid_name(request.volume_id) and \
                ids.parse_member_volume_id(request.volume_id) is None:
            raise NotFound(f"volume {request.volume_id} does not exist")
        self.volumes.modify(request.volume_id, mutable.placement_count, dict(mutable.properties),
                            call.deadline)
        return csi_pb2.ControllerModifyVolumeResponse()

    # -- snapshots ----------------------------------------------------------------------------

    @rpc(required=("name", "source_volume_id"), lock=lambda r: f"snap:{r.name}")
    def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest,
                       call: Call) -> csi_pb2.CreateSnapshotResponse:
        sp = parse_snapshot_parameters(dict(request.parameters))
        if sp.type != "InCluster":  # hook: S3/Linstor snapshots (mapping/backups.py)
            remote = self.snapshots.backups.create(
                request.name, request.source_volume_id, backup_class(sp.type, dict(sp.settings)),
                dict(request.secrets), call.deadline)
            return csi_pb2.CreateSnapshotResponse(snapshot=csi_pb2.Snapshot(
                size_bytes=remote.size_bytes, snapshot_id=remote.id,
                source_volume_id=request.source_volume_id,
                creation_time=_timestamp(remote.created_ms), ready_to_use=remote.ready))
        if ids.may_be_consistency_group(request.source_volume_id):
            self.volumes.refuse_consistency_group(
                request.source_volume_id, "snapshotted alone", call.deadline,
                "take a VolumeGroupSnapshot of every claim of the group (selector "
                "linstor.csi.linbit.com/consistency-group=<group>): one LINSTOR snapshot of all")
        info = self.snapshots.create(request.name, request.source_volume_id, call.deadline)
        return csi_pb2.CreateSnapshotResponse(snapshot=snapshot_message(info))

    @rpc(required=("snapshot_id",), lock=lambda r: f"snapid:{r.snapshot_id}")
    def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest,
                       call: Call) -> csi_pb2.DeleteSnapshotResponse:
        self.volumes.refuse_consistency_group_snapshot(request.snapshot_id, call.deadline)
        self.snapshots.delete(request.snapshot_id, call.deadline)
        return csi_pb2.DeleteSnapshotResponse()

    @rpc()
    def ListSnapshots(self, request: csi_pb2.ListSnapshotsRequest,
                      call: Call) -> csi_pb2.ListSnapshotsResponse:
        if not request.snapshot_id and not request.source_volume_id:
            # issue 19: every snapshot, read by the page
            page, token = self.snapshots.page(request.max_entries, request.starting_token,
                                              call.deadline)
        else:
            if request.snapshot_id:
                info = self.snapshots.get(request.snapshot_id, call.deadline)
                items = [info] if info is not None else []
                if info is not None and request.source_volume_id and \
                        info.source_volume_id.upper() != request.source_volume_id.upper():
                    items = []
            else:
                items = self.snapshots.list(call.deadline, source=request.source_volume_id)
            page, token = listing.paginate(items, lambda s: s.id, request.max_entries,
                                           request.starting_token)
        return csi_pb2.ListSnapshotsResponse(
            entries=[csi_pb2.ListSnapshotsResponse.Entry(snapshot=snapshot_message(s))
                     for s in page], next_token=token)

    @rpc(required=("snapshot_id",))
    def GetSnapshot(self, request: csi_pb2.GetSnapshotRequest,
                    call: Call) -> csi_pb2.GetSnapshotResponse:
        info = self.snapshots.get(request.snapshot_id, call.deadline)
        if info is None:
            raise NotFound(f"snapshot {request.snapshot_id} does not exist")
        return csi_pb2.GetSnapshotResponse(snapshot=snapshot_message(info))

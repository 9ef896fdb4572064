"""Node service: a thin servicer over the convergent operations in ``csi_linstor.nodeops``.

It turns each request into one operation call and builds the reply. Every staging, target and
volume path must resolve inside the kubelet directory (``--kubelet-dir``), else INVALID_ARGUMENT.
Device paths come from the publish context (``linstor.csi.linbit.com/device-path``), verified to be
this volume's device (``nodeops.owner``), or, when that is missing, from LINSTOR (this node's
volume ``device_path``). Every external command runs through ``nodeops.runner.run`` bounded by
the RPC deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.csi.context_keys import (
    CTX_FS_OPTS,
    CTX_MOUNT_OPTS,
    CTX_XFS_OPTS,
    PUB_ACCESS,
    PUB_DEVICE,
    PUB_FS,
    PUB_MAY_FORMAT,
)
from csi_linstor.deadline import Deadline
from csi_linstor.drbd import Drbd
from csi_linstor.errors import (
    CsiError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from csi_linstor.nodeops import devices, fs
from csi_linstor.nodeops import volume as ops
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.owner import VolumeDevice
from csi_linstor.nodeops.paths import resolve_inside
from csi_linstor.rpc import Call, Runtime, rpc

log = logging.getLogger("csi_linstor.node")

# The context keys ControllerPublish/CreateVolume write (csi/messages.py, the one definition).
KEY_DEVICE_PATH = PUB_DEVICE
KEY_FS_TYPE = PUB_FS
KEY_MOUNT_OPTIONS = CTX_MOUNT_OPTS
KEY_FS_OPTS = CTX_FS_OPTS
KEY_POST_MOUNT_XFS_OPTS = CTX_XFS_OPTS
# Set by ControllerPublish after checking the capability against the volume's created access type.
KEY_ACCESS_TYPE = PUB_ACCESS
# "false": the controller says the volume must not be formatted (cloned/restored from raw block)
KEY_MAY_FORMAT = PUB_MAY_FORMAT

Mode = csi_pb2.VolumeCapability.AccessMode
READ_ONLY_MODES = (Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY)
# Modes that allow one publish per node (CSI's second-publish table: FAILED_PRECONDITION).
SINGLE_PUBLISH_MODES = (
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.SINGLE_NODE_SINGLE_WRITER,
)
# A local filesystem cannot be written from several nodes at once.
MULTI_NODE_WRITER_MODES = (Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER)

RPC = csi_pb2.NodeServiceCapability.RPC
# Exactly what works (see tests/node). Not advertised: VOLUME_MOUNT_GROUP. ext4 and xfs have no gid=
# mount option, and a chgrp of the root directory alone would not make existing files group-writable
# the way kubelet's own recursive fsGroup handling does; without the capability kubelet applies
# fsGroup itself.
CAPABILITIES = (
    RPC.STAGE_UNSTAGE_VOLUME,
    RPC.GET_VOLUME_STATS,
    RPC.EXPAND_VOLUME,
    RPC.VOLUME_CONDITION,
    RPC.SINGLE_NODE_MULTI_WRITER,
)


def _volume_lock(request: Any) -> str:
    return f"node:{request.volume_id}"


def _access(cap: csi_pb2.VolumeCapability) -> tuple[bool, int]:
    """(is_block, mode) of a capability, checked for what a node can do."""
    kind = cap.WhichOneof("access_type")
    if kind is None:
        raise InvalidArgument("volume_capability needs an access type (block or mount)")
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        raise InvalidArgument("volume_capability.access_mode is required")
    mode = cap.access_mode.mode
    if kind == "mount" and mode in MULTI_NODE_WRITER_MODES:
        raise FailedPrecondition(
            f"access mode {Mode.Mode.Name(mode)} is not supported for filesystem volumes: a local "
            "filesystem cannot be written from several nodes"
        )
    return kind == "block", mode


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(
        self,
        runtime: Runtime,
        config: Any,
        linstor: Any,
        topology: Callable[[Deadline], dict[str, str]],
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.linstor = linstor
        self.topology = topology
        self.drbd = Drbd(list(getattr(config, "drbdsetup", ("drbdsetup",))))

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _node(self) -> str:
        return self.config.node

    @property
    def _wait(self) -> float:
        return float(getattr(self.config, "device_wait_seconds", 10.0))

    def _inside(self, path: str, field: str, error: type[CsiError] = InvalidArgument) -> str:
        """``path`` resolved, if it lies inside the kubelet directory (else INVALID_ARGUMENT)."""
        return resolve_inside(path, str(self.config.kubelet_dir), field, error)

    def _owner(self, ref: VolumeRef, deadline: Deadline) -> VolumeDevice:
        return VolumeDevice(ref, self._node, self.linstor, str(self.config.drbd_by_res_dir),
                            deadline)

    def _device_path(self, owner: VolumeDevice, publish_context: Any) -> str:
        """The volume's device: the publish context's once it is verified to be this volume's
        (after waiting for it to appear), else LINSTOR's."""
        path = publish_context.get(KEY_DEVICE_PATH, "")
        if not path:
            return owner.linstor_path()
        devices.wait_for_device(path, owner.deadline, self._wait, what=owner.name)
        owner.verify(path)
        return path

    def _no_format_reason(self, owner: VolumeDevice, publish_context: Any,
                          call: Call) -> tuple[str, bool]:
        """Refuse a filesystem stage of a volume created as raw block; return why an empty device
        must not be formatted ("" when it may be).

        The controller's publish context says which access type it checked; without it (an older
        controller) LINSTOR's resource definition says. When neither can answer, an existing
        filesystem is still mounted but an empty device is never formatted.
        """
        from_block = (f"volume {owner.ref.rd} was cloned or restored from a raw block volume, "
                      "whose data may carry no signature: a filesystem found on it is mounted, "
                      "but it is never formatted")
        if publish_context.get(KEY_MAY_FORMAT) == "false":
            return from_block, True
        published = publish_context.get(KEY_ACCESS_TYPE, "")
        if published == "mount":
            return "", False
        created = published
        if not created:
            try:
                created = owner.created_access()
            except (FailedPrecondition, Unavailable, DeadlineExceeded) as e:
                call.log.warning("cannot tell whether %s was created as a raw block volume: %s",
                                 owner.ref.rd, e)
                return (f"it cannot be confirmed that volume {owner.ref.rd} was created as a "
                        f"filesystem volume (the publish context does not say and LINSTOR "
                        f"cannot be asked: {e})"), False
        if created == "block":
            raise FailedPrecondition(
                f"volume {owner.ref.rd} was created as a raw block volume; it cannot be staged "
                "as a filesystem (that would format or mount its raw data); use volumeMode: Block"
            )
        try:
            if owner.from_raw_block():
                return from_block, True
        except (FailedPrecondition, Unavailable, DeadlineExceeded) as e:
            return f"it cannot be confirmed that volume {owner.ref.rd} may be formatted ({e})", \
                False
        return "", False

    # -- identity of the node ----------------------------------------------------------------

    @rpc()
    def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, call: Call
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[csi_pb2.NodeServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES]
        )

    @rpc()
    def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, call: Call
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(
            node_id=self._node,
            max_volumes_per_node=int(getattr(self.config, "max_volumes_per_node", 0) or 0),
            accessible_topology=csi_pb2.Topology(segments=self.topology(call.deadline)),
        )

    # -- stage -------------------------------------------------------------------------------

    @rpc(required=("volume_id", "staging_target_path", "volume_capability"), lock=_volume_lock)
    def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, call: Call
    ) -> csi_pb2.NodeStageVolumeResponse:
        ref = VolumeRef.parse(request.volume_id)
        staging = self._inside(request.staging_target_path, "staging_target_path")
        is_block, mode = _access(request.volume_capability)
        owner = self._owner(ref, call.deadline)
        device = self._device_path(owner, request.publish_context)
        common = dict(drbd=self.drbd, device_wait_seconds=self._wait, node=self._node)
        if is_block:
            ops.stage_block(ref, device, staging, call.deadline, **common)
            return csi_pb2.NodeStageVolumeResponse()
        no_format, never = self._no_format_reason(owner, request.publish_context, call)
        mnt = request.volume_capability.mount
        fstype = fs.normalize_fstype(
            request.publish_context.get(KEY_FS_TYPE, "") or mnt.fs_type or "ext4"
        )
        vc = request.volume_context
        req = ops.MountRequest(
            fstype=fstype,
            fs_opts=vc.get(KEY_FS_OPTS, ""),
            context_options=[o for o in vc.get(KEY_MOUNT_OPTIONS, "").split(",") if o.strip()],
            mount_flags=list(mnt.mount_flags),
            readonly=mode in READ_ONLY_MODES,
            no_format_reason=no_format,
            never_format=never,
        )
        if mnt.volume_mount_group:
            call.log.info("ignoring volume_mount_group: VOLUME_MOUNT_GROUP is not advertised")
        ops.stage_mount(ref, device, staging, req, call.deadline, **common)
        return csi_pb2.NodeStageVolumeResponse()

    @rpc(required=("volume_id", "staging_target_path"), lock=_volume_lock)
    def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, call: Call
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        staging = self._inside(request.staging_target_path, "staging_target_path")
        owner = self._owner(VolumeRef.parse(request.volume_id), call.deadline)
        ops.unstage(staging, call.deadline, owner)
        return csi_pb2.NodeUnstageVolumeResponse()

    # -- publish -----------------------------------------------------------------------------

    @rpc(required=("volume_id", "target_path", "volume_capability"), lock=_volume_lock)
    def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, call: Call
    ) -> csi_pb2.NodePublishVolumeResponse:
        ref = VolumeRef.parse(request.volume_id)
        target = self._inside(request.target_path, "target_path")
        is_block, mode = _access(request.volume_capability)
        if not request.staging_target_path:
            raise FailedPrecondition(
                "staging_target_path is not set: this driver stages volumes "
                "(STAGE_UNSTAGE_VOLUME); call NodeStageVolume first"
            )
        staging = self._inside(request.staging_target_path, "staging_target_path")
        owner = self._owner(ref, call.deadline)
        readonly = request.readonly or mode in READ_ONLY_MODES
        single = mode in SINGLE_PUBLISH_MODES
        if is_block:
            device = self._device_path(owner, request.publish_context)
            ops.publish_block(
                ref,
                device,
                staging,
                target,
                readonly,
                call.deadline,
                single_publish=single,
                device_wait_seconds=self._wait,
                node=self._node,
            )
            return csi_pb2.NodePublishVolumeResponse()
        expected = devices.block_rdev(self._device_path(owner, request.publish_context))
        if request.volume_capability.mount.volume_mount_group:
            call.log.info("ignoring volume_mount_group: VOLUME_MOUNT_GROUP is not advertised")
        ops.publish_mount(
            staging,
            target,
            readonly,
            call.deadline,
            expected_dev=expected,
            single_publish=single,
            post_mount_xfs_opts=request.volume_context.get(KEY_POST_MOUNT_XFS_OPTS, ""),
        )
        return csi_pb2.NodePublishVolumeResponse()

    @rpc(required=("volume_id", "target_path"), lock=_volume_lock)
    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, call: Call
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        target = self._inside(request.target_path, "target_path")
        owner = self._owner(VolumeRef.parse(request.volume_id), call.deadline)
        ops.unpublish(target, call.deadline, owner)
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- stats and expand --------------------------------------------------------------------

    @rpc(required=("volume_id", "volume_path"))
    def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, call: Call
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        ref = VolumeRef.parse(request.volume_id)
        # NOT_FOUND, as the spec and csi-sanity want: no volume can be outside the kubelet dir
        path = self._inside(request.volume_path, "volume_path", NotFound)
        if request.staging_target_path:
            self._inside(request.staging_target_path, "staging_target_path", NotFound)
        result = ops.stats(ref, path, call.deadline, drbd=self.drbd)
        Unit = csi_pb2.VolumeUsage.Unit
        usage = []
        if result.usage is not None:
            u = result.usage
            usage.append(
                csi_pb2.VolumeUsage(
                    unit=Unit.BYTES,
                    total=u.bytes_total,
                    used=u.bytes_used or 0,
                    available=u.bytes_available or 0,
                )
            )
            if u.inodes_total is not None:
                usage.append(
                    csi_pb2.VolumeUsage(
                        unit=Unit.INODES,
                        total=u.inodes_total,
                        used=u.inodes_used or 0,
                        available=u.inodes_available or 0,
                    )
                )
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=usage,
            volume_condition=csi_pb2.VolumeCondition(
                abnormal=result.abnormal, message=result.message
            ),
        )

    @rpc(required=("volume_id", "volume_path"), lock=_volume_lock)
    def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, call: Call
    ) -> csi_pb2.NodeExpandVolumeResponse:
        ref = VolumeRef.parse(request.volume_id)
        # NOT_FOUND, as the spec and csi-sanity want: no volume can be outside the kubelet dir
        path = self._inside(request.volume_path, "volume_path", NotFound)
        if request.staging_target_path:
            self._inside(request.staging_target_path, "staging_target_path", NotFound)
        block = None
        if request.HasField("volume_capability"):
            kind = request.volume_capability.WhichOneof("access_type")
            block = kind == "block" if kind else None
        required = (
            request.capacity_range.required_bytes if request.HasField("capacity_range") else 0
        )
        owner = self._owner(ref, call.deadline)
        result = ops.expand(
            ref,
            path,
            required,
            call.deadline,
            block=block,
            resolve_device=lambda: owner.linstor_path(),
            owner=owner,
        )
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=result.capacity_bytes)

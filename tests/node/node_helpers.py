"""Request builders for node tests."""

from __future__ import annotations

from typing import Any

import grpc

from csi_linstor._gen import csi_pb2

NODE = "node-a"
XFS_MIB = 512  # mkfs.xfs refuses filesystems under 300 MB

DEVICE_PATH = "linstor.csi.linbit.com/device-path"
FS_TYPE = "linstor.csi.linbit.com/fs-type"
ACCESS_TYPE = "linstor.csi.linbit.com/access-type"
Mode = csi_pb2.VolumeCapability.AccessMode


def mount_cap(
    fs_type: str = "", mode: int = Mode.SINGLE_NODE_WRITER, flags: tuple[str, ...] = ()
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=Mode(mode=mode),
    )


def block_cap(mode: int = Mode.SINGLE_NODE_WRITER) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=Mode(mode=mode)
    )


def stage_req(
    device: str,
    staging: Any,
    cap: csi_pb2.VolumeCapability,
    *,
    vol: str = "pvc-1",
    fs_type: str | None = None,
    context: dict[str, str] | None = None,
) -> csi_pb2.NodeStageVolumeRequest:
    # what ControllerPublish sends: the access type it checked against the volume's
    pc = {DEVICE_PATH: device, ACCESS_TYPE: cap.WhichOneof("access_type") or ""}
    if fs_type is not None:
        pc[FS_TYPE] = fs_type
    return csi_pb2.NodeStageVolumeRequest(
        volume_id=vol,
        publish_context=pc,
        staging_target_path=str(staging),
        volume_capability=cap,
        volume_context=context or {},
    )


def publish_req(
    device: str,
    staging: Any,
    target: Any,
    cap: csi_pb2.VolumeCapability,
    *,
    readonly: bool = False,
    vol: str = "pvc-1",
    context: dict[str, str] | None = None,
) -> csi_pb2.NodePublishVolumeRequest:
    return csi_pb2.NodePublishVolumeRequest(
        volume_id=vol,
        publish_context={DEVICE_PATH: device},
        staging_target_path=str(staging) if staging is not None else "",
        target_path=str(target),
        volume_capability=cap,
        readonly=readonly,
        volume_context=context or {},
    )


def unpublish_req(target: Any, vol: str = "pvc-1") -> csi_pb2.NodeUnpublishVolumeRequest:
    return csi_pb2.NodeUnpublishVolumeRequest(volume_id=vol, target_path=str(target))


def unstage_req(staging: Any, vol: str = "pvc-1") -> csi_pb2.NodeUnstageVolumeRequest:
    return csi_pb2.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=str(staging))


def stats_req(path: Any, vol: str = "pvc-1") -> csi_pb2.NodeGetVolumeStatsRequest:
    return csi_pb2.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=str(path))


def expand_req(
    path: Any, required: int = 0, vol: str = "pvc-1", cap: csi_pb2.VolumeCapability | None = None
) -> csi_pb2.NodeExpandVolumeRequest:
    req = csi_pb2.NodeExpandVolumeRequest(volume_id=vol, volume_path=str(path))
    if required:
        req.capacity_range.required_bytes = required
    if cap is not None:
        req.volume_capability.CopyFrom(cap)
    return req


def usage(resp: csi_pb2.NodeGetVolumeStatsResponse) -> dict[str, csi_pb2.VolumeUsage]:
    return {csi_pb2.VolumeUsage.Unit.Name(u.unit): u for u in resp.usage}


class RpcFailed(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class FakeContext:
    """What the rpc wrapper needs from a grpc.ServicerContext."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds

    def time_remaining(self) -> float:
        return self.seconds

    def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise RpcFailed(code, message)

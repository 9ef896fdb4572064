"""What the controller servicers put into and check in CSI messages: volume and publish context
keys, capabilities (and the check of requested ones), snapshot messages and pagination.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from csi_linstor._gen import csi_pb2
from csi_linstor.csi.context_keys import (  # noqa: F401 (re-exported)
    CTX_FS_OPTS,
    CTX_MOUNT_OPTS,
    CTX_PREFIX,
    CTX_REMOTE,
    CTX_USES,
    CTX_XFS_OPTS,
    PUB_ACCESS,
    PUB_DEVICE,
    PUB_FS,
    PUB_MAY_FORMAT,
    PUB_USES,
)
from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping.snapshots import SnapshotInfo
from csi_linstor.mapping.volume_model import FS_TYPES, Volume

# DRBD's largest volume (MetaData.DRBD_MAX_kiB = 2^40 KiB); LINSTOR refuses more once deployed.
DRBD_MAX_BYTES = (1 << 40) * 1024

Cap = csi_pb2.ControllerServiceCapability.RPC
Mode = csi_pb2.VolumeCapability.AccessMode

CAPABILITIES = (
    Cap.CREATE_DELETE_VOLUME, Cap.PUBLISH_UNPUBLISH_VOLUME, Cap.LIST_VOLUMES, Cap.GET_CAPACITY,
    Cap.CREATE_DELETE_SNAPSHOT, Cap.LIST_SNAPSHOTS, Cap.CLONE_VOLUME, Cap.EXPAND_VOLUME,
    Cap.GET_VOLUME, Cap.VOLUME_CONDITION, Cap.SINGLE_NODE_MULTI_WRITER, Cap.MODIFY_VOLUME,
    Cap.GET_SNAPSHOT, Cap.PUBLISH_READONLY, Cap.LIST_VOLUMES_PUBLISHED_NODES,  # issue 17
)

SINGLE_NODE_MODES = (Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_READER_ONLY,
                     Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER)


# ---------------------------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------------------------


def check_capabilities(caps: Any, layers: tuple[str, ...] | None = None) -> tuple[str, str]:
    """Validate volume capabilities; returns (access type, fs type). INVALID_ARGUMENT otherwise."""
    access = ""
    fs = ""
    for cap in caps:
        kind = cap.WhichOneof("access_type")
        if kind is None:
            raise InvalidArgument("volume capability needs an access type (mount or block)")
        if access and kind != access:
            raise InvalidArgument("volume capabilities mix mount and block access")
        access = kind
        mode = cap.access_mode.mode
        if mode == Mode.UNKNOWN:
            raise InvalidArgument("volume capability needs an access mode")
        if kind == "mount":
            want = cap.mount.fs_type or "ext4"
            if want not in FS_TYPES:
                raise InvalidArgument(f"filesystem {want!r} is not supported: the node plugin "
                                      f"formats, grows and checks only {', '.join(FS_TYPES)}; "
                                      "set csi.storage.k8s.io/fstype in the StorageClass to one "
                                      "of them")
            if fs and want != fs:
                raise InvalidArgument(f"volume capabilities ask for both {fs} and {want}")
            fs = want
            if mode in (Mode.MULTI_NODE_MULTI_WRITER, Mode.MULTI_NODE_SINGLE_WRITER):
                raise InvalidArgument(
                    f"access mode {Mode.Mode.Name(mode)} is only supported for raw block volumes "
                    "(filesystem volumes cannot be written from several nodes)")
        elif mode in (Mode.MULTI_NODE_MULTI_WRITER, Mode.MULTI_NODE_SINGLE_WRITER):
            if layers is not None and (not layers or layers[0] != "DRBD"):
                raise InvalidArgument(f"access mode {Mode.Mode.Name(mode)} needs the drbd layer "
                                      "on top of layerList")
    return access, fs


def unsupported_reason(caps: Any, vol: Volume) -> str:
    try:
        access, fs = check_capabilities(caps)
    except InvalidArgument as err:
        return err.message
    if access != vol.access_type:
        return f"volume {vol.id} is a {vol.access_type} volume, not {access}"
    if fs and vol.fs_type and fs != vol.fs_type:
        return f"volume {vol.id} has filesystem {vol.fs_type}, not {fs}"
    return ""


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def snapshot_message(info: SnapshotInfo, group_id: str = "") -> csi_pb2.Snapshot:
    return csi_pb2.Snapshot(size_bytes=info.size_bytes, snapshot_id=info.id,
                            source_volume_id=info.source_volume_id,
                            creation_time=_timestamp(info.created_ms),
                            ready_to_use=info.ready, group_snapshot_id=group_id or info.group_id)

"""Stage, publish, unpublish and unstage on real loop devices with real ext4 and xfs."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from csi_linstor.nodeops.mountinfo import MountTable
from tests.node.node_helpers import (
    XFS_MIB,
    Mode,
    RpcFailed,
    block_cap,
    mount_cap,
    publish_req,
    stage_req,
    stats_req,
    unpublish_req,
    unstage_req,
    usage,
)


def blkid_type(dev: str) -> str:
    return subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", dev], capture_output=True, text=True
    ).stdout.strip()


def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    staging = tmp_path / "staging"
    staging.mkdir()
    return staging, tmp_path / "pod1" / "mount", tmp_path / "pod2" / "mount"


@pytest.mark.parametrize("fs_type,size", [("ext4", 64), ("xfs", XFS_MIB)])
def test_mount_lifecycle_and_shared_data(node, loops, tmp_path, fs_type, size) -> None:
    loop = loops(size)
    staging, t1, t2 = dirs(tmp_path)
    t1.parent.mkdir()
    t2.parent.mkdir()
    cap = mount_cap(mode=Mode.SINGLE_NODE_MULTI_WRITER)
    node.NodeStageVolume(stage_req(loop.path, staging, cap, fs_type=fs_type))
    assert blkid_type(loop.path) == fs_type
    staged = MountTable.read().top(str(staging))
    assert staged is not None and staged.fstype == fs_type and staged.source == loop.path
    if fs_type == "xfs":
        assert "nouuid" in staged.super_options
    node.NodeStageVolume(stage_req(loop.path, staging, cap, fs_type=fs_type))  # idempotent
    assert len(MountTable.read().at(str(staging))) == 1

    node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))  # idempotent
    node.NodePublishVolume(publish_req(loop.path, staging, t2, cap))
    assert len(MountTable.read().at(str(t1))) == 1
    (t1 / "hello").write_text("written through pod1")
    assert (t2 / "hello").read_text() == "written through pod1"

    # same target, different readonly flag: ALREADY_EXISTS
    with pytest.raises(RpcFailed) as ei:
        node.NodePublishVolume(publish_req(loop.path, staging, t1, cap, readonly=True))
    assert ei.value.code == grpc.StatusCode.ALREADY_EXISTS

    # unstage while published: refused, nothing unmounted
    with pytest.raises(RpcFailed) as ei:
        node.NodeUnstageVolume(unstage_req(staging))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert MountTable.read().top(str(staging)) is not None

    for t in (t1, t2):
        node.NodeUnpublishVolume(unpublish_req(t))
        assert not t.exists()
        node.NodeUnpublishVolume(unpublish_req(t))  # already gone
    node.NodeUnstageVolume(unstage_req(staging))
    node.NodeUnstageVolume(unstage_req(staging))  # not staged any more
    assert MountTable.read().top(str(staging)) is None

    # data survives a re-stage: an existing filesystem is never reformatted
    node.NodeStageVolume(stage_req(loop.path, staging, cap, fs_type=fs_type))
    assert (staging / "hello").read_text() == "written through pod1"
    node.NodeUnstageVolume(unstage_req(staging))


def test_readonly_mount_publish_refuses_writes(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, t1, t2 = dirs(tmp_path)
    t1.parent.mkdir()
    t2.parent.mkdir()
    cap = mount_cap(mode=Mode.SINGLE_NODE_MULTI_WRITER)
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, t2, cap, readonly=True))
    node.NodePublishVolume(publish_req(loop.path, staging, t2, cap, readonly=True))
    (t1 / "f").write_text("rw")
    assert (t2 / "f").read_text() == "rw"
    with pytest.raises(OSError) as ei:
        (t2 / "g").write_text("nope")
    assert ei.value.errno == errno.EROFS
    for t in (t1, t2):
        node.NodeUnpublishVolume(unpublish_req(t))
    node.NodeUnstageVolume(unstage_req(staging))


def test_reader_only_mode_stages_read_only(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, t1, _ = dirs(tmp_path)
    t1.parent.mkdir()
    ro = mount_cap(mode=Mode.MULTI_NODE_READER_ONLY)
    # an empty device is not formatted for a read-only volume
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(loop.path, staging, ro))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert blkid_type(loop.path) == ""
    subprocess.run(["mkfs.ext4", "-q", loop.path], check=True)
    node.NodeStageVolume(stage_req(loop.path, staging, ro))
    assert MountTable.read().top(str(staging)).readonly
    # the same staging path with a writable mode is incompatible
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(loop.path, staging, mount_cap()))
    assert ei.value.code == grpc.StatusCode.ALREADY_EXISTS
    node.NodePublishVolume(publish_req(loop.path, staging, t1, ro))
    with pytest.raises(OSError):
        (t1 / "x").write_text("nope")
    node.NodeUnpublishVolume(unpublish_req(t1))
    node.NodeUnstageVolume(unstage_req(staging))


def test_single_writer_modes_allow_one_publish(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, t1, t2 = dirs(tmp_path)
    t1.parent.mkdir()
    t2.parent.mkdir()
    cap = mount_cap(mode=Mode.SINGLE_NODE_SINGLE_WRITER)
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))
    with pytest.raises(RpcFailed) as ei:
        node.NodePublishVolume(publish_req(loop.path, staging, t2, cap))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert not os.path.ismount(t2)
    node.NodeUnpublishVolume(unpublish_req(t1))
    node.NodeUnpublishVolume(unpublish_req(t2))
    node.NodeUnstageVolume(unstage_req(staging))


def test_publish_without_stage_is_failed_precondition(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, t1, _ = dirs(tmp_path)
    t1.parent.mkdir()
    cap = mount_cap()
    for req in (publish_req(loop.path, staging, t1, cap), publish_req(loop.path, None, t1, cap)):
        with pytest.raises(RpcFailed) as ei:
            node.NodePublishVolume(req)
        assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "NodeStageVolume" in ei.value.message
    assert not t1.exists() or not os.path.ismount(t1)
    # staged with another volume's device than the publish context names: refused too
    other = loops(64, vol="pvc-2")
    node.NodeStageVolume(stage_req(other.path, staging, cap, vol="pvc-2"))
    with pytest.raises(RpcFailed) as ei:
        node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # staging holds another device than this stage request's: ALREADY_EXISTS
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(loop.path, staging, cap))
    assert ei.value.code == grpc.StatusCode.ALREADY_EXISTS
    node.NodeUnstageVolume(unstage_req(staging, vol="pvc-2"))
    node.NodeUnpublishVolume(unpublish_req(t1))


def test_never_formats_a_device_with_a_signature(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, _, _ = dirs(tmp_path)
    # a DOS partition table: one Linux partition from sector 2048
    mbr = bytearray(512)
    entry = (
        bytes([0x00, 0, 0, 0, 0x83, 0, 0, 0])
        + (2048).to_bytes(4, "little")
        + (4096).to_bytes(4, "little")
    )
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(loop.path, "r+b") as f:
        f.write(mbr)
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(loop.path, staging, mount_cap()))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "partition table" in ei.value.message
    with open(loop.path, "rb") as f:
        assert f.read(512) == bytes(mbr)
    assert MountTable.read().top(str(staging)) is None

    # an xfs filesystem asked for as ext4: neither reformatted nor mounted as ext4
    xfs = loops(XFS_MIB, vol="pvc-2")
    subprocess.run(["mkfs.xfs", "-q", xfs.path], check=True)
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(xfs.path, staging, mount_cap("ext4"), vol="pvc-2"))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert blkid_type(xfs.path) == "xfs"


def test_mount_options_fs_opts_and_odd_paths(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging = tmp_path / "staging with spaces\\and a backslash"  # octal-escaped in mountinfo
    staging.mkdir()
    target = tmp_path / "pod 1" / "mount"
    target.parent.mkdir()
    ctx = {
        "linstor.csi.linbit.com/mount-options": "noatime,nodiratime",
        "linstor.csi.linbit.com/fs-opts": "-L myvol -m 0",
    }
    node.NodeStageVolume(
        stage_req(loop.path, staging, mount_cap("ext4", flags=("nosuid",)), context=ctx)
    )
    top = MountTable.read().top(str(staging))
    assert "noatime" in top.options and "nosuid" in top.options
    label = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "LABEL", loop.path], capture_output=True, text=True
    ).stdout.strip()
    assert label == "myvol"
    cap = mount_cap("ext4", flags=("nosuid",))
    node.NodeStageVolume(stage_req(loop.path, staging, cap, context=ctx))  # idempotent
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap))
    assert MountTable.read().top(str(target)) is not None
    assert node.NodeGetVolumeStats(stats_req(target)).usage
    node.NodeUnpublishVolume(unpublish_req(target))
    assert not target.exists()
    node.NodeUnstageVolume(unstage_req(staging))
    assert MountTable.read().top(str(staging)) is None


def test_block_lifecycle_and_readonly_block(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, _, _ = dirs(tmp_path)
    t1, t2 = tmp_path / "pod1" / "dev", tmp_path / "pod2" / "dev"
    t1.parent.mkdir()
    t2.parent.mkdir()
    cap = block_cap(Mode.SINGLE_NODE_MULTI_WRITER)
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    assert MountTable.read().top(str(staging)) is None  # nothing mounted for block
    node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, t1, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, t2, cap, readonly=True))
    node.NodePublishVolume(publish_req(loop.path, staging, t2, cap, readonly=True))
    assert blkid_type(loop.path) == ""  # block volumes are never formatted

    payload = b"block data".ljust(4096, b"\0")
    fd = os.open(t1, os.O_WRONLY | os.O_DIRECT) if False else os.open(t1, os.O_WRONLY)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(t2, "rb") as f:
        assert f.read(4096) == payload
    # the read-only target refuses writes at the device, not just at the mount
    with pytest.raises(OSError) as ei:
        fd = os.open(t2, os.O_WRONLY)
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    assert ei.value.errno in (errno.EPERM, errno.EROFS, errno.EACCES)
    with open(loop.path, "rb") as f:
        assert f.read(4096) == payload

    resp = node.NodeGetVolumeStats(stats_req(t1))
    assert usage(resp)["BYTES"].total == 64 * 1024 * 1024 and "INODES" not in usage(resp)
    assert not resp.volume_condition.abnormal

    with pytest.raises(RpcFailed) as ei:  # same target, other readonly flag
        node.NodePublishVolume(publish_req(loop.path, staging, t1, cap, readonly=True))
    assert ei.value.code == grpc.StatusCode.ALREADY_EXISTS

    for t in (t1, t2):
        node.NodeUnpublishVolume(unpublish_req(t))
        node.NodeUnpublishVolume(unpublish_req(t))
        assert not t.exists()
    node.NodeUnstageVolume(unstage_req(staging))


def test_unpublish_unstage_never_mounted_paths(node, tmp_path) -> None:
    node.NodeUnpublishVolume(unpublish_req(tmp_path / "never"))
    empty = tmp_path / "empty-target"
    empty.mkdir()
    node.NodeUnpublishVolume(unpublish_req(empty))
    assert not empty.exists()
    f = tmp_path / "block-target"
    f.touch()
    node.NodeUnpublishVolume(unpublish_req(f))
    assert not f.exists()
    node.NodeUnstageVolume(unstage_req(tmp_path / "never"))
    staging = tmp_path / "staging"
    staging.mkdir()
    node.NodeUnstageVolume(unstage_req(staging))
    # a target that is not mounted but holds data is not deleted
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("x")
    with pytest.raises(RpcFailed) as ei:
        node.NodeUnpublishVolume(unpublish_req(full))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (full / "keep").exists()


def test_stage_waits_for_device_and_names_it(node, tmp_path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req("/dev/drbd-missing", staging, mount_cap(), vol="pvc-x"))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "pvc-x" in ei.value.message and "node-a" in ei.value.message


def test_missing_fields_are_invalid_argument(node, tmp_path) -> None:
    from csi_linstor._gen import csi_pb2

    for method, req in [
        ("NodeStageVolume", csi_pb2.NodeStageVolumeRequest(volume_id="v")),
        ("NodePublishVolume", csi_pb2.NodePublishVolumeRequest(volume_id="v")),
        ("NodeUnpublishVolume", csi_pb2.NodeUnpublishVolumeRequest(target_path="/x")),
        ("NodeUnstageVolume", csi_pb2.NodeUnstageVolumeRequest(volume_id="v")),
        ("NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_id="v")),
        ("NodeExpandVolume", csi_pb2.NodeExpandVolumeRequest(volume_path="/x")),
    ]:
        with pytest.raises(RpcFailed) as ei:
            getattr(node, method)(req)
        assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT, method


def test_a_readonly_loop_left_by_an_interrupted_publish_is_reused_then_swept(
        node, loops, tmp_path, deadline) -> None:
    from csi_linstor.nodeops import devices as devs

    loop = loops(64)
    staging, _, _ = dirs(tmp_path)
    target = tmp_path / "pod" / "dev"
    target.parent.mkdir()
    cap = block_cap(Mode.SINGLE_NODE_MULTI_WRITER)
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    dev = devs.block_rdev(loop.path)
    assert dev is not None
    # the driver died between `losetup -r` and the bind mount: a read-only loop nobody uses
    orphan = devs.create_readonly_loop(loop.path, deadline)
    assert [p for p, _ in devs.readonly_loops_over(dev)] == [orphan]
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap, readonly=True))
    assert [p for p, _ in devs.readonly_loops_over(dev)] == [orphan]  # reused, not a second one
    assert devs.block_rdev(str(target)) == devs.block_rdev(orphan)
    node.NodeUnpublishVolume(unpublish_req(target))
    assert devs.readonly_loops_over(dev) == []
    # again, and this time the pod goes away: NodeUnstage sweeps the orphan
    orphan = devs.create_readonly_loop(loop.path, deadline)
    node.NodeUnstageVolume(unstage_req(staging))
    assert devs.readonly_loops_over(dev) == []
    assert list(staging.iterdir()) == []  # the device note is gone with the stage
    node.NodeUnstageVolume(unstage_req(staging))  # idempotent

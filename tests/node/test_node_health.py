"""Growth, stats and volume condition, DRBD state, NodeGetInfo and the real gRPC socket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.nodeops.mountinfo import MountTable
from tests.node.node_helpers import (
    NODE,
    XFS_MIB,
    Mode,
    RpcFailed,
    block_cap,
    expand_req,
    mount_cap,
    publish_req,
    stage_req,
    stats_req,
    unpublish_req,
    unstage_req,
    usage,
)
from tests.node.test_node_units import status

MIB = 1024 * 1024


def _staged(node, loop, tmp_path: Path, fs_type: str, **kw) -> tuple[Path, Path]:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    target = tmp_path / "pod" / "mount"
    target.parent.mkdir(exist_ok=True)
    cap = mount_cap(fs_type)
    node.NodeStageVolume(stage_req(loop.path, staging, cap, **kw))
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap))
    return staging, target


def _teardown(node, staging: Path, target: Path) -> None:
    node.NodeUnpublishVolume(unpublish_req(target))
    node.NodeUnstageVolume(unstage_req(staging))


def test_xfs_online_growth(node, loops, tmp_path) -> None:
    loop = loops(XFS_MIB)
    staging, target = _staged(node, loop, tmp_path, "xfs")
    before = os.statvfs(target)
    loop.grow(XFS_MIB + 256)
    resp = node.NodeExpandVolume(expand_req(target, required=(XFS_MIB + 256) * MIB))
    assert resp.capacity_bytes == (XFS_MIB + 256) * MIB
    after = os.statvfs(target)
    assert (after.f_blocks - before.f_blocks) * after.f_frsize >= 250 * MIB
    # idempotent: growing again is a no-op with the same answer
    again = node.NodeExpandVolume(expand_req(target, required=(XFS_MIB + 256) * MIB))
    assert again.capacity_bytes == resp.capacity_bytes
    assert os.statvfs(target).f_blocks == after.f_blocks
    # the device has not reached the requested size yet: retryable, not a silent OK
    with pytest.raises(RpcFailed) as ei:
        node.NodeExpandVolume(expand_req(target, required=(XFS_MIB + 512) * MIB))
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    _teardown(node, staging, target)


def test_xfs_grown_at_stage_and_post_mount_opts(node, loops, tmp_path) -> None:
    loop = loops(XFS_MIB)
    subprocess.run(["mkfs.xfs", "-q", loop.path], check=True)
    loop.grow(XFS_MIB + 256)
    ctx = {"linstor.csi.linbit.com/post-mount-xfs-opts": "extsize 1m"}
    staging = tmp_path / "staging"
    staging.mkdir()
    target = tmp_path / "pod" / "mount"
    target.parent.mkdir()
    cap = mount_cap("xfs")
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    v = os.statvfs(staging)
    assert v.f_blocks * v.f_frsize > (XFS_MIB + 150) * MIB  # minus the internal log
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap, context=ctx))
    out = subprocess.run(
        ["xfs_io", "-c", "extsize", str(target)], capture_output=True, text=True, check=True
    ).stdout
    assert "[1048576]" in out
    _teardown(node, staging, target)


def test_ext4_offline_growth_at_stage(node, loops, tmp_path) -> None:
    loop = loops(128)
    subprocess.run(["mkfs.ext4", "-q", loop.path, "64M"], check=True)
    staging, target = _staged(node, loop, tmp_path, "ext4")
    (target / "data").write_text("kept")
    v = os.statvfs(target)
    assert v.f_blocks * v.f_frsize > 100 * MIB  # grown from 64 MiB before the mount
    _teardown(node, staging, target)
    # grown again after the device grew while unstaged; the data is still there
    loop.grow(192)
    staging, target = _staged(node, loop, tmp_path, "ext4")
    v = os.statvfs(target)
    assert v.f_blocks * v.f_frsize > 160 * MIB
    assert (target / "data").read_text() == "kept"
    _teardown(node, staging, target)


def _has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def test_ext4_online_growth(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, target = _staged(node, loop, tmp_path, "ext4")
    loop.grow(128)
    if _has_cap_sys_resource():
        resp = node.NodeExpandVolume(expand_req(target, required=128 * MIB))
        assert resp.capacity_bytes == 128 * MIB
        v = os.statvfs(target)
        assert v.f_blocks * v.f_frsize > 100 * MIB
    else:
        with pytest.raises(RpcFailed) as ei:
            node.NodeExpandVolume(expand_req(target, required=128 * MIB))
        assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "CAP_SYS_RESOURCE" in ei.value.message and "offline" in ei.value.message
    # nothing to grow: OK without touching resize2fs, even without the capability
    _teardown(node, staging, target)
    staging, target = _staged(node, loop, tmp_path, "ext4")  # grown offline at stage
    resp = node.NodeExpandVolume(expand_req(target, required=128 * MIB))
    assert resp.capacity_bytes == 128 * MIB
    _teardown(node, staging, target)


def test_expand_missing_path_and_block(node, make_node, loops, tmp_path) -> None:
    with pytest.raises(RpcFailed) as ei:
        node.NodeExpandVolume(expand_req(tmp_path / "missing"))
    assert ei.value.code == grpc.StatusCode.NOT_FOUND
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    target = tmp_path / "dev"
    cap = block_cap(Mode.SINGLE_NODE_MULTI_WRITER)
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap))
    ro_target = tmp_path / "ro-dev"
    node.NodePublishVolume(publish_req(loop.path, staging, ro_target, cap, readonly=True))
    loop.grow(96)
    resp = node.NodeExpandVolume(expand_req(target, required=96 * MIB, cap=cap))
    assert resp.capacity_bytes == 96 * MIB
    # the read-only publish (a loop device over the volume) follows the growth too
    resp = node.NodeExpandVolume(expand_req(ro_target, required=96 * MIB, cap=cap))
    assert resp.capacity_bytes == 96 * MIB
    with open(ro_target, "rb") as f:
        assert f.seek(0, os.SEEK_END) == 96 * MIB
    # a block volume asked about through its (unmounted) staging directory: the device's size
    # (the device path comes from LINSTOR: NodeExpandVolume carries no publish context)
    with_linstor = make_node(linstor=FakeLinstor(loop.path))
    resp = with_linstor.NodeExpandVolume(expand_req(staging, cap=cap))
    assert resp.capacity_bytes == 96 * MIB
    for t in (target, ro_target):
        node.NodeUnpublishVolume(unpublish_req(t))
    node.NodeUnstageVolume(unstage_req(staging))


def test_stats_mount_and_conditions(node, loops, tmp_path) -> None:
    loop = loops(64)
    staging, target = _staged(node, loop, tmp_path, "ext4")
    (target / "blob").write_bytes(os.urandom(4 * MIB))
    os.sync()
    resp = node.NodeGetVolumeStats(stats_req(target))
    u = usage(resp)
    assert u["BYTES"].total > 50 * MIB and u["BYTES"].used >= 4 * MIB
    assert u["BYTES"].available > 0 and u["BYTES"].available <= u["BYTES"].total
    assert u["INODES"].total > 0 and u["INODES"].used >= 12 and u["INODES"].available > 0
    assert not resp.volume_condition.abnormal and resp.volume_condition.message
    staged = node.NodeGetVolumeStats(stats_req(staging))
    assert usage(staged)["BYTES"].total == u["BYTES"].total
    _teardown(node, staging, target)

    with pytest.raises(RpcFailed) as ei:
        node.NodeGetVolumeStats(stats_req(target))  # removed by unpublish
    assert ei.value.code == grpc.StatusCode.NOT_FOUND
    resp = node.NodeGetVolumeStats(stats_req(staging))  # exists, not mounted
    assert resp.volume_condition.abnormal and "not mounted" in resp.volume_condition.message
    assert not resp.usage


def test_drbd_state_refuses_stage_and_marks_stats(
    make_node, loops, tmp_path, fake_drbdsetup
) -> None:
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    script = fake_drbdsetup(status(quorum=False))
    node = make_node(drbdsetup=(script,))
    for payload, words in [
        (status(quorum=False), "no quorum"),
        (status(disk="Outdated", peer_disk="Outdated"), "Outdated"),
        (status(suspended=True), "suspended"),
    ]:
        fake_drbdsetup(payload)
        with pytest.raises(RpcFailed) as ei:
            node.NodeStageVolume(stage_req(loop.path, staging, mount_cap()))
        assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert words in ei.value.message and "pvc-1" in ei.value.message
        assert MountTable.read().top(str(staging)) is None
        subprocess.run(["wipefs", "-a", "-q", loop.path], check=True)

    fake_drbdsetup(status(disk="Diskless"))  # diskless with an UpToDate peer is fine
    target = tmp_path / "pod" / "mount"
    target.parent.mkdir()
    node.NodeStageVolume(stage_req(loop.path, staging, mount_cap()))
    node.NodePublishVolume(publish_req(loop.path, staging, target, mount_cap()))
    assert not node.NodeGetVolumeStats(stats_req(target)).volume_condition.abnormal
    fake_drbdsetup(status(quorum=False))
    resp = node.NodeGetVolumeStats(stats_req(target))
    assert resp.volume_condition.abnormal and "quorum" in resp.volume_condition.message
    assert usage(resp)["BYTES"].total > 0  # usage is still reported
    fake_drbdsetup("pvc-1: No such resource\n", 10)  # not a DRBD resource: nothing to say
    assert not node.NodeGetVolumeStats(stats_req(target)).volume_condition.abnormal
    _teardown(node, staging, target)


def test_drbd_through_simulator_stand_in_argv(make_node, loops, tmp_path) -> None:
    """The configured argv prefix can be several words, like the simulator's stand-in."""
    fake = tmp_path / "fake_drbd.py"
    fake.write_text(
        "import json, sys\n"
        "assert sys.argv[1:3] == ['--node', 'node-a'], sys.argv\n"
        "assert sys.argv[3:6] == ['status', '--json', 'pvc-1'], sys.argv\n"
        "print(json.dumps([{'name': 'pvc-1', 'suspended': False, 'devices': [{'volume': 0, "
        "'disk-state': 'Outdated', 'quorum': True}], 'connections': []}]))\n"
    )
    node = make_node(drbdsetup=(sys.executable, str(fake), "--node", "node-a"))
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(loop.path, staging, block_cap()))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION and "Outdated" in ei.value.message


class FakeLinstor:
    def __init__(self, device: str | None) -> None:
        self.device = device
        self.paths: list[str] = []

    def get(self, path: str, *, deadline, params=None):
        from csi_linstor.errors import NotFound

        self.paths.append(path)
        if self.device is None:
            raise NotFound("resource not found")
        return [{"volume_number": 0, "device_path": self.device}]


def test_device_path_falls_back_to_linstor(make_node, loops, tmp_path) -> None:
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    linstor = FakeLinstor(loop.path)
    node = make_node(linstor=linstor)
    req = stage_req(loop.path, staging, block_cap(), vol="pvc-1/2")
    req.publish_context.clear()
    node.NodeStageVolume(req)
    assert linstor.paths == [f"/v1/resource-definitions/pvc-1/resources/{NODE}/volumes/2"]
    node = make_node(linstor=FakeLinstor(None))
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(req)
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and NODE in ei.value.message


def test_info_and_capabilities(make_node) -> None:
    node = make_node(
        max_volumes_per_node=4096, topology=lambda d: {"linbit.com/hostname": NODE, "zone": "z1"}
    )
    info = node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == NODE and info.max_volumes_per_node == 4096
    assert dict(info.accessible_topology.segments) == {"linbit.com/hostname": NODE, "zone": "z1"}
    caps = node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    RPC = csi_pb2.NodeServiceCapability.RPC
    assert {c.rpc.type for c in caps.capabilities} == {
        RPC.STAGE_UNSTAGE_VOLUME,
        RPC.GET_VOLUME_STATS,
        RPC.EXPAND_VOLUME,
        RPC.VOLUME_CONDITION,
        RPC.SINGLE_NODE_MULTI_WRITER,
    }


def test_over_a_real_grpc_socket(loops, tmp_path) -> None:
    from csi_linstor.config import parse_endpoint
    from csi_linstor.csi.node import NodeServicer
    from csi_linstor.rpc import Runtime
    from csi_linstor.server import CsiServer
    from tests.node.conftest import by_res_dir, make_config

    sock = tmp_path / "csi.sock"
    servicer = NodeServicer(
        Runtime(),
        make_config(kubelet_dir=tmp_path, drbd_by_res_dir=by_res_dir(tmp_path)),
        None,
        lambda d: {"linbit.com/hostname": NODE},
    )
    server = CsiServer(
        parse_endpoint(f"unix://{sock}"),
        lambda s: csi_pb2_grpc.add_NodeServicer_to_server(servicer, s),
        workers=4,
        grace=1,
    )
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = csi_pb2_grpc.NodeStub(ch)
            assert stub.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10).node_id == NODE
            loop = loops(64)
            staging = tmp_path / "staging"
            staging.mkdir()
            target = tmp_path / "target"
            cap = mount_cap("ext4", Mode.SINGLE_NODE_MULTI_WRITER)
            stub.NodeStageVolume(stage_req(loop.path, staging, cap), timeout=60)
            stub.NodePublishVolume(publish_req(loop.path, staging, target, cap), timeout=30)
            (target / "x").write_text("over grpc")
            with pytest.raises(grpc.RpcError) as ei:
                stub.NodeUnstageVolume(unstage_req(staging), timeout=30)
            assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as ei:
                stub.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(volume_id="v"), timeout=5)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stub.NodeUnpublishVolume(unpublish_req(target), timeout=30)
            stub.NodeUnstageVolume(unstage_req(staging), timeout=30)
            # a command outliving the RPC deadline: DEADLINE_EXCEEDED or a "timed out" error,
            # never a hang
            start = time.monotonic()
            with pytest.raises(grpc.RpcError):
                stub.NodeStageVolume(stage_req("/dev/never-there", staging, cap), timeout=1)
            assert time.monotonic() - start < 5
    finally:
        server.stop(1)


def test_drbdsetup_failure_is_retryable_and_says_why(
    make_node, loops, tmp_path, fake_drbdsetup
) -> None:
    """drbdsetup that cannot reach the kernel module (e.g. outside the host network namespace):
    UNAVAILABLE naming the command and its stderr, not INTERNAL; nothing is formatted."""
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    script = fake_drbdsetup("Could not connect to 'drbd' generic netlink family\n", 20)
    node = make_node(drbdsetup=(script,))
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(stage_req(loop.path, staging, mount_cap()))
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    msg = ei.value.message
    assert "status --json pvc-1" in msg and "generic netlink family" in msg
    assert "hostNetwork" in msg
    assert MountTable.read().top(str(staging)) is None
    blkid = subprocess.run(["blkid", "-p", loop.path], capture_output=True, check=False)
    assert blkid.returncode == 2, "the device was formatted"

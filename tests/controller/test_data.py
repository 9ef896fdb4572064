"""Data survives snapshot → restore and clone: real filesystems on loop devices, the simulator's
or, on real LINSTOR, those its satellite attaches for FILE_THIN volumes (the publish context's
device path: the storage layer has no DRBD device above them).

Needs root (loop devices, mount). Each case writes a file, snapshots (or clones), overwrites the
original, and reads the original bytes back from the restored (or cloned) volume.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from csi_linstor._gen import csi_pb2
from tests.controller.conftest import backend_env, close_env, create_req

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mount")

ORIGINAL = os.urandom(64 * 1024)
CHANGED = os.urandom(64 * 1024)


def cap(fs):
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs),
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, timeout=120, text=True)


class Mounted:
    def __init__(self, dev: str, where: Path, fs: str):
        self.dev, self.where, self.fs = dev, where, fs

    def __enter__(self):
        self.where.mkdir(parents=True, exist_ok=True)
        opts = ["-o", "nouuid"] if self.fs == "xfs" else []
        run("mount", "-t", self.fs, *opts, self.dev, str(self.where))
        return self.where

    def __exit__(self, *exc):
        run("umount", str(self.where))


@pytest.fixture
def denv(request, backend, tmp_path):
    kw = {"real_devices": True} if backend == "sim" else {}
    env = backend_env(request, backend, tmp_path, **kw)
    yield env
    close_env(env)


def _node(env):
    return "node-1" if env.sim else env.nodes[0]


def _device(env, rd):
    ctx = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=rd, node_id=_node(env), volume_capability=cap("ext4"))).publish_context
    if env.sim:  # the model's DRBD device path does not exist: its backing loop device
        return env.sim.device_path(rd)
    return ctx["linstor.csi.linbit.com/device-path"]


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
@pytest.mark.parametrize("how", ["snapshot", "snapshot-larger", "clone"])
def test_content_survives(denv, tmp_path, fs, how):
    env = denv
    size = 512 * 1024 * 1024
    env.ctl.CreateVolume(create_req("pvc-data", size=size, cap=cap(fs),
                                    params=env.params(placementCount="1")))
    dev = _device(env, "pvc-data")
    run(f"mkfs.{fs}", "-q", *(["-F"] if fs == "ext4" else ["-f"]), dev)
    with Mounted(dev, tmp_path / "m1", fs) as m:
        (m / "file").write_bytes(ORIGINAL)
    run("sync")
    if how.startswith("snapshot"):
        snap = env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            name="snapshot-data", source_volume_id="pvc-data")).snapshot
        source = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
            snapshot_id=snap.snapshot_id))
    else:
        source = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(
            volume_id="pvc-data"))
        env.ctl.CreateVolume(create_req("pvc-copy", size=size, cap=cap(fs),
                                        params=env.params(placementCount="1"),
                                        volume_content_source=source))
    with Mounted(dev, tmp_path / "m1", fs) as m:
        (m / "file").write_bytes(CHANGED)
    run("sync")
    copy_size = 2 * size if how == "snapshot-larger" else size
    if how.startswith("snapshot"):
        env.ctl.CreateVolume(create_req("pvc-copy", size=copy_size, cap=cap(fs),
                                        params=env.params(placementCount="2"),
                                        volume_content_source=source))
    copy = _device(env, "pvc-copy")
    assert int(run("blockdev", "--getsize64", copy).stdout) == copy_size
    with Mounted(copy, tmp_path / "m2", fs) as m:
        assert (m / "file").read_bytes() == ORIGINAL
    with Mounted(dev, tmp_path / "m1", fs) as m:
        assert (m / "file").read_bytes() == CHANGED
    for rd in ("pvc-copy", "pvc-data"):
        env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id=rd, node_id=_node(env)))
        env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    if how.startswith("snapshot"):
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert env.leftovers() == ([], [])

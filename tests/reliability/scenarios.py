"""The RPCs the kill -9 trials interrupt: for each, what exists before (prep), the RPC itself
(act, retried after the restart), what is observed once it converged (check: LINSTOR's objects,
the mounts, data read back), and the cleanup that must leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csi_linstor._gen import csi_pb2
from tests.reliability.engine import (
    MIB,
    OTHER,
    Env,
    TrialFailed,
    Vol,
    fs_cap,
    retry,
    topology,
)

DATA = "crash-data.bin"


def payload(name: str) -> bytes:
    """64 KiB that say which volume they were written to."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (65536 // len(seed) + 1))[:65536]


def write_data(directory: Path, name: str) -> None:
    """Write through the mounted volume and make it durable (fsync the file and the dir)."""
    path = directory / DATA
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, payload(name))
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_data(directory: Path, name: str, what: str) -> None:
    got = (directory / DATA).read_bytes() if (directory / DATA).exists() else b""
    if got != payload(name):
        raise TrialFailed(f"{what}: the data written before the crash did not read back "
                          f"({len(got)} bytes, expected 65536 of {name!r})")


@dataclass
class Ctx:
    tag: str
    vol: Vol | None = None
    snap_id: str = ""
    mkfs_before: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str  # the RPC (and where it is stalled)
    prep: Callable[[Env, Ctx], None]
    act: Callable[[Env, Ctx], Callable[[float], Any]]
    check: Callable[[Env, Ctx], dict[str, Any]]
    cleanup: Callable[[Env, Ctx], None]
    stalls: list[tuple[str, str]] = field(default_factory=list)  # node stand-in points
    rest_points: bool = True  # stall REST calls of the RPC too
    mkfs_runs: int = 0  # how many mkfs the RPC runs (crash or not)


class Golden:
    """One volume with data and its snapshot, made once: the sources of clones and restores."""

    def __init__(self, env: Env) -> None:
        self.vol = env.create("pvc-golden")
        env.cpublish(self.vol)
        env.stage(self.vol)
        assert self.vol.staging is not None
        write_data(self.vol.staging, "pvc-golden")
        req_u = csi_pb2.NodeUnstageVolumeRequest(volume_id=self.vol.id,
                                                 staging_target_path=str(self.vol.staging))
        retry(lambda t: env.driver.node.NodeUnstageVolume(req_u, timeout=t))
        req_c = env.cunpublish_req(self.vol)
        retry(lambda t: env.driver.ctl.ControllerUnpublishVolume(req_c, timeout=t))
        req = csi_pb2.CreateSnapshotRequest(source_volume_id=self.vol.id, name="snap-golden")
        self.snap_id = retry(lambda t: env.driver.ctl.CreateSnapshot(
            req, timeout=t)).snapshot.snapshot_id

    def remove(self, env: Env) -> None:
        req = csi_pb2.DeleteSnapshotRequest(snapshot_id=self.snap_id)
        retry(lambda t: env.driver.ctl.DeleteSnapshot(req, timeout=t))
        env.teardown(self.vol, node_side=False, nodes=())


def mount_view(env: Env, tag: str) -> list[list[Any]]:
    """Mounts under the test dir with device numbers replaced by their order of appearance."""
    ids: dict[str, int] = {}
    out = []
    for path, fstype, ro, dev in env.mounts():
        if tag not in path and "golden" not in path:
            continue
        out.append([os.path.relpath(path, env.base).replace(tag, "TAG"), fstype, ro,
                    ids.setdefault(dev, len(ids))])
    return out


def objects(env: Env, tag: str) -> dict[str, Any]:
    """LINSTOR's objects of this trial (and the golden ones): what the end state compares."""
    mine = ("golden", tag)
    found = env.sim.objects()
    return {"rds": {k: v for k, v in found["rds"].items() if any(m in k for m in mine)},
            "resources": [r for r in found["resources"] if any(m in r[0] for m in mine)],
            "snapshots": [s for s in found["snapshots"] if any(m in s for m in mine)],
            "rgs": found["rgs"]}


def verify_clone(env: Env, ctx: Ctx) -> None:
    """Stage the new volume and read the golden data back through its mount."""
    assert ctx.vol is not None
    env.cpublish(ctx.vol)
    env.stage(ctx.vol)
    assert ctx.vol.staging is not None
    read_data(ctx.vol.staging, "pvc-golden", f"{ctx.vol.id} (made from pvc-golden)")


def _name(ctx: Ctx) -> str:
    return f"pvc-{ctx.tag}"


def _create_req(ctx: Ctx, source: Any = None) -> Any:
    return csi_pb2.CreateVolumeRequest(
        name=_name(ctx), capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MIB),
        volume_capabilities=[fs_cap()], parameters={"placementCount": "1"},
        accessibility_requirements=topology(),
        volume_content_source=source)


def _act_create(source: Callable[[Env, Ctx], Any] | None) -> Callable[[Env, Ctx], Any]:
    def act(env: Env, ctx: Ctx) -> Callable[[float], Any]:
        req = _create_req(ctx, source(env, ctx) if source else None)

        def call(t: float) -> Any:
            v = env.driver.ctl.CreateVolume(req, timeout=t).volume
            ctx.vol = Vol(v.volume_id, dict(v.volume_context))
            return v
        return call
    return act


def _nothing(env: Env, ctx: Ctx) -> None:
    return None


def _delete_vol(env: Env, ctx: Ctx) -> None:
    if ctx.vol is not None:
        env.teardown(ctx.vol, node_side=ctx.vol.staging is not None,
                     nodes=tuple(ctx.extra.get("nodes", ("node-1",))))


def _check_objects(env: Env, ctx: Ctx) -> dict[str, Any]:
    return {"linstor": objects(env, ctx.tag)}


def _check_clone(env: Env, ctx: Ctx) -> dict[str, Any]:
    seen = {"linstor": objects(env, ctx.tag)}
    verify_clone(env, ctx)
    seen["mounts"] = mount_view(env, ctx.tag)
    return seen


def _snap_source(golden: Golden) -> Callable[[Env, Ctx], Any]:
    return lambda env, ctx: csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=golden.snap_id))


def _vol_source(golden: Golden) -> Callable[[Env, Ctx], Any]:
    return lambda env, ctx: csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=golden.vol.id))


# -- controller scenarios ----------------------------------------------------------------------


def _prep_vol(env: Env, ctx: Ctx) -> None:
    ctx.vol = env.create(_name(ctx))


def _act_delete(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = csi_pb2.DeleteVolumeRequest(volume_id=ctx.vol.id)
    return lambda t: env.driver.ctl.DeleteVolume(req, timeout=t)


def _cleanup_deleted(env: Env, ctx: Ctx) -> None:
    return None


def _act_cpublish(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = env.cpublish_req(ctx.vol, OTHER)
    ctx.extra["nodes"] = ("node-1", OTHER)
    return lambda t: env.driver.ctl.ControllerPublishVolume(req, timeout=t)


def _prep_published_other(env: Env, ctx: Ctx) -> None:
    _prep_vol(env, ctx)
    assert ctx.vol is not None
    env.cpublish(ctx.vol, OTHER)


def _act_cunpublish(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = env.cunpublish_req(ctx.vol, OTHER)
    return lambda t: env.driver.ctl.ControllerUnpublishVolume(req, timeout=t)


def _act_snapshot(golden: Golden) -> Callable[[Env, Ctx], Callable[[float], Any]]:
    def act(env: Env, ctx: Ctx) -> Callable[[float], Any]:
        req = csi_pb2.CreateSnapshotRequest(source_volume_id=golden.vol.id,
                                            name=f"snap-{ctx.tag}")

        def call(t: float) -> Any:
            snap = env.driver.ctl.CreateSnapshot(req, timeout=t).snapshot
            if not snap.ready_to_use:
                raise TrialFailed("CreateSnapshot answered OK with a snapshot not ready to use")
            ctx.snap_id = snap.snapshot_id
            return snap
        return call
    return act


def _cleanup_snapshot(env: Env, ctx: Ctx) -> None:
    req = csi_pb2.DeleteSnapshotRequest(snapshot_id=ctx.snap_id)
    retry(lambda t: env.driver.ctl.DeleteSnapshot(req, timeout=t))


def _act_cexpand(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=ctx.vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MIB),
        volume_capability=fs_cap())
    return lambda t: env.driver.ctl.ControllerExpandVolume(req, timeout=t)


# -- node scenarios ----------------------------------------------------------------------------


def _prep_attached(env: Env, ctx: Ctx) -> None:
    _prep_vol(env, ctx)
    assert ctx.vol is not None
    env.cpublish(ctx.vol)
    env.paths(ctx.vol)
    ctx.mkfs_before = len(env.calls("mkfs.ext4").runs)


def _act_stage(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = env.stage_req(ctx.vol)
    return lambda t: env.driver.node.NodeStageVolume(req, timeout=t)


def _mkfs_count(env: Env, ctx: Ctx) -> int:
    return len(env.calls("mkfs.ext4").runs) - ctx.mkfs_before


def _check_staged(env: Env, ctx: Ctx) -> dict[str, Any]:
    assert ctx.vol is not None and ctx.vol.staging is not None
    seen = {"linstor": objects(env, ctx.tag), "mounts": mount_view(env, ctx.tag),
            "mkfs": _mkfs_count(env, ctx)}
    write_data(ctx.vol.staging, ctx.tag)
    read_data(ctx.vol.staging, ctx.tag, "staging mount")
    return seen


def _prep_staged(env: Env, ctx: Ctx) -> None:
    _prep_attached(env, ctx)
    assert ctx.vol is not None and ctx.vol.staging is not None
    env.stage(ctx.vol)
    write_data(ctx.vol.staging, ctx.tag)
    ctx.mkfs_before = len(env.calls("mkfs.ext4").runs)


def _act_publish(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = env.publish_req(ctx.vol)
    return lambda t: env.driver.node.NodePublishVolume(req, timeout=t)


def _check_published(env: Env, ctx: Ctx) -> dict[str, Any]:
    assert ctx.vol is not None and ctx.vol.target is not None
    seen = {"linstor": objects(env, ctx.tag), "mounts": mount_view(env, ctx.tag),
            "mkfs": _mkfs_count(env, ctx)}
    read_data(ctx.vol.target, ctx.tag, "target mount")
    return seen


# xfs for the online growth: ext4 grows online only with CAP_SYS_RESOURCE (not in CI's sandbox;
# tests/e2e/test_story3_expansion.py covers both), and xfs needs 300 MiB at least.
XFS_SIZE, XFS_GROWN = 320 * MIB, 352 * MIB


def _expand(env: Env, vol: Vol, size: int) -> None:
    req = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        volume_capability=fs_cap(vol.fstype))
    retry(lambda t: env.driver.ctl.ControllerExpandVolume(req, timeout=t))


def _prep_published_grown(env: Env, ctx: Ctx) -> None:
    ctx.vol = env.create(_name(ctx), XFS_SIZE, fstype="xfs")
    env.cpublish(ctx.vol)
    env.stage(ctx.vol)
    assert ctx.vol.staging is not None
    write_data(ctx.vol.staging, ctx.tag)
    env.publish(ctx.vol)
    ctx.extra["fs_size"] = _fs_size(ctx.vol.staging)
    _expand(env, ctx.vol, XFS_GROWN)
    ctx.mkfs_before = len(env.calls("mkfs.ext4").runs)


def _act_nexpand(env: Env, ctx: Ctx) -> Callable[[float], Any]:
    assert ctx.vol is not None
    req = csi_pb2.NodeExpandVolumeRequest(
        volume_id=ctx.vol.id, volume_path=str(ctx.vol.target),
        staging_target_path=str(ctx.vol.staging),
        capacity_range=csi_pb2.CapacityRange(required_bytes=XFS_GROWN),
        volume_capability=fs_cap("xfs"))
    return lambda t: env.driver.node.NodeExpandVolume(req, timeout=t)


def _fs_size(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def _check_grown(env: Env, ctx: Ctx) -> dict[str, Any]:
    seen = _check_published(env, ctx)
    assert ctx.vol is not None and ctx.vol.target is not None
    size = _fs_size(ctx.vol.target)
    if size < ctx.extra["fs_size"] + 16 * MIB:
        raise TrialFailed(f"the filesystem was not grown: {ctx.extra['fs_size']} -> {size} "
                          "bytes")
    seen["grown"] = True
    return seen


def _prep_grown_unstaged(env: Env, ctx: Ctx) -> None:
    """A staged ext4 volume with data, unstaged, then grown by the controller: the next stage
    grows the filesystem offline (e2fsck -f, resize2fs: one long operation)."""
    _prep_staged(env, ctx)
    assert ctx.vol is not None and ctx.vol.staging is not None
    req = csi_pb2.NodeUnstageVolumeRequest(volume_id=ctx.vol.id,
                                           staging_target_path=str(ctx.vol.staging))
    retry(lambda t: env.driver.node.NodeUnstageVolume(req, timeout=t))
    _expand(env, ctx.vol, 32 * MIB)


def _check_staged_grown(env: Env, ctx: Ctx) -> dict[str, Any]:
    assert ctx.vol is not None and ctx.vol.staging is not None
    seen = {"linstor": objects(env, ctx.tag), "mounts": mount_view(env, ctx.tag),
            "mkfs": _mkfs_count(env, ctx)}
    read_data(ctx.vol.staging, ctx.tag, "staging mount after the offline grow")
    size = _fs_size(ctx.vol.staging)
    if size < 24 * MIB:
        raise TrialFailed(f"the filesystem was not grown offline: {size} bytes")
    seen["grown"] = True
    return seen


def scenarios(golden: Golden) -> list[Scenario]:
    return [
        Scenario("CreateVolume", _nothing, _act_create(None), _check_objects, _delete_vol),
        Scenario("CreateVolume from snapshot", _nothing, _act_create(_snap_source(golden)),
                 _check_clone, _delete_vol),
        Scenario("CreateVolume from volume", _nothing, _act_create(_vol_source(golden)),
                 _check_clone, _delete_vol),
        Scenario("DeleteVolume", _prep_vol, _act_delete, _check_objects, _cleanup_deleted),
        Scenario("ControllerPublishVolume", _prep_vol, _act_cpublish, _check_objects,
                 _delete_vol),
        Scenario("ControllerUnpublishVolume", _prep_published_other, _act_cunpublish,
                 _check_objects, _delete_vol),
        Scenario("CreateSnapshot", _nothing, _act_snapshot(golden), _check_objects,
                 _cleanup_snapshot),
        Scenario("ControllerExpandVolume", _prep_vol, _act_cexpand, _check_objects,
                 _delete_vol),
        Scenario("NodeStageVolume (mkfs)", _prep_attached, _act_stage, _check_staged,
                 _delete_vol, stalls=[("mkfs.ext4", "main")], rest_points=False, mkfs_runs=1),
        Scenario("NodeStageVolume (mount)", _prep_attached, _act_stage, _check_staged,
                 _delete_vol, stalls=[("mount", "fs")], mkfs_runs=1),
        Scenario("NodePublishVolume", _prep_staged, _act_publish, _check_published,
                 _delete_vol, stalls=[("mount", "bind")]),
        Scenario("NodeStageVolume (offline grow)", _prep_grown_unstaged, _act_stage,
                 _check_staged_grown, _delete_vol,
                 stalls=[("e2fsck", "main"), ("resize2fs", "main")], rest_points=False),
        Scenario("NodeExpandVolume", _prep_published_grown, _act_nexpand, _check_grown,
                 _delete_vol, stalls=[("xfs_growfs", "main")]),
    ]


def rest_route_regex(key: str) -> str:
    """The simulator latency rule for one ``"METHOD /template"`` counts key."""
    return "^" + re.escape(key) + "$"

"""The node touches only this volume's mounts and devices (issue 12).

- Every staging, target and volume path must resolve inside the kubelet directory.
- Unpublish and unstage unmount only a mount of this volume; anything else is refused, untouched.
- A device path in the publish context is used only when it is this volume's device.

Host filesystems are stood in for by tmpfs mounts outside the test's kubelet directory: these
tests must never be able to unmount anything real, on this code or on the old one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_linstor.errors import InvalidArgument, NotFound, Unavailable
from csi_linstor.nodeops.mountinfo import MountTable
from csi_linstor.nodeops.paths import resolve_inside
from tests.node.conftest import own
from tests.node.node_helpers import (
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
)


def _mounted(path: Path) -> bool:
    return MountTable.read().top(str(path)) is not None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``tmpfs(path)`` mounts a tmpfs (a stand-in for a host filesystem) at ``path``."""
    made: list[Path] = []

    def mount(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "hostfs", str(path)], check=True)
        (path / "precious").write_text("host data")
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _code(fn: Any, req: Any) -> RpcFailed:
    with pytest.raises(RpcFailed) as ei:
        fn(req)
    return ei.value


def test_resolve_inside_the_kubelet_dir() -> None:
    root = "/var/lib/kubelet"
    ok = resolve_inside("/var/lib/kubelet/pods/x/mount", root, "target_path")
    assert ok == os.path.realpath("/var/lib/kubelet/pods/x/mount")
    for bad in ("/", "/proc", "/var/lib/kubelet", "/var/lib/kubelet/../../../etc",
                "/var/lib/kubeletx/pods", "relative/path"):
        with pytest.raises(InvalidArgument) as ei:
            resolve_inside(bad, root, "target_path")
        assert "target_path" in str(ei.value) and repr(bad).strip("'") in str(ei.value)


def test_paths_outside_the_kubelet_dir_are_invalid_and_untouched(
    make_node, loops, tmp_path, tmpfs
) -> None:
    """A request naming a path outside --kubelet-dir, directly, through `..` or through a
    symlink, is INVALID_ARGUMENT (NOT_FOUND for stats and expand) for every node RPC, and the
    filesystem there stays mounted."""
    kubelet = tmp_path / "kubelet"
    kubelet.mkdir()
    node = make_node(kubelet_dir=kubelet)
    host = tmpfs(tmp_path / "host" / "fs")
    (kubelet / "pods").mkdir()
    (kubelet / "pods" / "escape").symlink_to(host)
    loop = loops(64)
    cap = mount_cap()
    for path in (host, kubelet / ".." / "host" / "fs", kubelet / "pods" / "escape"):
        invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
        for fn, req, code in (
            (node.NodeUnpublishVolume, unpublish_req(path), invalid),
            (node.NodeUnstageVolume, unstage_req(path), invalid),
            (node.NodeStageVolume, stage_req(loop.path, path, cap), invalid),
            (node.NodePublishVolume, publish_req(loop.path, kubelet / "staging", path, cap),
             invalid),
            (node.NodePublishVolume, publish_req(loop.path, path, kubelet / "t", cap), invalid),
            # the spec's "volume does not exist at volume_path" (what csi-sanity checks)
            (node.NodeGetVolumeStats, stats_req(path), not_found),
            (node.NodeExpandVolume, expand_req(path), not_found),
        ):
            err = _code(fn, req)
            assert err.code == code, (fn, path, err)
            assert str(path) in err.message and "kubelet directory" in err.message
            assert _mounted(host) and (host / "precious").read_text() == "host data"
    assert not _mounted(kubelet / "t") and not _mounted(kubelet / "staging")


def test_unpublish_and_unstage_refuse_what_is_not_this_volumes(
    make_node, loops, tmp_path, tmpfs
) -> None:
    """The `nope` case: a request whose volume does not own the mount at the path is
    FAILED_PRECONDITION naming the path and what is mounted there; nothing is unmounted."""
    node = make_node()
    mine = loops(64)  # pvc-1's device
    other = loops(64, vol="pvc-2")
    staging = tmp_path / "staging"
    staging.mkdir()
    target = tmp_path / "pod" / "mount"
    target.parent.mkdir()
    cap = mount_cap()
    node.NodeStageVolume(stage_req(mine.path, staging, cap))
    node.NodePublishVolume(publish_req(mine.path, staging, target, cap))
    node.NodeStageVolume(stage_req(other.path, tmp_path / "staging2", cap, vol="pvc-2"))
    foreign = tmpfs(tmp_path / "pods" / "foreign")  # something else, inside the kubelet dir

    for vol in ("nope", "pvc-2"):
        for fn, req, path in (
            (node.NodeUnpublishVolume, unpublish_req(target, vol=vol), target),
            (node.NodeUnstageVolume, unstage_req(staging, vol=vol), staging),
        ):
            err = _code(fn, req)
            assert err.code == grpc.StatusCode.FAILED_PRECONDITION, (vol, err)
            assert str(path) in err.message and mine.path in err.message
            assert _mounted(path)
    for fn, req in (
        (node.NodeUnpublishVolume, unpublish_req(foreign)),
        (node.NodeUnstageVolume, unstage_req(foreign)),
    ):
        err = _code(fn, req)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert str(foreign) in err.message and "hostfs" in err.message and "tmpfs" in err.message
        assert (foreign / "precious").read_text() == "host data"

    # the volume's own requests still work, and repeating them is fine
    node.NodeUnpublishVolume(unpublish_req(target))
    node.NodeUnpublishVolume(unpublish_req(target))
    node.NodeUnstageVolume(unstage_req(staging))
    node.NodeUnstageVolume(unstage_req(staging))
    node.NodeUnstageVolume(unstage_req(tmp_path / "staging2", vol="pvc-2"))
    # never mounted or gone, inside the kubelet dir: OK for any volume id
    node.NodeUnpublishVolume(unpublish_req(tmp_path / "never" / "mounted", vol="nope"))
    node.NodeUnstageVolume(unstage_req(tmp_path / "never", vol="nope"))


def test_block_unpublish_and_unstage_refuse_another_volume(make_node, loops, tmp_path) -> None:
    node = make_node()
    mine = loops(64)
    loops(64, vol="pvc-2")
    staging = tmp_path / "staging"
    staging.mkdir()
    rw = tmp_path / "publish" / "rw"
    ro = tmp_path / "publish" / "ro"
    cap = block_cap(Mode.SINGLE_NODE_MULTI_WRITER)
    node.NodeStageVolume(stage_req(mine.path, staging, cap))
    node.NodePublishVolume(publish_req(mine.path, staging, rw, cap))
    node.NodePublishVolume(publish_req(mine.path, staging, ro, cap, readonly=True))
    for target in (rw, ro):
        err = _code(node.NodeUnpublishVolume, unpublish_req(target, vol="pvc-2"))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and str(target) in err.message
        assert _mounted(target)
    err = _code(node.NodeUnstageVolume, unstage_req(staging, vol="pvc-2"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and mine.path in err.message
    assert (staging / "csi-linstor-device").exists()
    for target in (rw, ro):  # the read-only one is a loop device over ours: still ours
        node.NodeUnpublishVolume(unpublish_req(target))
        assert not target.exists()
    node.NodeUnstageVolume(unstage_req(staging))


class FakeLinstor:
    """Answers this node's volume lookup with a device path, or raises the error given."""

    def __init__(self, device: str | None = None, error: Exception | None = None) -> None:
        self.device = device
        self.error = error
        self.calls = 0

    def get(self, path: str, *, deadline: Any, params: Any = None) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"volume_number": 0, "device_path": self.device}


def test_unstage_during_a_linstor_outage(make_node, loops, tmp_path) -> None:
    """With DRBD's by-res link on the node, unpublish and unstage need no LINSTOR; without it
    (a volume without DRBD) they answer UNAVAILABLE and touch nothing until LINSTOR is back."""
    down = FakeLinstor(error=Unavailable("LINSTOR controller unreachable"))
    node = make_node(linstor=down)
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    target = tmp_path / "pod" / "mount"
    target.parent.mkdir()
    cap = mount_cap()
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap))
    assert down.calls == 0
    node.NodeUnpublishVolume(unpublish_req(target))
    node.NodeUnstageVolume(unstage_req(staging))
    assert down.calls == 0

    # the same volume without a by-res link (no DRBD layer): LINSTOR decides
    up = FakeLinstor(device=loop.path)
    node = make_node(linstor=up, drbd_by_res_dir=tmp_path / "no-by-res")
    node.NodeStageVolume(stage_req(loop.path, staging, cap))
    node.NodePublishVolume(publish_req(loop.path, staging, target, cap))
    node = make_node(linstor=down, drbd_by_res_dir=tmp_path / "no-by-res")
    for fn, req, path in (
        (node.NodeUnpublishVolume, unpublish_req(target), target),
        (node.NodeUnstageVolume, unstage_req(staging), staging),
    ):
        err = _code(fn, req)
        assert err.code == grpc.StatusCode.UNAVAILABLE and _mounted(path)
    node = make_node(linstor=up, drbd_by_res_dir=tmp_path / "no-by-res")
    node.NodeUnpublishVolume(unpublish_req(target))
    node.NodeUnstageVolume(unstage_req(staging))


def test_stage_refuses_a_device_that_is_not_this_volumes(make_node, loops, tmp_path) -> None:
    """A publish context naming another (empty) block device: FAILED_PRECONDITION naming both,
    before any probe, mkfs or mount; the device stays blank."""
    mine = loops(64)
    stranger = loops(64, vol=None)
    staging = tmp_path / "staging"
    staging.mkdir()
    target = tmp_path / "publish" / "dev"

    def blank(dev: str) -> bool:
        return subprocess.run(["blkid", "-p", dev], capture_output=True).returncode == 2

    for node in (
        make_node(),  # verified against the by-res link
        make_node(linstor=FakeLinstor(mine.path), drbd_by_res_dir=tmp_path / "none"),  # LINSTOR
    ):
        for cap in (mount_cap(), block_cap()):
            err = _code(node.NodeStageVolume, stage_req(stranger.path, staging, cap))
            assert err.code == grpc.StatusCode.FAILED_PRECONDITION, err
            assert stranger.path in err.message and mine.path in err.message
            assert not _mounted(staging) and blank(stranger.path)
            assert not (staging / "csi-linstor-device").exists()
        err = _code(node.NodePublishVolume,
                    publish_req(stranger.path, staging, target, block_cap()))
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and not target.exists()
    # no by-res link and no LINSTOR: the device cannot be verified, so it is not used
    node = make_node(drbd_by_res_dir=tmp_path / "none")
    err = _code(node.NodeStageVolume, stage_req(mine.path, staging, mount_cap()))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and blank(mine.path)
    # LINSTOR has no resource for the volume on this node: NOT_FOUND
    node = make_node(linstor=FakeLinstor(error=NotFound("no such resource")),
                     drbd_by_res_dir=tmp_path / "none")
    err = _code(node.NodeStageVolume, stage_req(mine.path, staging, mount_cap()))
    assert err.code == grpc.StatusCode.NOT_FOUND and blank(mine.path)
    # a symlink to the right device is the right device (compared by device number)
    alias = tmp_path / "alias"
    alias.symlink_to(mine.path)
    own(tmp_path, str(alias), "pvc-1")
    make_node().NodeStageVolume(stage_req(mine.path, staging, block_cap()))
    make_node().NodeUnstageVolume(unstage_req(staging))


class FakeRdLinstor(FakeLinstor):
    """Also answers the resource definition list with the given Aux/csi-access-type."""

    def __init__(self, device: str | None, access: str | None,
                 error: Exception | None = None) -> None:
        super().__init__(device, error)
        self.access = access

    def get(self, path: str, *, deadline: Any, params: Any = None) -> Any:
        if path != "/v1/resource-definitions":
            return super().get(path, deadline=deadline, params=params)
        self.calls += 1
        if self.error is not None:
            raise self.error
        props = {} if self.access is None else {"Aux/csi-access-type": self.access}
        return [{"name": "pvc-1", "props": props, "resource_group_name": "rg"}]


def test_a_volume_created_as_block_is_never_formatted(make_node, loops, tmp_path) -> None:
    """A raw block volume (data without a signature) asked for as a filesystem: refused with
    FAILED_PRECONDITION, never formatted, whether the publish context or LINSTOR says so; when
    neither can say, an empty device is not formatted (UNAVAILABLE) but a filesystem mounts."""
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()

    def blank() -> bool:
        return subprocess.run(["blkid", "-p", loop.path], capture_output=True).returncode == 2

    def no_key(cap: Any) -> Any:
        req = stage_req(loop.path, staging, cap)
        del req.publish_context["linstor.csi.linbit.com/access-type"]
        return req

    req = stage_req(loop.path, staging, mount_cap())
    req.publish_context["linstor.csi.linbit.com/access-type"] = "block"
    for node, request in (
        (make_node(), req),  # the controller's publish context says block
        (make_node(linstor=FakeRdLinstor(loop.path, "block")), no_key(mount_cap())),  # LINSTOR
    ):
        err = _code(node.NodeStageVolume, request)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION, err
        assert "raw block" in err.message and "pvc-1" in err.message
        assert blank() and not _mounted(staging)

    # LINSTOR unreachable (or absent) and no key: an empty device is not formatted
    down = FakeRdLinstor(loop.path, None, error=Unavailable("LINSTOR controller unreachable"))
    for node in (make_node(linstor=down), make_node()):
        err = _code(node.NodeStageVolume, no_key(mount_cap()))
        assert err.code == grpc.StatusCode.UNAVAILABLE and "not formatting" in err.message
        assert blank() and not _mounted(staging)

    # a volume with no recorded access type (LINBIT's driver) is formatted as before
    node = make_node(linstor=FakeRdLinstor(loop.path, None))
    node.NodeStageVolume(no_key(mount_cap()))
    assert not blank()
    node.NodeUnstageVolume(unstage_req(staging))
    # ...and once it has a filesystem, it mounts even while LINSTOR cannot be asked
    node = make_node(linstor=down)
    node.NodeStageVolume(no_key(mount_cap()))
    assert _mounted(staging)
    node.NodeUnstageVolume(unstage_req(staging))
    # block staging of a block volume is untouched by all this
    make_node(linstor=FakeRdLinstor(loop.path, "block")).NodeStageVolume(no_key(block_cap()))
    make_node().NodeUnstageVolume(unstage_req(staging))

"""Fixtures for node tests on real loop devices, real filesystems and real mounts (needs root).

Every test must leave no mount and no loop device behind: an autouse check compares the mount
table and ``losetup -J`` before and after each test (and once more for the whole session), after
the fixtures below have unmounted everything under tmp_path and detached their loop devices.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from csi_linstor.config import Config, parse_endpoint
from csi_linstor.deadline import Deadline
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountTable
from csi_linstor.rpc import Runtime
from tests.node.node_helpers import FakeContext
from tests.prerequisites import require

NEEDED = (
    "losetup",
    "mkfs.ext4",
    "mkfs.xfs",
    "blkid",
    "wipefs",
    "resize2fs",
    "xfs_growfs",
    "xfs_io",
    "mount",
    "umount",
    "fsck",
    "e2fsck",
    "dumpe2fs",
    "xfs_info",
)

require(os.geteuid() == 0, "node tests need root (loop devices and mounts)")
_missing = [t for t in NEEDED if shutil.which(t) is None]
require(not _missing, f"node tests need {', '.join(_missing)}")

from tests.node.node_helpers import NODE  # noqa: E402


def _loops() -> dict[str, str]:
    out = subprocess.run(["losetup", "-J"], capture_output=True, text=True, check=False).stdout
    if not out.strip():
        return {}
    return {d["name"]: d.get("back-file") or "" for d in json.loads(out)["loopdevices"]}


def _mounts() -> set[tuple[str, str, str]]:
    return {(e.mount_point, e.source, f"{e.major}:{e.minor}") for e in MountTable.read()}


def _state(base: str) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """Loop devices and mounts that belong to this test session (under its base temp dir).

    Other engineers and CI jobs may create loop devices and mounts on the same machine at the
    same time; only what hangs off our own temp dir counts.
    """
    base = base.rstrip("/") + "/"
    all_loops = _loops()
    ours = {n: b for n, b in all_loops.items() if b.startswith(base)}
    # read-only loop devices over our loop devices (read-only block publishes)
    ours.update({n: b for n, b in all_loops.items() if b in ours})
    mounts = {m for m in _mounts() if (m[0] + "/").startswith(base) or m[1] in ours}
    return ours, mounts


def _diff(before: Any, after: Any) -> list[str]:
    problems = []
    loops_b, mounts_b = before
    loops_a, mounts_a = after
    for name in sorted(set(loops_a) - set(loops_b)):
        problems.append(f"loop device left behind: {name} -> {loops_a[name]}")
    for m in sorted(mounts_a - mounts_b):
        problems.append(f"mount left behind: {m}")
    return problems


@pytest.fixture(scope="session", autouse=True)
def _session_leak_check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    base = str(tmp_path_factory.getbasetemp())
    before = _state(base)
    yield
    problems = _diff(before, _state(base))
    assert not problems, "node tests leaked:\n" + "\n".join(problems)


def _cleanup(root: Path, loops: list[str]) -> None:
    """Unmount everything under ``root`` (newest first), detach loops over ours, then ours."""
    for _ in range(32):
        under = MountTable.read().under(str(root))
        if not under:
            break
        top = max(under, key=lambda e: e.mount_id)
        subprocess.run(["umount", "-l", top.mount_point], check=False, capture_output=True)
    ours = set(loops)
    for name, back in _loops().items():
        if back in ours or back.startswith(str(root)):
            if name not in ours:
                subprocess.run(["losetup", "-d", name], check=False, capture_output=True)
    for name in reversed(loops):
        subprocess.run(["losetup", "-d", name], check=False, capture_output=True)


@pytest.fixture(autouse=True)
def _leak_check(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    base = str(tmp_path_factory.getbasetemp())
    before = _state(base)
    yield
    problems = _diff(before, _state(base))
    if problems:
        _cleanup(tmp_path, [])
    assert not problems, "test leaked:\n" + "\n".join(problems)


@dataclass
class Loop:
    path: str  # /dev/loopN
    image: Path

    def grow(self, size_mib: int) -> None:
        os.truncate(self.image, size_mib * 1024 * 1024)
        subprocess.run(["losetup", "-c", self.path], check=True)

    def size(self) -> int:
        name = os.path.basename(self.path)
        return int(Path(f"/sys/block/{name}/size").read_text()) * 512


def by_res_dir(tmp_path: Path) -> Path:
    """The tests' stand-in for /dev/drbd/by-res (``Config.drbd_by_res_dir`` of ``make_node``)."""
    return tmp_path / "by-res"


def own(tmp_path: Path, device: str, vol: str) -> None:
    """Make ``device`` volume ``vol``'s device, the way DRBD's udev rule links it."""
    ref = VolumeRef.parse(vol)
    link = by_res_dir(tmp_path) / ref.rd / str(ref.vnr)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(device)


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Callable[..., Loop]]:
    """``loops(size_mib, vol="pvc-1")``: a loop device that is volume ``vol``'s device (the first
    loop made for a volume keeps the by-res link); ``vol=None`` for a device of no volume."""
    created: list[str] = []

    def make(size_mib: int = 64, vol: str | None = "pvc-1") -> Loop:
        image = tmp_path / f"disk{len(created)}.img"
        with open(image, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        path = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        created.append(path)
        if vol is not None:
            ref = VolumeRef.parse(vol)
            if not (by_res_dir(tmp_path) / ref.rd / str(ref.vnr)).is_symlink():
                own(tmp_path, path, vol)
        return Loop(path, image)

    yield make
    _cleanup(tmp_path, created)


@pytest.fixture
def fake_drbdsetup(tmp_path: Path) -> Callable[[Any, int], str]:
    """A drbdsetup stand-in: prints the JSON (or stderr text) it is given and exits with ``rc``."""
    script = tmp_path / "drbdsetup"

    def configure(payload: Any, rc: int = 0) -> str:
        data = tmp_path / "drbd-status.out"
        if isinstance(payload, str):
            data.write_text(payload)
            body = f'cat "{data}" >&2\nexit {rc}\n'
        else:
            data.write_text(json.dumps(payload))
            body = f'cat "{data}"\nexit {rc}\n'
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        return str(script)

    return configure


def make_config(**overrides: Any) -> Config:
    base: dict[str, Any] = dict(
        csi_endpoint=parse_endpoint("unix:///tmp/csi-linstor-node-test.sock"),
        node=NODE,
        drbdsetup=("/nonexistent/drbdsetup",),
        device_wait_seconds=2.0,
    )
    base.update(overrides)
    return Config(**base)


class Node:
    """Calls NodeServicer methods through the real rpc wrapper with a fake gRPC context."""

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer

    def __getattr__(self, method: str) -> Callable[..., Any]:
        handler = getattr(self.servicer, method)

        def call(request: Any, seconds: float = 60.0) -> Any:
            return handler(request, FakeContext(seconds))

        return call


@pytest.fixture
def make_node(tmp_path: Path) -> Callable[..., Node]:
    """A node servicer whose kubelet directory is the test's tmp_path and whose DRBD by-res
    links are ``by_res_dir(tmp_path)`` (see ``loops``)."""
    from csi_linstor.csi.node import NodeServicer

    def make(linstor: Any = None, topology: Any = None, **cfg: Any) -> Node:
        topo = topology or (lambda deadline: {"linbit.com/hostname": NODE})
        cfg.setdefault("kubelet_dir", tmp_path)
        cfg.setdefault("drbd_by_res_dir", by_res_dir(tmp_path))
        return Node(NodeServicer(Runtime(), make_config(**cfg), linstor, topo))

    return make


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    return make_node()


@pytest.fixture
def deadline() -> Deadline:
    return Deadline(60)


logging.getLogger("csi_linstor").setLevel(logging.DEBUG)

"""Block devices: waiting for a device node, its major:minor, its size, read-only loop devices."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition, InvalidArgument, NotFound
from csi_linstor.nodeops import runner

SYS_DEV_BLOCK = "/sys/dev/block"
LOOP_MAJOR = 7


@dataclass(frozen=True)
class VolumeRef:
    """A CSI volume id split into the LINSTOR resource definition and volume number."""

    rd: str
    vnr: int

    @classmethod
    def parse(cls, volume_id: str) -> VolumeRef:
        """``<rd>`` is volume 0; ``<rd>/<vnr>`` names another volume of the same resource."""
        rd, sep, vnr_text = volume_id.partition("/")
        if not rd or "/" in vnr_text:
            raise NotFound(
                f"volume id {volume_id!r} is not a LINSTOR volume id (<rd> or <rd>/<vnr>)"
            )
        if not sep:
            return cls(rd, 0)
        if not vnr_text.isdigit() or not 0 <= int(vnr_text) < 65536:
            raise NotFound(f"volume id {volume_id!r}: volume number must be in [0, 65536)")
        return cls(rd, int(vnr_text))


def block_rdev(path: str) -> tuple[int, int] | None:
    """major:minor of the block device node at ``path``; None when it is missing or not a device."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return (os.major(st.st_rdev), os.minor(st.st_rdev))


def sysfs_dir(dev: tuple[int, int]) -> str:
    return f"{SYS_DEV_BLOCK}/{dev[0]}:{dev[1]}"


def device_present(dev: tuple[int, int]) -> bool:
    return os.path.exists(sysfs_dir(dev))


def size_bytes(dev: tuple[int, int], deadline: Deadline, path: str | None = None) -> int:
    """The device's size in bytes, from sysfs (no open); ``blockdev --getsize64`` as fallback."""
    try:
        with open(f"{sysfs_dir(dev)}/size", encoding="ascii") as f:
            return int(f.read().strip()) * 512
    except (OSError, ValueError):
        if path is None:
            raise NotFound(f"block device {dev[0]}:{dev[1]} is gone") from None
    out = runner.run(["blockdev", "--getsize64", path], deadline, cap=10.0).stdout
    return int(out.strip())


def wait_for_device(
    path: str, deadline: Deadline, wait_seconds: float, *, what: str
) -> tuple[int, int]:
    """Wait (bounded by the deadline and ``wait_seconds``) until ``path`` is a block device."""
    if not path.startswith("/"):
        raise InvalidArgument(f"device path {path!r} for {what} is not absolute")
    limit = min(wait_seconds, deadline.remaining())
    end = time.monotonic() + limit
    delay = 0.05
    while True:
        dev = block_rdev(path)
        if dev is not None:
            return dev
        if os.path.exists(path):
            raise FailedPrecondition(f"{path} for {what} exists but is not a block device")
        if time.monotonic() >= end:
            raise FailedPrecondition(
                f"device {path} for {what} did not appear within {limit:.1f}s; is the resource "
                "deployed (and DRBD up) on this node?"
            )
        time.sleep(min(delay, max(0.0, end - time.monotonic())))
        delay = min(delay * 2, 0.5)


def loop_backing_file(dev: tuple[int, int]) -> str | None:
    """The backing file of loop device ``dev``, or None when it is not an attached loop device."""
    if dev[0] != LOOP_MAJOR:
        return None
    try:
        with open(f"{sysfs_dir(dev)}/loop/backing_file", encoding="utf-8") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def is_readonly(dev: tuple[int, int]) -> bool:
    try:
        with open(f"{sysfs_dir(dev)}/ro", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def is_readonly_loop_over_device(dev: tuple[int, int]) -> bool:
    """True for the read-only loop devices a read-only block publish creates over a block device.

    A plain loop device over an image file, or a writable loop, is never one of ours.
    """
    backing = loop_backing_file(dev)
    if backing is None or not is_readonly(dev):
        return False
    return block_rdev(backing.removesuffix(" (deleted)")) is not None


def readonly_loops_over(dev: tuple[int, int]) -> list[tuple[str, tuple[int, int]]]:
    """(path, major:minor) of every read-only loop device whose backing file is device ``dev``."""
    found = []
    try:
        names = sorted(os.listdir("/sys/block"))
    except OSError:
        return []
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/dev", encoding="ascii") as f:
                major, _, minor = f.read().strip().partition(":")
            loop = (int(major), int(minor))
        except (OSError, ValueError):
            continue
        if not is_readonly_loop_over_device(loop):
            continue
        backing = loop_backing_file(loop)
        if backing is None or block_rdev(backing.removesuffix(" (deleted)")) != dev:
            continue
        path = node_path(loop)
        if path is not None:
            found.append((path, loop))
    return found


def create_readonly_loop(device: str, deadline: Deadline) -> str:
    """Attach a new read-only loop device over ``device`` and return its path."""
    out = runner.run(["losetup", "--read-only", "--find", "--show", device], deadline, cap=30.0)
    path = out.stdout.strip()
    if not path.startswith("/dev/"):
        raise FailedPrecondition(
            f"losetup did not report the loop device it created: {out.stdout!r}"
        )
    return path


def detach_loop(path: str, deadline: Deadline) -> None:
    """Detach a loop device (lazily, if something still holds it open)."""
    runner.run(["losetup", "--detach", path], deadline, cap=30.0)


def node_path(dev: tuple[int, int]) -> str | None:
    """A usable /dev path for major:minor: /dev/<kernel name> or /dev/block/M:m."""
    try:
        with open(f"{sysfs_dir(dev)}/uevent", encoding="utf-8") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    candidate = "/dev/" + line.strip().split("=", 1)[1]
                    if block_rdev(candidate) == dev:
                        return candidate
    except OSError:
        pass
    candidate = f"/dev/block/{dev[0]}:{dev[1]}"
    return candidate if block_rdev(candidate) == dev else None

"""NodeGetVolumeStats and NodeExpandVolume: usage and condition of a published volume, and
growing its filesystem after the controller grew the device.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from csi_linstor.deadline import Deadline
from csi_linstor.drbd import Drbd
from csi_linstor.errors import CsiError, FailedPrecondition, NotFound, Unavailable
from csi_linstor.nodeops import devices, fs, runner
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountTable
from csi_linstor.nodeops.owner import VolumeDevice
from csi_linstor.nodeops.staging import drbd_problem, log

# ---------------------------------------------------------------------------------------------
# Stats and expand


@dataclass
class Usage:
    bytes_total: int
    bytes_used: int | None = None
    bytes_available: int | None = None
    inodes_total: int | None = None
    inodes_used: int | None = None
    inodes_available: int | None = None


@dataclass
class Stats:
    usage: Usage | None
    abnormal: bool
    message: str


def stats(ref: VolumeRef, path: str, deadline: Deadline, *, drbd: Drbd | None) -> Stats:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(
            f"{path} does not exist: volume {ref.rd} is not staged or published there"
        ) from None
    table = MountTable.read()
    usage: Usage | None = None
    problems: list[str] = []
    if stat.S_ISBLK(st.st_mode):
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if devices.device_present(dev):
            usage = Usage(bytes_total=devices.size_bytes(dev, deadline, path))
        else:
            problems.append(f"the block device {dev[0]}:{dev[1]} at {path} is gone")
    elif stat.S_ISDIR(st.st_mode):
        top = table.top(path)
        if top is None:
            problems.append(f"{path} is not mounted")
        else:
            v = os.statvfs(path)
            usage = Usage(
                bytes_total=v.f_blocks * v.f_frsize,
                bytes_used=max(0, (v.f_blocks - v.f_bfree) * v.f_frsize),
                bytes_available=v.f_bavail * v.f_frsize,
                inodes_total=v.f_files,
                inodes_used=max(0, v.f_files - v.f_ffree),
                inodes_available=v.f_favail,
            )
            if top.major != 0 and not devices.device_present(top.dev):
                problems.append(f"the device {top.source} mounted at {path} is gone")
            if "ro" in top.super_options and "ro" not in top.options:
                problems.append(f"the filesystem at {path} was remounted read-only (I/O errors?)")
    else:
        problems.append(f"{path} is not published (neither a mount point nor a block device)")
    try:
        problem = drbd_problem(drbd, ref, deadline)
    except CsiError as e:
        log.warning("DRBD state of %s unknown: %s", ref.rd, e)
        problem = None
    if problem:
        problems.append(problem)
    if problems:
        return Stats(usage, True, "; ".join(problems))
    return Stats(usage, False, "volume is mounted and its device is healthy")


@dataclass
class Expanded:
    capacity_bytes: int


def expand(
    ref: VolumeRef,
    path: str,
    required_bytes: int,
    deadline: Deadline,
    *,
    block: bool | None,
    resolve_device: Callable[[], str] | None = None,
    owner: VolumeDevice | None = None,
) -> Expanded:
    """Grow the filesystem at ``path`` (or measure the block device there) to the device's size.

    With ``owner``, what is at ``path`` must be this volume's (its device, a read-only loop over
    it, or a filesystem on it): growing another volume's filesystem is FAILED_PRECONDITION.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(
            f"{path} does not exist: volume {ref.rd} is not staged or published there"
        ) from None
    if stat.S_ISBLK(st.st_mode):
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if owner is not None:
            known = owner.known()
            if not owner.owns(dev, known):
                top = MountTable.read().top(path)
                if top is not None:
                    owner.check_mount(path, top, known)  # raises, naming what is there
                raise FailedPrecondition(
                    f"{path} is the block device {dev[0]}:{dev[1]}, not a device of volume "
                    f"{ref.rd}; refusing to touch it")
        if devices.is_readonly_loop_over_device(dev):
            # a read-only block publish: its loop device keeps the old size until told
            loop = devices.node_path(dev) or path
            runner.run(["losetup", "--set-capacity", loop], deadline, cap=30.0, what="losetup")
        size = devices.size_bytes(dev, deadline, path)
        _check_required(size, required_bytes, path)
        return Expanded(size)
    if block:
        # Block volume, but the path is not the device (e.g. a staging directory): measure the
        # volume's device itself. Nothing to grow on the node for block.
        device = resolve_device() if resolve_device is not None else None
        dev = devices.block_rdev(device) if device else None
        if dev is None:
            raise NotFound(
                f"{path} is not a published block device and the volume's device is unknown"
            )
        size = devices.size_bytes(dev, deadline, device)
        _check_required(size, required_bytes, path)
        return Expanded(size)
    top = MountTable.read().top(path)
    if top is None:
        raise NotFound(
            f"{path} is not a mount point: volume {ref.rd} is not staged or published there"
        )
    if owner is not None:
        owner.check_mount(path, top, owner.known())
    device = devices.node_path(top.dev)
    if device is None and devices.block_rdev(top.source) == top.dev:
        device = top.source
    if device is None:
        raise FailedPrecondition(
            f"cannot find the device node of {top.source} ({top.major}:{top.minor})"
        )
    size = devices.size_bytes(top.dev, deadline, device)
    _check_required(size, required_bytes, path)
    if top.fstype in fs.EXT_FAMILY:
        fs_bytes, bsize = fs.ext_size(device, deadline)
        if size - fs_bytes >= bsize:
            if top.readonly:
                raise FailedPrecondition(f"{path} is mounted read-only and cannot be grown")
            fs.grow_ext_online(device, deadline)
    elif top.fstype == "xfs":
        fs_bytes, bsize = fs.xfs_size(path, deadline)
        if size - fs_bytes >= bsize:
            if top.readonly:
                raise FailedPrecondition(f"{path} is mounted read-only and cannot be grown")
            fs.grow_xfs(path, deadline)
    else:
        raise FailedPrecondition(f"growing a {top.fstype} filesystem is not supported")
    return Expanded(size)


def _check_required(size: int, required_bytes: int, path: str) -> None:
    if required_bytes and size < required_bytes:
        raise Unavailable(
            f"the device at {path} is {size} bytes, less than the requested {required_bytes}: "
            "the volume has not grown on this node yet; retry"
        )

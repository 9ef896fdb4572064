"""Convergent node operations: stage, unstage, publish, unpublish, stats, expand.

Each operation reads the mount table (``/proc/self/mountinfo``) and the device (blkid, sysfs) first
and acts only on the difference, so any of them can be repeated after a crash at any line. They
know nothing about gRPC: the servicer (``csi_linstor.csi.node``) turns requests into these calls.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from csi_linstor.deadline import Deadline
from csi_linstor.drbd import Drbd
from csi_linstor.errors import (
    AlreadyExists,
    CsiError,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from csi_linstor.nodeops import devices, fs, longops, mounts, runner
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountEntry, MountTable
from csi_linstor.nodeops.owner import VolumeDevice

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# DRBD


# Written into a block volume's staging directory: the device it was staged with.
DEVICE_NOTE = "csi-linstor-device"
# Serialises taking and sweeping read-only loop devices across targets and volumes.
_RO_LOOPS = threading.Lock()


def drbd_problem(drbd: Drbd | None, ref: VolumeRef, deadline: Deadline) -> str | None:
    """Why DRBD says the volume cannot do I/O here; None when it can or DRBD state is unknown."""
    if drbd is None:
        return None
    state = drbd.query(ref.rd, deadline)
    if state is None:
        return None
    return state.problem(ref.vnr)


def check_drbd(drbd: Drbd | None, ref: VolumeRef, deadline: Deadline) -> None:
    problem = drbd_problem(drbd, ref, deadline)
    if problem is not None:
        raise FailedPrecondition(f"{problem}; refusing to use the device until DRBD recovers")


# ---------------------------------------------------------------------------------------------
# Stage


@dataclass(frozen=True)
class MountRequest:
    """How a filesystem volume is staged."""

    fstype: str  # ext4 or xfs
    fs_opts: str = ""  # extra mkfs arguments (StorageClass fsOpts)
    context_options: Sequence[str] = ()  # volume_context mount-options
    mount_flags: Sequence[str] = ()  # VolumeCapability.mount.mount_flags
    readonly: bool = False  # a reader-only access mode: mount ro, never format, never repair
    # Why an empty device must not be formatted ("" = it may be): it could not be confirmed that
    # the volume was created as a filesystem volume (a raw block volume's data has no signature).
    no_format_reason: str = ""
    # The reason is final (the volume came from raw block data), not "cannot tell now".
    never_format: bool = False


def mount_options(req: MountRequest, fstype: str) -> list[str]:
    """Options in LINBIT's order: context options, _netdev, mount_flags, nouuid (xfs), ro."""
    opts: list[str] = []
    for opt in [*req.context_options, "_netdev", *req.mount_flags]:
        opt = opt.strip()
        if opt and opt not in opts:
            opts.append(opt)
    if fstype == "xfs" and "nouuid" not in opts:
        opts.append("nouuid")  # restored snapshots and clones share their origin's UUID
    if req.readonly:
        opts = [o for o in opts if o != "rw"]
        for extra in ("ro", "norecovery"):  # no journal replay: a read-only device cannot take it
            if extra not in opts:
                opts.append(extra)
    return opts


def _same_family(found: str, wanted: str) -> bool:
    return found == wanted or (found in fs.EXT_FAMILY and wanted in fs.EXT_FAMILY)


def stage_mount(
    ref: VolumeRef,
    device: str,
    staging: str,
    req: MountRequest,
    deadline: Deadline,
    *,
    drbd: Drbd | None,
    device_wait_seconds: float,
    node: str,
) -> None:
    what = f"volume {ref.rd}/{ref.vnr} on node {node}"
    dev = devices.wait_for_device(device, deadline, device_wait_seconds, what=what)
    table = MountTable.read()
    top = table.top(staging)
    if top is not None:
        _check_staged(top, dev, staging, req)
        return
    check_drbd(drbd, ref, deadline)
    os.makedirs(staging, exist_ok=True)
    # A mkfs, fsck or resize2fs that an earlier attempt left running: wait for it and take its
    # result before looking at the device (it would look half-written).
    longops.join(device, deadline)

    found = fs.probe(device, deadline)
    if found.empty:
        if req.readonly:
            raise FailedPrecondition(
                f"{device} ({what}) has no filesystem and the volume is staged read-only; "
                "a read-only volume cannot be formatted"
            )
        if req.no_format_reason and req.never_format:
            raise FailedPrecondition(
                f"{device} ({what}) has no filesystem, and {req.no_format_reason}; put a "
                "filesystem on the source, or use volumeMode: Block"
            )
        if req.no_format_reason:
            raise Unavailable(
                f"{device} ({what}) has no filesystem, and {req.no_format_reason}: not formatting "
                "it, since a raw block volume's data has no signature to recognise; retry"
            )
        fs.mkfs(device, req.fstype, req.fs_opts, deadline)
        fstype = req.fstype
    elif found.is_filesystem and found.fstype in (*fs.SUPPORTED, *fs.EXT_FAMILY):
        fstype = found.fstype or req.fstype
        if not _same_family(fstype, req.fstype):
            raise FailedPrecondition(
                f"{device} ({what}) holds a {fstype} filesystem but {req.fstype} was requested; "
                "refusing to mount it as something else or to reformat it"
            )
    else:
        raise FailedPrecondition(
            f"{device} ({what}) is not empty: it has {found.describe()}; refusing to format or "
            "mount it (wipe it by hand if it really holds nothing of value)"
        )

    in_use = [e.mount_point for e in table.of_device(*dev)]
    if not req.readonly and not in_use:
        fs.fsck(device, fstype, deadline)
        if fstype in fs.EXT_FAMILY:
            _grow_ext_offline_if_needed(device, dev, fstype, deadline)
    elif in_use:
        log.info("%s is already mounted at %s: skipping fsck", device, ", ".join(in_use))

    mounts.mount(device, staging, fstype, mount_options(req, fstype), deadline)
    if fstype == "xfs" and not req.readonly:
        try:
            _grow_xfs_if_needed(staging, dev, deadline)
        except BaseException:
            mounts.unmount_all(staging, deadline)
            raise


def _check_staged(top: MountEntry, dev: tuple[int, int], staging: str, req: MountRequest) -> None:
    if top.dev != dev:
        raise AlreadyExists(
            f"{staging} already has {top.source} ({top.major}:{top.minor}) mounted, not the "
            f"device {dev[0]}:{dev[1]} of this volume"
        )
    if not _same_family(top.fstype, req.fstype):
        raise AlreadyExists(
            f"the volume is staged at {staging} as {top.fstype}, not as the requested {req.fstype}"
        )
    if top.readonly != req.readonly:
        mode = "read-only" if top.readonly else "read-write"
        raise AlreadyExists(
            f"the volume is staged at {staging} {mode}, incompatible with the requested access mode"
        )


def _grow_ext_offline_if_needed(
    device: str, dev: tuple[int, int], fstype: str, deadline: Deadline
) -> None:
    fs_bytes, bsize = fs.ext_size(device, deadline)
    dev_bytes = devices.size_bytes(dev, deadline, device)
    if dev_bytes - fs_bytes >= bsize:
        log.info(
            "growing the %s filesystem on %s offline: %d -> %d bytes",
            fstype,
            device,
            fs_bytes,
            dev_bytes,
        )
        fs.grow_ext_offline(device, fstype, deadline)


def _grow_xfs_if_needed(mount_point: str, dev: tuple[int, int], deadline: Deadline) -> bool:
    fs_bytes, bsize = fs.xfs_size(mount_point, deadline)
    dev_bytes = devices.size_bytes(dev, deadline)
    if dev_bytes - fs_bytes < bsize:
        return False
    log.info("growing the xfs filesystem at %s: %d -> %d bytes", mount_point, fs_bytes, dev_bytes)
    fs.grow_xfs(mount_point, deadline)
    return True


def stage_block(
    ref: VolumeRef,
    device: str,
    staging: str,
    deadline: Deadline,
    *,
    drbd: Drbd | None,
    device_wait_seconds: float,
    node: str,
) -> None:
    """Block volumes mount nothing at stage: the device must exist and DRBD must be usable.

    The device path is noted in ``<staging>/DEVICE_NOTE`` so that NodeUnstage can find read-only
    loop devices over it that an interrupted publish left behind.
    """
    what = f"volume {ref.rd}/{ref.vnr} on node {node}"
    devices.wait_for_device(device, deadline, device_wait_seconds, what=what)
    top = MountTable.read().top(staging)
    if top is not None:
        raise AlreadyExists(
            f"{staging} has {top.source} mounted: the volume is staged there as a filesystem, "
            "not as a block device"
        )
    check_drbd(drbd, ref, deadline)
    if os.path.isdir(staging):
        note = os.path.join(staging, DEVICE_NOTE)
        with open(note + ".tmp", "w", encoding="utf-8") as f:
            f.write(device + "\n")
        os.replace(note + ".tmp", note)


def unstage(staging: str, deadline: Deadline, owner: VolumeDevice) -> None:
    """Unmount the staging path (all stacked mounts); not staged or gone already is fine.

    Only this volume's staging mount is unmounted: a mount of any other device there is refused
    (FAILED_PRECONDITION) and left alone. Refuses while the staged filesystem is still mounted
    elsewhere (publish bind mounts): the CO must unpublish every target first, and unmounting the
    staging path under them would leave the device in use after the CO thinks it is free.
    """
    table = MountTable.read()
    stacked = table.at(staging)
    if not stacked:
        _unstage_block(staging, deadline, owner)
        return
    known = owner.known()
    for entry in reversed(stacked):
        owner.check_mount(staging, entry, known)
    staged = set(stacked)
    for entry in stacked:
        others = [e.mount_point for e in table.of_device(*entry.dev) if e not in staged]
        if others and entry.dev[0] != 0:
            raise FailedPrecondition(
                f"the volume staged at {staging} is still published at "
                f"{', '.join(sorted(others))}; "
                "unpublish those targets first"
            )
    mounts.unmount_all(staging, deadline,
                       check=lambda path, top: owner.check_mount(path, top, known))


def _unstage_block(staging: str, deadline: Deadline, owner: VolumeDevice) -> None:
    """Detach read-only loop devices over the staged block device that no target uses (left by
    a publish that died between ``losetup`` and the bind mount), then drop the device note.

    The note must name this volume's device; a note of another volume's is left alone."""
    note = os.path.join(staging, DEVICE_NOTE)
    try:
        with open(note, encoding="utf-8") as f:
            device = f.read().strip()
    except FileNotFoundError:
        return
    dev = devices.block_rdev(device) if device else None
    if dev is not None:
        known = owner.known()
        if not owner.owns(dev, known):
            mine = known.describe() if known is not None else owner.why_unknown
            raise FailedPrecondition(
                f"{staging} holds the block staging note of {device}, which is not the device "
                f"of {owner.name} ({mine}); refusing to unstage it. Check the path and the "
                "volume id of the request"
            )
        with _RO_LOOPS:
            for path, _loop in _unused_readonly_loops(MountTable.read(), dev):
                log.warning("detaching read-only loop device %s over %s that no target uses "
                            "(left by an interrupted publish)", path, device)
                devices.detach_loop(path, deadline)
    os.unlink(note)


# ---------------------------------------------------------------------------------------------
# Publish


def publish_mount(
    staging: str,
    target: str,
    readonly: bool,
    deadline: Deadline,
    *,
    expected_dev: tuple[int, int] | None,
    single_publish: bool,
    post_mount_xfs_opts: str = "",
) -> None:
    table = MountTable.read()
    staged = table.top(staging)
    if staged is None:
        raise FailedPrecondition(
            f"the volume is not staged at {staging}: NodeStageVolume must succeed before "
            "NodePublishVolume"
        )
    if expected_dev is not None and staged.dev != expected_dev:
        raise FailedPrecondition(
            f"{staging} holds {staged.source} ({staged.major}:{staged.minor}), not this volume's "
            f"device {expected_dev[0]}:{expected_dev[1]}; stage the volume again"
        )
    effective_ro = readonly or staged.readonly
    top = table.top(target)
    if top is not None:
        if top.dev != staged.dev or top.root != staged.root:
            raise AlreadyExists(f"{target} already has another filesystem mounted ({top.source})")
        if top.readonly != effective_ro:
            mode = "read-only" if top.readonly else "read-write"
            raise AlreadyExists(f"the volume is already published {mode} at {target}")
        return
    if single_publish:
        others = [
            e.mount_point
            for e in table.of_device(*staged.dev)
            if e.mount_point not in (staged.mount_point, os.path.realpath(target))
        ]
        if others:
            raise FailedPrecondition(
                f"the access mode allows one publish per node and the volume is already "
                f"published at {', '.join(sorted(others))}"
            )
    os.makedirs(target, mode=0o750, exist_ok=True)
    mounts.bind(staging, target, effective_ro, deadline)
    if post_mount_xfs_opts and staged.fstype == "xfs":
        if effective_ro:
            log.info("skipping post-mount xfs_io on read-only %s", target)
            return
        try:
            runner.run(
                ["xfs_io", "-c", post_mount_xfs_opts, target], deadline, cap=60.0, what="xfs_io"
            )
        except BaseException:
            mounts.unpublish_path(target, deadline)
            raise


def _block_publishes(table: MountTable, dev: tuple[int, int]) -> list[str]:
    """Targets where device ``dev`` (or a read-only loop over it) is bind-mounted."""
    found = []
    for e in table:
        if not e.fstype.endswith("devtmpfs") or e.root in ("", "/"):
            continue
        rdev = devices.block_rdev(e.mount_point)
        if rdev == dev:
            found.append(e.mount_point)
        elif rdev is not None and devices.is_readonly_loop_over_device(rdev):
            backing = devices.loop_backing_file(rdev)
            if backing and devices.block_rdev(backing) == dev:
                found.append(e.mount_point)
    return found


def publish_block(
    ref: VolumeRef,
    device: str,
    staging: str,
    target: str,
    readonly: bool,
    deadline: Deadline,
    *,
    single_publish: bool,
    device_wait_seconds: float,
    node: str,
) -> None:
    if not os.path.isdir(staging):
        raise FailedPrecondition(
            f"the staging path {staging} does not exist: NodeStageVolume must succeed before "
            "NodePublishVolume"
        )
    what = f"volume {ref.rd}/{ref.vnr} on node {node}"
    dev = devices.wait_for_device(device, deadline, min(device_wait_seconds, 2.0), what=what)
    table = MountTable.read()
    if table.top(target) is not None:
        at = devices.block_rdev(target)
        if readonly:
            backing = devices.loop_backing_file(at) if at else None
            ok = (
                at is not None
                and devices.is_readonly_loop_over_device(at)
                and backing is not None
                and devices.block_rdev(backing) == dev
            )
        else:
            ok = at == dev
        if not ok:
            raise AlreadyExists(
                f"{target} is already published with another device or another read-only mode"
            )
        return
    if single_publish:
        others = [p for p in _block_publishes(table, dev) if p != os.path.realpath(target)]
        if others:
            raise FailedPrecondition(
                f"the access mode allows one publish per node and the volume is already "
                f"published at {', '.join(sorted(others))}"
            )
    os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
    if not os.path.exists(target):
        fd = os.open(target, os.O_CREAT | os.O_WRONLY, 0o640)
        os.close(fd)
    elif os.path.isdir(target):
        raise FailedPrecondition(f"{target} is a directory; a block volume is published as a file")
    if not readonly:
        mounts.bind(device, target, False, deadline)
        return
    # A read-only bind of a device node does not stop writes to the device. A read-only loop device
    # over it does: the kernel refuses every write to it (EPERM), whoever opens it. One left by a
    # publish that died before its bind mount is reused rather than leaked (the lock keeps two
    # publishes of different targets from taking the same one).
    with _RO_LOOPS:
        unused = _unused_readonly_loops(MountTable.read(), dev)
        if unused:
            loop = unused[0][0]
            log.info("reusing read-only loop device %s over %s left by an interrupted publish",
                     loop, device)
        else:
            loop = devices.create_readonly_loop(device, deadline)
        try:
            mounts.bind(loop, target, False, deadline)
        except BaseException:
            try:
                devices.detach_loop(loop, deadline)
            except CsiError as e:
                log.warning("could not detach %s after a failed publish: %s", loop, e)
            raise


def _unused_readonly_loops(table: MountTable, dev: tuple[int, int]
                           ) -> list[tuple[str, tuple[int, int]]]:
    """Read-only loop devices over ``dev`` that are bind-mounted nowhere."""
    bound = {devices.block_rdev(e.mount_point) for e in table
             if e.fstype.endswith("devtmpfs") and e.root not in ("", "/")}
    return [(path, loop) for path, loop in devices.readonly_loops_over(dev) if loop not in bound]


def unpublish(target: str, deadline: Deadline, owner: VolumeDevice) -> None:
    """Undo a publish of this volume at ``target``; nothing mounted there (or no path) is fine.

    Only a mount of this volume (a bind of its staging mount, of its device, or of a read-only
    loop over it) is unmounted; anything else there is FAILED_PRECONDITION and left alone. The
    volume's device is looked up only when something is mounted.
    """
    if MountTable.read().top(target) is None:
        mounts.unpublish_path(target, deadline)
        return
    known = owner.known()
    mounts.unpublish_path(target, deadline,
                          check=lambda path, top: owner.check_mount(path, top, known))


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


__all__ = [
    "MountRequest",
    "Stats",
    "Usage",
    "expand",
    "publish_block",
    "publish_mount",
    "stage_block",
    "stage_mount",
    "stats",
    "unpublish",
    "unstage",
]

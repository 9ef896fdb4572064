"""NodeStageVolume / NodeUnstageVolume: DRBD health, mount (fsck, format only when provably
empty, grow) or bind a block device into the staging path, and undo it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from csi_linstor.deadline import Deadline
from csi_linstor.drbd import Drbd
from csi_linstor.errors import AlreadyExists, FailedPrecondition, Unavailable
from csi_linstor.nodeops import devices, fs, longops, mounts
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountEntry, MountTable
from csi_linstor.nodeops.owner import VolumeDevice
from csi_linstor.nodeops.readonly_loops import _RO_LOOPS, _unused_readonly_loops

log = logging.getLogger("csi_linstor.nodeops.volume")


# ---------------------------------------------------------------------------------------------
# DRBD


# Written into a block volume's staging directory: the device it was staged with.
DEVICE_NOTE = "csi-linstor-device"


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

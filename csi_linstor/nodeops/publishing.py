"""NodePublishVolume / NodeUnpublishVolume: bind the staged filesystem or block device into the
pod's target path (read-only via a read-only loop device for block), and remove it.
"""

from __future__ import annotations

import os

from csi_linstor.deadline import Deadline
from csi_linstor.errors import AlreadyExists, CsiError, FailedPrecondition
from csi_linstor.nodeops import devices, mounts, runner
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountTable
from csi_linstor.nodeops.owner import VolumeDevice
from csi_linstor.nodeops.readonly_loops import _RO_LOOPS, _unused_readonly_loops
from csi_linstor.nodeops.staging import log

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

"""Mount and unmount, convergently: look at the mount table first, act only on the difference.

Every mount(8)/umount(8) on a path runs holding that path's lock (``oplock.path_key``), passed to
the command: a driver killed while mount(8) runs leaves it running (its own session), and the next
driver calls ``settle(path)`` before it reads the mount table there, so it does not mount a
second time on top of what the orphaned command is about to mount (or unmount beside it).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable

from csi_linstor.deadline import Deadline
from csi_linstor.errors import Aborted, CommandError, FailedPrecondition, Internal
from csi_linstor.nodeops import devices, longops, oplock, runner
from csi_linstor.nodeops.mountinfo import MountEntry, MountTable

log = logging.getLogger(__name__)

# Stacked mounts on one path are unmounted one by one; more than this means something else mounts.
_MAX_STACKED = 16

# Called with (path, the mount on top of it) before each unmount; raises to refuse.
MountCheck = Callable[[str, MountEntry], None]


def settle(path: str, deadline: Deadline) -> None:
    """Wait (up to ``deadline``) for a mount(8) or umount(8) on ``path`` that an earlier driver
    process started and left running when it was killed; DEADLINE_EXCEEDED while it runs."""
    longops.wait_orphan(oplock.path_key(path), path, deadline)


def _run_on(path: str, argv: list[str], deadline: Deadline, cap: float, what: str) -> None:
    """``argv`` (a mount or umount of ``path``) holding ``path``'s lock while it runs."""
    key = oplock.path_key(path)
    try:
        held = oplock.acquire(key, what)
    except OSError as e:
        raise FailedPrecondition(
            f"cannot use the lock file of {path} in {oplock.runtime_dir()} ({e}); the node "
            "plugin needs a writable --runtime-dir (a hostPath such as /run/csi-linstor)"
        ) from None
    if held is None:
        raise Aborted(
            f"{oplock.describe(oplock.holder(key) or {}, path)} is still running; not starting "
            f"`{' '.join(argv)}` beside it: retry"
        )
    finished = False
    try:
        runner.run(argv, deadline, cap=cap, what=what, pass_fds=(held.fd,),
                   on_start=lambda pid: held.started(pid, " ".join(argv)))
        finished = True
    except CommandError as e:
        finished = e.returncode is not None  # it exited; a timed-out one may still hold the lock
        raise
    finally:
        held.release(remove=finished)


def mount(device: str, path: str, fstype: str, options: list[str], deadline: Deadline) -> None:
    """``mount -t fstype -o options device path``; ``-w`` for read-write so mount(8) never falls
    back to read-only silently (e.g. when a DRBD device cannot be promoted)."""
    argv = ["mount", "-t", fstype]
    if "ro" not in options:
        argv.append("-w")
    if options:
        argv += ["-o", ",".join(options)]
    argv += [device, path]
    _run_on(path, argv, deadline, 120.0, "mount")


def bind(source: str, path: str, readonly: bool, deadline: Deadline) -> None:
    """Bind ``source`` onto ``path``; read-only binds are made ro by a remount, then verified."""
    _run_on(path, ["mount", "--bind", source, path], deadline, 60.0, "mount --bind")
    if not readonly:
        return
    try:
        top = MountTable.read().top(path)
        if top is None or not top.readonly:
            _run_on(path, ["mount", "-o", "remount,bind,ro", path], deadline, 60.0,
                    "mount remount")
        top = MountTable.read().top(path)
        if top is None or not top.readonly:
            raise Internal(f"the bind mount at {path} did not become read-only")
    except BaseException:
        unmount_all(path, deadline)  # never leave a writable bind where a read-only one was asked
        raise


def unmount_all(path: str, deadline: Deadline, check: MountCheck | None = None) -> int:
    """Unmount every mount stacked on ``path`` (each one passing ``check`` first); returns how
    many were unmounted."""
    count = 0
    while True:
        top = MountTable.read().top(path)
        if top is None:
            return count
        if count >= _MAX_STACKED:
            raise Internal(
                f"{path} is still mounted after {count} unmounts; something re-mounts it"
            )
        if check is not None:
            check(path, top)
        _run_on(path, ["umount", path], deadline, 120.0, "umount")
        count += 1


def remove_path(path: str) -> None:
    """Remove the (unmounted) file or empty directory at ``path``; gone already is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno == errno.ENOTEMPTY:
            raise FailedPrecondition(
                f"{path} is not mounted but not empty; refusing to delete what is in it"
            ) from None
        raise Internal(f"cannot remove {path}: {e}") from None


def unpublish_path(path: str, deadline: Deadline, check: MountCheck | None = None) -> None:
    """Undo a publish at ``path``: drop read-only loop devices we created, unmount, remove.

    ``check`` sees every mount before it is touched and raises to refuse (nothing is undone).
    """
    count = 0
    while (top := MountTable.read().top(path)) is not None:
        if count >= _MAX_STACKED:
            raise Internal(
                f"{path} is still mounted after {count} unmounts; something re-mounts it"
            )
        if check is not None:
            check(path, top)
        dev = devices.block_rdev(path)
        if dev is not None and devices.is_readonly_loop_over_device(dev):
            loop = devices.node_path(dev)
            if loop is not None:
                log.info("detaching read-only loop device %s published at %s", loop, path)
                devices.detach_loop(loop, deadline)
        _run_on(path, ["umount", path], deadline, 120.0, "umount")
        count += 1
    remove_path(path)

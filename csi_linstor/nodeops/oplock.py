"""Per-device lock files that outlive the driver process: who is writing a device right now.

A long operation (mkfs, fsck, offline resize2fs; see ``longops``) runs in its own session, so a
driver killed with SIGKILL leaves it running. The driver that starts next must not probe the
half-written device, format it a second time or mount it. So the operation takes an exclusive
``flock`` on ``<runtime dir>/longop-<major>-<minor>.lock`` before it starts, and its process
inherits the locked file descriptor: the lock is held for as long as the tool (or any process it
forked) runs, whether or not the driver that started it is still alive, and the kernel drops it
when the last of them exits (also after a crash of the whole node: /run is a tmpfs).

The lock file holds a JSON note (command, driver pid, tool pid, start time) for the messages
that tell a retry what it waits for. Lock files stay behind (one per device number, a few
bytes): removing a lock file is racy with another process opening it, and a leftover file
without a holder means nothing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_DIR = "/run/csi-linstor"
ENV_RUNTIME_DIR = "CSI_LINSTOR_RUNTIME_DIR"

_dir = Path(os.environ.get(ENV_RUNTIME_DIR) or DEFAULT_RUNTIME_DIR)


def set_runtime_dir(path: str | os.PathLike[str]) -> None:
    """Where the lock files live (``--runtime-dir``); a hostPath in the node pod, so a lock
    taken before a container restart is seen after it."""
    global _dir
    _dir = Path(path)


def runtime_dir() -> Path:
    return _dir


def path_key(path: str) -> str:
    """The key of a mount point: (un)mounts there hold its lock while mount(8) runs."""
    return "path:" + os.path.normpath(path)


def lock_path(key: str) -> Path:
    """The lock file of a key: a device (``major:minor``), a mount point (``path_key``), or a
    device path for what is not a block device."""
    m = re.fullmatch(r"(\d+):(\d+)", key)
    if m:
        return _dir / f"longop-{m.group(1)}-{m.group(2)}.lock"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return _dir / f"{'mount' if key.startswith('path:') else 'longop'}-{digest}.lock"


def held_files() -> list[Path]:
    """Lock files in the runtime directory that some process holds (for tests and checks)."""
    out = []
    for f in sorted(_dir.glob("*.lock")):
        try:
            fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            out.append(f)
        finally:
            os.close(fd)
    return out


def output_prefix(key: str) -> str:
    """Where the tool's stdout and stderr go (``<prefix>.out``, ``.err``): files, not pipes, so
    the tool is not killed by SIGPIPE when the driver that reads them is."""
    return str(lock_path(key))[: -len(".lock")]


def _open(key: str) -> int:
    _dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(lock_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@dataclass
class Held:
    """An exclusive lock this process took; pass ``fd`` to the tool so it holds the lock too."""

    key: str
    fd: int
    note: dict[str, Any]

    def _write(self) -> None:
        data = json.dumps(self.note).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def started(self, pid: int, command: str) -> None:
        """Record the running tool's pid and command line in the lock file."""
        self.note.update(pid=pid, command=command)
        try:
            self._write()
        except OSError as e:  # the note is for messages only; the lock itself is held
            log.warning("cannot note pid %d in %s: %s", pid, lock_path(self.key), e)

    def release(self, *, remove: bool = False) -> None:
        """Close this process's descriptor; a tool still running keeps the lock until it exits.

        ``remove``: the tool has exited, so only this process holds the lock: delete the file
        first (mount points are many and short-lived; their lock files would pile up). Whoever
        looks for the lock then finds no file, which means free.
        """
        if remove and self.fd >= 0:
            for name in (str(lock_path(self.key)), output_prefix(self.key) + ".out",
                         output_prefix(self.key) + ".err"):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def acquire(key: str, operation: str) -> Held | None:
    """Take the device's lock without waiting; None when another holder has it."""
    fd = _open(key)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    held = Held(key, fd, {"operation": operation, "driver_pid": os.getpid(), "pid": None,
                          "command": "", "started": time.time()})
    try:
        held._write()
    except OSError as e:
        log.warning("cannot write %s: %s", lock_path(key), e)
    return held


def holder(key: str) -> dict[str, Any] | None:
    """What holds the device's lock (its note; ``{}`` when unreadable), or None when it is free.

    Checked without waiting: a shared lock is tried and dropped at once.
    """
    path = lock_path(key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            try:
                note = json.loads(os.pread(fd, 65536, 0) or b"{}")
            except (OSError, ValueError):
                note = {}
            return note if isinstance(note, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(note: dict[str, Any], device: str) -> str:
    """``"`mkfs.ext4 /dev/drbd1000` (pid 4242, started 12s ago by driver process 17)"``."""
    what = note.get("command") or note.get("operation") or "a long operation"
    bits = []
    if note.get("pid"):
        bits.append(f"pid {note['pid']}")
    if isinstance(note.get("started"), (int, float)):
        bits.append(f"started {max(0.0, time.time() - note['started']):.0f}s ago")
    if note.get("driver_pid"):
        bits.append(f"by driver process {note['driver_pid']}")
    return f"`{what}` on {device}" + (f" ({', '.join(bits)})" if bits else "")

"""Real block devices for simulated volumes: sparse files on loop devices.

Each volume definition owns one :class:`Device`: a sparse backing file in ``state_dir``, attached
lazily to a loop device, exposed as a block device node ``<device_dir>/drbd<minor>``. Every replica
of the volume shares that device, the way DRBD replicas share data.

Loop devices are attached with the LOOP_CONFIGURE ioctl and LO_FLAGS_AUTOCLEAR while the manager
keeps the loop fd open, so even a SIGKILLed simulator leaves no attached loop device behind (the
kernel detaches on last close). ``stop()`` detaches explicitly and removes nodes and files.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import struct
import threading
from pathlib import Path

log = logging.getLogger("csi_linstor.sim")

LOOP_CLR_FD = 0x4C01
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
BLKFLSBUF = 0x1261

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


def _loop_config(backing_fd: int, name: str) -> bytes:
    # struct loop_info64: 5 x u64, 4 x u32, file_name[64], crypt_name[64], key[32], init[2] u64
    info = struct.pack(
        "=QQQQQIIII64s64s32s16s",
        0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR,
        name.encode()[-63:], b"", b"", b"",
    )
    # struct loop_config: u32 fd, u32 block_size, loop_info64, u64 reserved[8]
    return struct.pack("=II", backing_fd, 0) + info + b"\0" * 64


def sparse_copy(src: Path | str, dst: Path | str, size: int | None = None) -> None:
    """Copy ``src`` to ``dst`` preserving holes; ``dst`` is truncated to ``size`` (default: src size)."""
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        src_size = os.fstat(sfd).st_size
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(dfd, 0)
            os.ftruncate(dfd, src_size if size is None else size)
            limit = src_size if size is None else min(src_size, size)
            pos = 0
            while pos < limit:
                try:
                    start = os.lseek(sfd, pos, SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:
                        break
                    raise
                if start >= limit:
                    break
                end = min(os.lseek(sfd, start, SEEK_HOLE), limit)
                off = start
                while off < end:
                    n = os.copy_file_range(sfd, dfd, end - off, off, off)
                    if n <= 0:
                        break
                    off += n
                pos = end
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


class Device:
    """One volume's data: backing file + (lazily) loop device + device node."""

    def __init__(self, mgr: DeviceManager, minor: int, path: Path, size_bytes: int) -> None:
        self.mgr = mgr
        self.minor = minor
        self.file = path
        self.size_bytes = size_bytes
        self.node_path = mgr.device_dir / f"drbd{minor}"
        self.loop_fd: int | None = None
        self.loop_nr: int | None = None
        self.rdev: int | None = None  # the loop device's device number, once attached
        self.destroyed = False
        self.lock = threading.Lock()
        # new, empty storage: the satellite formats it when FileSystem/Type asks (not a clone's
        # or a restore's copy, which already holds its source's data)
        self.check_fs = False

    @property
    def loop_path(self) -> str | None:
        return None if self.loop_nr is None else f"/dev/loop{self.loop_nr}"

    def ensure(self) -> None:
        """Attach the loop device and create the device node if not done yet."""
        if self.loop_fd is not None or self.destroyed or not self.mgr.enabled:
            return
        with self.lock:
            if self.loop_fd is not None or self.destroyed:
                return
            fd, nr = self.mgr._attach(self.file)
            try:
                major, minor = self.mgr._loop_devno(nr)
                try:
                    os.unlink(self.node_path)
                except FileNotFoundError:
                    pass
                os.mknod(self.node_path, stat.S_IFBLK | 0o600, os.makedev(major, minor))
            except BaseException:
                self.mgr._detach(fd)
                raise
            self.loop_fd, self.loop_nr = fd, nr
            self.rdev = os.makedev(major, minor)
            log.debug("attached %s as loop%d -> %s", self.file, nr, self.node_path)

    def flush(self) -> None:
        """Push dirty block-device pages into the backing file (before copying it)."""
        with self.lock:
            if self.loop_fd is not None:
                try:
                    os.fsync(self.loop_fd)
                except OSError as e:  # pragma: no cover - best effort
                    log.warning("fsync of loop%s failed: %s", self.loop_nr, e)

    def copy_to(self, dst: Path, size: int | None = None) -> None:
        self.flush()
        sparse_copy(self.file, dst, size)

    def resize(self, size_bytes: int) -> None:
        with self.lock:
            if self.destroyed:
                return
            if size_bytes != self.size_bytes:  # shrinking: STORAGE-only volumes only
                os.truncate(self.file, size_bytes)
                self.size_bytes = size_bytes
                if self.loop_fd is not None:
                    fcntl.ioctl(self.loop_fd, LOOP_SET_CAPACITY, 0)

    def destroy(self) -> None:
        with self.lock:
            if self.destroyed:
                return
            self.destroyed = True
            if self.loop_fd is not None:
                self.mgr._detach(self.loop_fd)
                self.loop_fd = None
                try:
                    os.unlink(self.node_path)
                except FileNotFoundError:
                    pass
            try:
                os.unlink(self.file)
            except FileNotFoundError:
                pass
        self.mgr._forget(self)


class DeviceManager:
    def __init__(self, state_dir: Path, device_dir: Path, enabled: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.device_dir = Path(device_dir)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._devices: set[Device] = set()
        self._files: set[Path] = set()
        self._ctl_fd: int | None = None
        self._private_loop_dir = self.state_dir / "loopdev"
        self._counter = 0

    # -- allocation ---------------------------------------------------------------------------

    def node_path_taken(self, minor: int) -> bool:
        """A device node for this minor exists in device_dir that is not ours."""
        return os.path.lexists(self.device_dir / f"drbd{minor}")

    def create(self, minor: int, size_bytes: int, seed: Device | Path | None = None,
               tag: str = "vol") -> Device:
        with self._lock:
            self._counter += 1
            n = self._counter
        path = self.state_dir / f"{tag}-{minor}-{n}.img"
        if seed is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size_bytes)
            finally:
                os.close(fd)
        elif isinstance(seed, Device):
            seed.copy_to(path, size_bytes)
        else:
            sparse_copy(seed, path, size_bytes)
        dev = Device(self, minor, path, size_bytes)
        with self._lock:
            self._devices.add(dev)
        return dev

    def snapshot_file(self, dev: Device, tag: str) -> Path:
        with self._lock:
            self._counter += 1
            n = self._counter
        path = self.state_dir / f"snap-{tag}-{n}.img"
        with self._lock:
            self._files.add(path)
        dev.copy_to(path)
        return path

    def register_file(self, path: Path) -> None:
        """Track a snapshot file made elsewhere (a downloaded backup) like snapshot_file's."""
        with self._lock:
            self._files.add(path)

    def remove_file(self, path: Path) -> None:
        with self._lock:
            self._files.discard(path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _forget(self, dev: Device) -> None:
        with self._lock:
            self._devices.discard(dev)

    # -- loop devices -------------------------------------------------------------------------

    def _ctl(self) -> int:
        if self._ctl_fd is None:
            self._ctl_fd = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        return self._ctl_fd

    def _open_loop(self, nr: int) -> int:
        path = f"/dev/loop{nr}"
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # /dev without devtmpfs: make a private node.
            self._private_loop_dir.mkdir(exist_ok=True)
            p = self._private_loop_dir / f"loop{nr}"
            if not p.exists():
                major, minor = self._loop_devno(nr)
                os.mknod(p, stat.S_IFBLK | 0o600, os.makedev(major, minor))
            return os.open(p, os.O_RDWR | os.O_CLOEXEC)

    @staticmethod
    def _loop_devno(nr: int) -> tuple[int, int]:
        try:
            text = Path(f"/sys/block/loop{nr}/dev").read_text().strip()
            a, b = text.split(":")
            return int(a), int(b)
        except OSError:
            return 7, nr

    def _attach(self, file: Path) -> tuple[int, int]:
        bfd = os.open(file, os.O_RDWR | os.O_CLOEXEC)
        try:
            cfg = _loop_config(bfd, str(file))
            for _ in range(100):
                with self._lock:
                    nr = fcntl.ioctl(self._ctl(), LOOP_CTL_GET_FREE)
                fd = self._open_loop(nr)
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, cfg)
                except OSError as e:
                    os.close(fd)
                    if e.errno == errno.EBUSY:
                        continue  # raced with another losetup user
                    raise
                return fd, nr
            raise OSError(errno.EBUSY, "no free loop device")
        finally:
            os.close(bfd)

    @staticmethod
    def _detach(fd: int) -> None:
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD)
        except OSError as e:
            if e.errno not in (errno.ENXIO,):
                log.debug("LOOP_CLR_FD: %s", e)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Destroy every device (detach loops, remove nodes and files)."""
        with self._lock:
            devs = list(self._devices)
        for d in devs:
            try:
                d.destroy()
            except Exception:  # pragma: no cover - best effort during cleanup
                log.exception("cleanup of %s failed", d.file)
        with self._lock:
            files = list(self._files)
        for f in files:
            self.remove_file(f)
        if self._ctl_fd is not None:
            os.close(self._ctl_fd)
            self._ctl_fd = None


def leftover_loop_devices(state_dir: Path) -> list[str]:
    """Loop devices whose backing file lives in ``state_dir`` (for leak checks)."""
    out = []
    base = Path("/sys/block")
    prefix = str(Path(state_dir).resolve())
    for d in base.glob("loop*"):
        try:
            bf = (d / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if bf.startswith(prefix + os.sep) or re.sub(r" \(deleted\)$", "", bf).startswith(prefix):
            out.append(f"/dev/{d.name}")
    return out

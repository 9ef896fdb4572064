"""Filesystems on a device: detect, format (only what is empty), check, measure, grow.

mkfs, fsck and offline resize2fs write all over the device: they run through ``longops`` and are
never killed at the RPC deadline (a retry joins them).
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CommandError, FailedPrecondition, InvalidArgument
from csi_linstor.nodeops import longops, runner

log = logging.getLogger(__name__)

SUPPORTED = ("ext4", "xfs")
EXT_FAMILY = ("ext2", "ext3", "ext4")

# blkid exit status 2: no signature found; 8: ambivalent (several signatures).
_BLKID_NOTHING = 2
_BLKID_AMBIVALENT = 8

# fsck: 1 = errors corrected, 2 = corrected, reboot advised (only meaningful for the root fs).
_FSCK_OK = (0, 1, 2)
_FSCK_UNCORRECTED = 4

CAPABILITY_HINT = (
    "online ext4 growth needs CAP_SYS_RESOURCE in the node plugin's container (add it to the "
    "container's securityContext capabilities); without it the filesystem can be grown offline: "
    "stop the workload so the volume is unstaged, and the next stage grows it before mounting"
)


@dataclass(frozen=True)
class Probe:
    """What a low-level probe found on a device."""

    fstype: str | None  # TYPE= of a filesystem (or other superblock, e.g. LVM2_member)
    usage: str | None  # USAGE=: filesystem, raid, crypto, other
    ptable: str | None  # PTTYPE=: a partition table
    raw: dict[str, str]

    @property
    def empty(self) -> bool:
        return self.fstype is None and self.ptable is None and not self.raw

    @property
    def is_filesystem(self) -> bool:
        return self.ptable is None and self.usage == "filesystem" and self.fstype is not None

    def describe(self) -> str:
        parts = []
        if self.ptable:
            parts.append(f"a {self.ptable} partition table")
        if self.fstype:
            parts.append(f"a {self.fstype} signature ({self.usage or 'unknown usage'})")
        if not parts:
            parts.append("signatures " + ", ".join(f"{k}={v}" for k, v in self.raw.items()))
        return " and ".join(parts)


def normalize_fstype(fstype: str) -> str:
    fstype = (fstype or "ext4").strip().lower()
    if fstype not in SUPPORTED:
        raise InvalidArgument(
            f"fs type {fstype!r} is not supported; use one of {', '.join(SUPPORTED)}"
        )
    return fstype


def probe(device: str, deadline: Deadline) -> Probe:
    """Look for any signature on ``device``: filesystems, partition tables, LVM, RAID, LUKS, swap.

    ``blkid -p`` (low-level, no cache) first; when it finds nothing, ``wipefs -n`` must agree before
    the device counts as empty.
    """
    res = runner.run(
        ["blkid", "-p", "-o", "export", device],
        deadline,
        cap=60.0,
        ok=(0, _BLKID_NOTHING, _BLKID_AMBIVALENT),
    )
    if res.returncode == _BLKID_AMBIVALENT:
        return Probe(None, None, None, {"ambivalent": "blkid found several conflicting signatures"})
    raw: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key != "DEVNAME":
            raw[key] = value
    if res.returncode == 0 and raw:
        return Probe(raw.get("TYPE"), raw.get("USAGE"), raw.get("PTTYPE"), raw)
    wipe = runner.run(
        ["wipefs", "--no-act", "--noheadings", "--output", "TYPE", device], deadline, cap=60.0
    )
    types = [t.strip() for t in wipe.stdout.splitlines() if t.strip()]
    if types:
        return Probe(types[0], None, None, {"wipefs": ",".join(types)})
    return Probe(None, None, None, {})


def mkfs(device: str, fstype: str, fs_opts: str, deadline: Deadline) -> None:
    """Create a filesystem. Only call on a device ``probe`` found empty.

    No force flag: mkfs.ext4 (stdin is /dev/null, so it answers "no") and mkfs.xfs refuse on their
    own if a signature appeared in between.
    """
    try:
        extra = shlex.split(fs_opts or "")
    except ValueError as e:
        raise InvalidArgument(f"fs options {fs_opts!r} cannot be parsed: {e}") from None
    argv = [f"mkfs.{fstype}", *extra, device]
    log.info("formatting %s as %s: %s", device, fstype, " ".join(argv))
    longops.run(argv, device, "mkfs", deadline)


def fsck(device: str, fstype: str, deadline: Deadline) -> None:
    """Repair what ``fsck -p`` repairs without asking; nothing for xfs (xfs_repair is no fsck)."""
    if fstype not in EXT_FAMILY:
        return
    try:
        res = longops.run(["fsck", "-T", "-t", fstype, "-p", device], device, "fsck", deadline,
                          ok=_FSCK_OK)
    except CommandError as e:
        if e.returncode is not None and e.returncode & _FSCK_UNCORRECTED:
            raise FailedPrecondition(
                f"the {fstype} filesystem on {device} has errors `fsck -p` cannot fix without a "
                f"person; run `fsck {device}` by hand: {e.stderr.strip() or e}"
            ) from None
        raise
    if res.returncode:
        log.warning("fsck repaired %s (exit %d): %s", device, res.returncode, res.stdout.strip())


def _fsck_uncorrected(e: CommandError, device: str, fstype: str) -> FailedPrecondition | None:
    if e.returncode is not None and e.returncode & _FSCK_UNCORRECTED:
        return FailedPrecondition(
            f"the {fstype} filesystem on {device} needs a manual fsck before it can be grown: "
            f"{e.stderr.strip() or e}"
        )
    return None


_DUMPE2FS = re.compile(r"^(Block count|Block size):\s+(\d+)", re.M)
_XFS_DATA = re.compile(r"^data\s+=\s+bsize=(\d+)\s+blocks=(\d+)", re.M)


def ext_size(device: str, deadline: Deadline) -> tuple[int, int]:
    """(size in bytes, block size) of the ext2/3/4 filesystem on ``device`` (mounted or not)."""
    out = runner.run(["dumpe2fs", "-h", device], deadline, cap=60.0).stdout
    values = dict(_DUMPE2FS.findall(out))
    if "Block count" not in values or "Block size" not in values:
        raise FailedPrecondition(f"cannot read the ext filesystem size of {device} from dumpe2fs")
    bsize = int(values["Block size"])
    return int(values["Block count"]) * bsize, bsize


def xfs_size(mount_point: str, deadline: Deadline) -> tuple[int, int]:
    """(data size in bytes, block size) of the mounted xfs filesystem at ``mount_point``."""
    out = runner.run(["xfs_info", mount_point], deadline, cap=60.0).stdout
    m = _XFS_DATA.search(out)
    if m is None:
        raise FailedPrecondition(f"cannot read the xfs size at {mount_point} from xfs_info")
    bsize, blocks = int(m.group(1)), int(m.group(2))
    return bsize * blocks, bsize


def grow_ext_offline(device: str, fstype: str, deadline: Deadline) -> None:
    """``e2fsck -f -p`` (resize2fs wants a filesystem checked since its last mount), then
    ``resize2fs``: one long operation, so a retry joins it instead of checking all over again."""
    try:
        longops.run_steps(
            [(["e2fsck", "-f", "-p", device], _FSCK_OK), (["resize2fs", device], (0,))],
            device, "grow offline", deadline,
        )
    except CommandError as e:
        if e.argv[:1] == ["e2fsck"]:
            refused = _fsck_uncorrected(e, device, fstype)
            if refused is not None:
                raise refused from None
        raise


def grow_ext_online(device: str, deadline: Deadline) -> None:
    try:
        runner.run(["resize2fs", device], deadline, cap=900.0, what="resize2fs")
    except CommandError as e:
        text = e.stderr.lower()
        if "permission denied to resize" in text or "operation not permitted" in text:
            raise FailedPrecondition(
                f"resize2fs {device} was refused by the kernel (EPERM): {CAPABILITY_HINT}"
            ) from None
        raise


def grow_xfs(mount_point: str, deadline: Deadline) -> None:
    runner.run(["xfs_growfs", "-d", mount_point], deadline, cap=900.0, what="xfs_growfs")

"""Which node holds a simulated DRBD device open for writing, from what the kernel shows.

DRBD 9 auto-promote: a resource becomes Primary on the node that opens its device read-write
(a rw mount, or an open(2) with O_WRONLY/O_RDWR) and Secondary again on the last close; LINSTOR
reports that as the resource's ``state.in_use`` and drbdsetup as ``role: Primary`` / ``open``.

Every simulated node uses the same block device (one loop device per volume, see devices.py;
a second loop device over the same file would not be coherent). So the device alone does not
say which node opened it; the *path* does. A node is given path prefixes (its kubelet root in
the e2e cluster: every mount and every open a node plugin makes for a pod lies under it), and:

- a mount of the device (mountinfo ``major:minor``) that is read-write, with its mount point
  under a node's prefix, makes that node the opener (filesystem volumes);
- an open file descriptor of any process whose path (``/proc/PID/fd/N``) lies under a node's
  prefix, of the device, opened for writing, does too (block volumes: the pod opens the device
  node kubelet bind-mounted under the node's root; the bind mount alone opens nothing).

Opens through the shared device path itself (mkfs, fsck, resize2fs by a node plugin) are not
attributed to a node: they are short and happen while the node stages the volume anyway.
"""

from __future__ import annotations

import os
import stat

from csi_linstor.nodeops.mountinfo import MountTable

O_ACCMODE = 0o3


def _owner(path: str, roots: dict[str, list[str]]) -> str | None:
    best: tuple[int, str] | None = None
    for node, prefixes in roots.items():
        for pre in prefixes:
            pre = pre.rstrip("/")
            if path == pre or path.startswith(pre + "/"):
                if best is None or len(pre) > best[0]:
                    best = (len(pre), node)
    return best[1] if best else None


def _writable_fd(pid: str, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & O_ACCMODE != os.O_RDONLY
    except (OSError, ValueError):
        return False
    return False


def openers(roots: dict[str, list[str]], rdevs: set[int]) -> dict[int, set[str]]:
    """rdev -> the nodes holding that device open for writing (of the devices in rdevs)."""
    out: dict[int, set[str]] = {}
    if not roots or not rdevs:
        return out
    for e in MountTable.read().entries:
        dev = os.makedev(e.major, e.minor)
        if dev not in rdevs or e.readonly:
            continue
        owner = _owner(e.mount_point, roots)
        if owner is not None:
            out.setdefault(dev, set()).add(owner)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            owner = _owner(link, roots) if link.startswith("/") else None
            if owner is None:
                continue
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode) and st.st_rdev in rdevs \
                    and _writable_fd(pid, fd):
                out.setdefault(st.st_rdev, set()).add(owner)
    return out

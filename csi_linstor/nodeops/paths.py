"""Confinement of node RPC paths to the kubelet directory.

The node plugin is privileged and shares the host's mount namespace (Bidirectional propagation):
a staging or target path outside kubelet's directory (``/``, ``/proc``, a symlink out, ``..``)
names a host filesystem, and no CO ever asks for one. Paths are resolved (symlinks followed, ``..``
collapsed) before the check, so what is checked is what would be acted on.
"""

from __future__ import annotations

import os

from csi_linstor.errors import CsiError, InvalidArgument

NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4096  # bytes in a path, its terminating NUL included


def resolve_inside(
    path: str, root: str, field: str, error: type[CsiError] = InvalidArgument
) -> str:
    """``path`` resolved; ``error`` (INVALID_ARGUMENT) unless it lies strictly inside ``root``.

    NodeGetVolumeStats and NodeExpandVolume pass NOT_FOUND: the spec (and csi-sanity) want
    "the volume does not exist at volume_path" for a path where no volume can be.
    """
    if "\x00" in path:
        raise InvalidArgument(f"{field} {path!r} contains a NUL byte: no path can")
    longest = max((len(part.encode()) for part in path.split("/")), default=0)
    if longest > NAME_MAX or len(path.encode()) >= PATH_MAX:
        raise error(f"{field} {path[:80]!r}... is longer than a path can be "
                    f"({len(path.encode())} bytes, a component of {longest}; Linux allows "
                    f"{PATH_MAX - 1} and {NAME_MAX})")
    if not path.startswith("/"):
        raise error(f"{field} {path!r} is not an absolute path inside the kubelet directory")
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == base or not real.startswith(base.rstrip("/") + "/"):
        shown = path if real == path else f"{path} (resolves to {real})"
        raise error(
            f"{field} {shown} is not inside the kubelet directory {base}; the node plugin acts "
            "only on kubelet's staging and target paths (set --kubelet-dir if kubelet's root "
            "directory is elsewhere)"
        )
    return real

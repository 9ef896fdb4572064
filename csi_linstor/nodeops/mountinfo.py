"""The mount table, read from ``/proc/self/mountinfo``: one snapshot per use, never cached.

The kernel escapes space, tab, newline and backslash in paths as octal (``\\040``); they are
unescaped here. Several mounts can be stacked on one mount point; the last line for a path is the
one on top (the one a path lookup sees).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def canonical(path: str) -> str:
    """The form of ``path`` that mountinfo uses: absolute, symlinks resolved where they exist."""
    return os.path.realpath(os.path.abspath(path))


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str  # path inside the mounted filesystem: "/" for a plain mount, "/loop3" for a dev bind
    mount_point: str
    options: tuple[str, ...]  # per-mount options (rw/ro, nosuid, ...)
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    @property
    def dev(self) -> tuple[int, int]:
        return (self.major, self.minor)


def parse_line(line: str) -> MountEntry | None:
    fields = line.split()
    try:
        sep = fields.index("-", 6)
    except ValueError:
        return None
    if len(fields) < sep + 3 or sep < 6:
        return None
    major, _, minor = fields[2].partition(":")
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major=int(major),
        minor=int(minor),
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        fstype=fields[sep + 1],
        source=unescape(fields[sep + 2]),
        super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
    )


class MountTable:
    """A snapshot of the mount table; take a new one after changing mounts."""

    def __init__(self, entries: list[MountEntry]) -> None:
        self.entries = entries

    @classmethod
    def read(cls, path: str = MOUNTINFO) -> MountTable:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> MountTable:
        entries = [e for e in (parse_line(line) for line in text.splitlines()) if e is not None]
        return cls(entries)

    def __iter__(self) -> Iterator[MountEntry]:
        return iter(self.entries)

    def at(self, path: str) -> list[MountEntry]:
        """Every mount on ``path``, bottom first."""
        target = canonical(path)
        return [e for e in self.entries if e.mount_point == target]

    def top(self, path: str) -> MountEntry | None:
        """The mount a lookup of ``path`` sees, or None when ``path`` is not a mount point."""
        found = self.at(path)
        return found[-1] if found else None

    def of_device(self, major: int, minor: int) -> list[MountEntry]:
        """Every mount of the filesystem on block device major:minor (binds included)."""
        return [e for e in self.entries if e.major == major and e.minor == minor]

    def under(self, path: str) -> list[MountEntry]:
        """Mounts at or below ``path``."""
        base = canonical(path).rstrip("/") + "/"
        return [e for e in self.entries if (e.mount_point + "/").startswith(base)]

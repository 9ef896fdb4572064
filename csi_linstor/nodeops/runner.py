"""The one place the node plugin runs a command.

Every command (mount, umount, mkfs.*, blkid, fsck, resize2fs, xfs_growfs, blockdev, losetup, xfs_io,
drbdsetup) goes through ``run``: its timeout comes from the RPC deadline (capped per command), its
output is captured, stdin is /dev/null (a tool that asks a question gets "no"), the locale is C (so
the output we parse is stable), and a failure raises ``CommandError`` naming the command and its
stderr. A command that outlives its timeout is killed with its whole process group and reported as
"timed out" (returncode None). Commands that must not be killed mid-write (mkfs, fsck, offline
resize2fs) go through ``longops``, which runs them here with a hard cap of hours instead.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CommandError

log = logging.getLogger(__name__)

# Seconds a killed command gets to close its pipes before we stop waiting for it.
_REAP_SECONDS = 2.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def run(
    argv: Sequence[str],
    deadline: Deadline,
    *,
    cap: float | None = None,
    what: str | None = None,
    ok: Sequence[int] = (0,),
) -> Result:
    """Run ``argv`` bounded by ``deadline`` (and ``cap`` seconds); raise CommandError on failure.

    ``ok`` lists the exit statuses that count as success (fsck's 1, blkid's 2 for "nothing found").
    FileNotFoundError propagates when the program itself is missing, so callers can decide whether
    a missing tool is fatal (drbdsetup is not).
    """
    argv = [str(a) for a in argv]
    label = what or argv[0]
    timeout = deadline.timeout(cap, what=f"`{' '.join(argv)}`")
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=_env(),
        start_new_session=True,  # its own process group, so a timeout kills helpers it forked too
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            stdout, stderr = proc.communicate(timeout=_REAP_SECONDS)
        except subprocess.TimeoutExpired:  # stuck in the kernel (D state): stop waiting
            stdout, stderr = "", ""
        log.warning("%s: `%s` timed out after %.1fs", label, " ".join(argv), timeout)
        detail = (stderr or "").strip()
        raise CommandError(
            argv,
            None,
            stderr or "",
            message=f"command `{' '.join(argv)}` timed out after {timeout:.1f}s"
            + (f": {detail}" if detail else ""),
        ) from None
    elapsed = time.monotonic() - started
    rc = proc.returncode
    log.debug("%s: `%s` exited %s in %.2fs", label, " ".join(argv), rc, elapsed)
    if rc not in ok:
        raise CommandError(argv, rc, (stderr or "").strip() or (stdout or "").strip())
    return Result(tuple(argv), rc, stdout or "", stderr or "")

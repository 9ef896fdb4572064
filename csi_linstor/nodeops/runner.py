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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

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
    pass_fds: Sequence[int] = (),
    on_start: Callable[[int], None] | None = None,
    output_to: str | None = None,
) -> Result:
    """Run ``argv`` bounded by ``deadline`` (and ``cap`` seconds); raise CommandError on failure.

    ``ok`` lists the exit statuses that count as success (fsck's 1, blkid's 2 for "nothing found").
    FileNotFoundError propagates when the program itself is missing, so callers can decide whether
    a missing tool is fatal (drbdsetup is not). ``pass_fds`` are inherited by the command (a
    lock it holds while it runs, see ``oplock``); ``on_start`` gets its pid once it runs.
    With ``output_to`` the output goes to the files ``<output_to>.out`` and ``.err`` instead of
    pipes: a command that must outlive this process (a mkfs when the driver is killed) is not
    killed by SIGPIPE at its next write.
    """
    argv = [str(a) for a in argv]
    label = what or argv[0]
    timeout = deadline.timeout(cap, what=f"`{' '.join(argv)}`")
    started = time.monotonic()
    with _outputs(output_to) as (out, err):
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            errors="replace",
            env=_env(),
            start_new_session=True,  # own process group: a timeout kills what it forked too
            pass_fds=tuple(pass_fds),
        )
        if on_start is not None:
            on_start(proc.pid)
        try:
            stdout, stderr = _wait(proc, timeout, out, err)
        except subprocess.TimeoutExpired:
            _kill(proc)
            try:
                stdout, stderr = _wait(proc, _REAP_SECONDS, out, err)
            except subprocess.TimeoutExpired:  # stuck in the kernel (D state): stop waiting
                stdout, stderr = "", ""
            _timed_out(argv, label, timeout, stderr)
    elapsed = time.monotonic() - started
    rc = proc.returncode
    log.debug("%s: `%s` exited %s in %.2fs", label, " ".join(argv), rc, elapsed)
    if rc not in ok:
        raise CommandError(argv, rc, (stderr or "").strip() or (stdout or "").strip())
    return Result(tuple(argv), rc, stdout or "", stderr or "")


@contextmanager
def _outputs(prefix: str | None) -> Iterator[tuple[Any, Any]]:
    """(stdout, stderr) for Popen: pipes, or two files ``prefix``.out/.err (truncated)."""
    if prefix is None:
        yield subprocess.PIPE, subprocess.PIPE
        return
    with open(prefix + ".out", "w+b") as out, open(prefix + ".err", "w+b") as err:
        yield out, err


def _wait(proc: subprocess.Popen[str], timeout: float, out: Any, err: Any) -> tuple[str, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    if out is subprocess.PIPE:
        return stdout or "", stderr or ""
    return _read(out), _read(err)


def _read(f: Any) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _timed_out(argv: list[str], label: str, timeout: float, stderr: str) -> NoReturn:
    log.warning("%s: `%s` timed out after %.1fs", label, " ".join(argv), timeout)
    detail = (stderr or "").strip()
    raise CommandError(
        argv,
        None,
        stderr or "",
        message=f"command `{' '.join(argv)}` timed out after {timeout:.1f}s"
        + (f": {detail}" if detail else ""),
    ) from None


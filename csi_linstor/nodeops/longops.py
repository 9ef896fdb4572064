"""Long operations on a device that must run to completion: mkfs, fsck, offline resize2fs.

Killing one of these mid-write (which ``runner.run`` does at the RPC deadline) can leave a
half-written filesystem. So they run in a background thread bounded only by a generous hard cap
(for a process that hangs), keyed by (device, operation). The RPC waits for the operation up to
its own deadline; when that passes first, it answers DEADLINE_EXCEEDED saying that the operation
continues. The CO retries the same request, and the retry joins the running operation (or
collects its result, if it finished in between): success lets the retry carry on, a failure is
that retry's error. A result nobody collects is dropped after ``RESULT_TTL`` seconds.

Callers that probe a device before acting on it call ``join(device)`` first, so they never
inspect a device that a background operation is still writing.

The tool runs in its own session, so it also outlives a driver killed with SIGKILL. What the
next driver process must know about it lives in a per-device lock file (``oplock``) that the tool
holds while it runs: ``run`` refuses to start beside a held lock (ABORTED) and ``join`` waits for
it up to the RPC deadline (then DEADLINE_EXCEEDED naming the command and its pid), so nothing
probes, formats or mounts a device an orphaned mkfs is still writing.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from csi_linstor.deadline import Deadline
from csi_linstor.errors import (
    Aborted,
    CsiError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
)
from csi_linstor.nodeops import oplock, runner

log = logging.getLogger(__name__)

# A mkfs or fsck of a large volume takes minutes, rarely an hour; one that runs for longer than
# this is hung (the device stopped answering), and is killed with its process group.
HARD_CAP_SECONDS = 6 * 3600.0
# How long a finished operation's result waits for the retry that collects it.
RESULT_TTL = 3600.0
# How often ``join`` looks again at a lock held by an operation of an earlier driver process.
ORPHAN_POLL_SECONDS = 0.2


Step = tuple[Sequence[str], Sequence[int]]  # argv, exit statuses that count as success


@dataclass
class _Op:
    device: str
    name: str
    steps: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: runner.Result | None = None
    error: BaseException | None = None
    held: oplock.Held | None = None

    @property
    def command(self) -> str:
        return " && ".join(" ".join(argv) for argv, _ok in self.steps)


_ops: dict[tuple[str, str], _Op] = {}
_lock = threading.Lock()


def _device_key(device: str) -> str:
    """One key per block device, whatever path names it (by-res link, /dev/drbdN, ...)."""
    try:
        st = os.stat(device)
    except OSError:
        return device
    if stat.S_ISBLK(st.st_mode):
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return device


def _expire(now: float) -> None:
    for key, op in list(_ops.items()):
        if op.finished is not None and now - op.finished > RESULT_TTL:
            log.warning("dropping the uncollected result of `%s` on %s (finished %.0fs ago)",
                        op.command, op.device, now - op.finished)
            del _ops[key]


def _work(op: _Op) -> None:
    held = op.held
    try:
        cap = Deadline(HARD_CAP_SECONDS)
        for argv, ok in op.steps:  # one after the other; the first failure ends the operation
            fds = (held.fd,) if held is not None else ()

            def started(pid: int, argv: tuple[str, ...] = argv) -> None:
                if held is not None:
                    held.started(pid, " ".join(argv))

            op.result = runner.run(argv, cap, cap=HARD_CAP_SECONDS, what=op.name, ok=ok,
                                   pass_fds=fds, on_start=started,
                                   output_to=oplock.output_prefix(held.key) if held else None)
    except (CsiError, OSError) as e:  # handed to the RPC that collects it, raised there
        op.error = e
    finally:
        if held is not None:
            held.release()
        op.finished = time.monotonic()
        op.done.set()


T = TypeVar("T")


def _locked(fn: Callable[[], T], device: str) -> T:
    """``fn`` on the device's lock file; an unusable runtime directory is FAILED_PRECONDITION."""
    try:
        return fn()
    except OSError as e:
        raise FailedPrecondition(
            f"cannot use the lock file of {device} in {oplock.runtime_dir()} ({e}); the node "
            "plugin needs a writable --runtime-dir (a hostPath such as /run/csi-linstor) before "
            "it runs mkfs, fsck or resize2fs"
        ) from None


def _orphan_busy(key: str, device: str, note: dict) -> Aborted:
    return Aborted(
        f"{oplock.describe(note, device)} is still running, started by an earlier driver "
        "process; not probing, formatting or mounting the device until it has finished "
        f"(lock {oplock.lock_path(key)}): retry"
    )


def _collect(key: tuple[str, str], op: _Op, deadline: Deadline) -> runner.Result:
    """Wait for ``op`` up to the deadline; its result (raising its error) once it is done."""
    if not op.done.wait(timeout=deadline.remaining()):
        raise DeadlineExceeded(
            f"`{op.command}` on {op.device} has been running for "
            f"{time.monotonic() - op.started:.0f}s and continues in the background (it is not "
            "interrupted, so the filesystem is not left half-written); a retry of this request "
            "waits for it and carries on"
        )
    with _lock:
        if _ops.get(key) is op:
            del _ops[key]
    if op.error is not None:
        raise op.error
    if op.result is None:  # the thread died of a bug; threading's excepthook logged it
        raise Internal(f"`{op.command}` on {op.device} ended without a result; see the log")
    return op.result


def run(
    argv: Sequence[str],
    device: str,
    name: str,
    deadline: Deadline,
    *,
    ok: Sequence[int] = (0,),
) -> runner.Result:
    """Run ``argv`` (operation ``name`` on ``device``) to completion; wait up to ``deadline``."""
    return run_steps([(argv, ok)], device, name, deadline)


def run_steps(steps: Sequence[Step], device: str, name: str, deadline: Deadline) -> runner.Result:
    """Run the commands of ``steps`` one after the other, as one operation ``name`` on
    ``device``, to completion; wait up to ``deadline``; the last command's result.

    A retry with the same commands joins the running (or finished, uncollected) operation; other
    commands under the same (device, name) while one runs are ABORTED. Several steps make one
    operation when a retry must not start over (``e2fsck -f`` then ``resize2fs``).
    """
    want = tuple((tuple(str(a) for a in argv), tuple(ok)) for argv, ok in steps)
    key = (_device_key(device), name)
    command = " && ".join(" ".join(argv) for argv, _ok in want)
    deadline.timeout(what=f"`{command}`")  # no time left: do not start it at all
    with _lock:
        _expire(time.monotonic())
        op = _ops.get(key)
        if op is not None and op.steps != want:
            if op.done.is_set():
                log.warning("dropping the uncollected result of `%s` on %s: a different "
                            "command was asked for", op.command, device)
                op = None
            else:
                raise Aborted(
                    f"`{op.command}` is still running on {device}; not starting `{command}` "
                    "beside it: retry when it has finished"
                )
        if op is None:
            # The device's lock, held by the tool for as long as it runs, also after a crash of
            # this process; held elsewhere: an operation of an earlier driver process runs.
            held = _locked(lambda: oplock.acquire(key[0], name), device)
            if held is None:
                raise _orphan_busy(key[0], device,
                                   _locked(lambda: oplock.holder(key[0]), device) or {})
            op = _Op(device=device, name=name, steps=want, held=held)
            _ops[key] = op
            threading.Thread(target=_work, args=(op,), daemon=True,
                             name=f"{name} {device}").start()
        else:
            log.info("joining `%s` on %s, started %.0fs ago", command, device,
                     time.monotonic() - op.started)
    return _collect(key, op, deadline)


def join(device: str, deadline: Deadline) -> None:
    """Wait for every long operation on ``device`` (up to ``deadline``) and collect its result:
    raise its error, or DEADLINE_EXCEEDED while one still runs; return when there is none."""
    dev = _device_key(device)
    with _lock:
        _expire(time.monotonic())
        pending = [(key, op) for key, op in _ops.items() if key[0] == dev]
    for key, op in pending:
        _collect(key, op, deadline)
    wait_orphan(dev, device, deadline)


def wait_orphan(key: str, device: str, deadline: Deadline) -> None:
    """Wait while another process holds the lock ``key`` (a mkfs, fsck, resize2fs or mount
    started by an earlier driver process that was killed), for at most half of the time left,
    then answer DEADLINE_EXCEEDED naming it (the other half carries the answer back in time).
    ``device`` names the device or path in messages."""
    note = _locked(lambda: oplock.holder(key), device)
    if note is None:
        return
    log.warning("%s is still running, started by an earlier driver process: waiting for it",
                oplock.describe(note, device))
    stop = deadline.remaining() / 2
    while True:
        left = deadline.remaining() - stop
        if left <= 0:
            raise DeadlineExceeded(
                f"{oplock.describe(note, device)} is still running, started by an earlier "
                f"driver process; {device} is not probed, formatted, mounted or unmounted until "
                f"it has finished (lock {oplock.lock_path(key)}): retry"
            )
        time.sleep(min(ORPHAN_POLL_SECONDS, left))
        current = _locked(lambda: oplock.holder(key), device)
        if current is None:
            log.info("%s has finished", oplock.describe(note, device))
            return
        note = current


def running() -> list[tuple[str, str, str]]:
    """(device, operation, command) of every operation still running, for logs and tests."""
    with _lock:
        return [(op.device, op.name, op.command) for op in _ops.values() if not op.done.is_set()]

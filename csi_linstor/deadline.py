"""RPC deadlines: every external call (HTTP, subprocess) takes its timeout from one of these.

A ``Deadline`` is created by the RPC wrapper from ``context.time_remaining()`` (capped by a default
when the caller set no deadline) and passed down to every operation. ``timeout()`` gives the seconds
an external call may take: the remaining time, capped by the call's own limit; it raises
DeadlineExceeded when nothing is left, so no call is ever started without a bound.
"""

from __future__ import annotations

import time

from csi_linstor.errors import DeadlineExceeded

# Used when the caller set no deadline (csi-sanity, some CO paths): still bounded.
DEFAULT_RPC_SECONDS = 120.0


class Deadline:
    __slots__ = ("_expires",)

    def __init__(self, seconds: float | None = None) -> None:
        if seconds is None:
            seconds = DEFAULT_RPC_SECONDS
        self._expires = time.monotonic() + max(0.0, seconds)

    @classmethod
    def from_context(cls, context: object, default: float = DEFAULT_RPC_SECONDS) -> Deadline:
        remaining = None
        getter = getattr(context, "time_remaining", None)
        if getter is not None:
            remaining = getter()
        if remaining is None or remaining > 10 * 365 * 86400:
            remaining = default
        return cls(remaining)

    def remaining(self) -> float:
        return max(0.0, self._expires - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout(self, cap: float | None = None, *, what: str = "operation") -> float:
        """Seconds the next external call may take; raises DeadlineExceeded when none are left."""
        left = self.remaining()
        if left <= 0.0:
            raise DeadlineExceeded(f"the RPC deadline passed before {what} could start; retry")
        return left if cap is None else min(left, cap)

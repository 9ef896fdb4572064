"""The CO's retry of an RPC that ran out of its deadline, for tests on real LINSTOR."""

from __future__ import annotations

from typing import Any

import grpc


class CoRetry:
    """Calls a stub's RPCs as the CO does: one that ran out of its deadline is sent again.

    Used on real LINSTOR only. There, now and then, the controller learns of a resource its
    satellite created within milliseconds only at the satellite's next update, tens of seconds
    later (seen for the second of two spawns 80 ms apart), so the driver's CreateVolume answers
    DEADLINE_EXCEEDED and external-provisioner's retry finds the volume. Every retry is recorded
    in ``retried`` and reported as a warning.
    """

    def __init__(self, stub: Any, retried: list[str]) -> None:
        self._stub = stub
        self._retried = retried

    def __getattr__(self, name: str) -> Any:
        rpc = getattr(self._stub, name)

        def call(*args: Any, **kw: Any) -> Any:
            for attempt in range(3):
                try:
                    return rpc(*args, **kw)
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED or attempt == 2:
                        raise
                    self._retried.append(f"{name}: {err.details()}")
            raise AssertionError("unreachable")

        return call

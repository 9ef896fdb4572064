"""``python -m csi_linstor.bench.timed_driver FILE serve ...``: the driver, instrumented for
``csi-linstor bench real``.

Runs ``csi-linstor serve`` unchanged except that, per RPC, it appends one JSON line to FILE:
the method, its time inside the wrapper, and the time it spent inside ``LinstorClient.request``
split into *waiting* (wall time minus the thread's CPU time: the network and LINSTOR itself) and
the driver's own CPU in the HTTP stack. The bench subtracts the waiting time from the latency its
client saw to get the driver's overhead. For benchmarks only: never used by ``serve``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from csi_linstor.linstor.client import LinstorClient
from csi_linstor.rpc import Runtime

_local = threading.local()
_lock = threading.Lock()


def install(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime
    request = LinstorClient.request
    invoke = Runtime.invoke

    def timed_request(self: LinstorClient, *args: Any, **kw: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return request(self, *args, **kw)
        finally:
            spent_wall = time.perf_counter() - wall
            spent_cpu = time.thread_time() - cpu
            acc = getattr(_local, "acc", None)
            if acc is not None:
                acc[0] += max(0.0, spent_wall - spent_cpu)
                acc[1] += spent_cpu
                acc[2] += 1

    def timed_invoke(self: Runtime, method: str, *args: Any, **kw: Any) -> Any:
        _local.acc = [0.0, 0.0, 0]
        start = time.perf_counter()
        try:
            return invoke(self, method, *args, **kw)
        finally:
            wait, cpu, calls = _local.acc
            _local.acc = None
            line = json.dumps({"method": method, "server_s": time.perf_counter() - start,
                               "linstor_wait_s": wait, "http_cpu_s": cpu, "rest_calls": calls})
            with _lock:
                out.write(line + "\n")

    LinstorClient.request = timed_request  # type: ignore[method-assign]
    Runtime.invoke = timed_invoke  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1])
    from csi_linstor.cli import main

    sys.exit(main(sys.argv[2:]))

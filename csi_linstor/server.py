"""The gRPC server: socket handling, thread pool, graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc

from csi_linstor.config import Endpoint

log = logging.getLogger("csi_linstor.server")


class ServerError(RuntimeError):
    """The server could not start (bad socket path, bind failure); the message says why."""


def prepare_unix_socket(path: Path) -> None:
    """Create the socket's directory and remove a stale socket; never delete anything else."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ServerError(f"cannot create socket directory {path.parent}: {err.strerror}") from err
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServerError(
            f"{path} exists and is not a socket; refusing to delete it: remove it or choose "
            "another --csi-endpoint"
        )
    log.info("removing stale socket %s", path)
    path.unlink()


class CsiServer:
    """Owns the grpc.Server; ``register`` callbacks add the servicers."""

    def __init__(
        self,
        endpoint: Endpoint,
        register: Callable[[grpc.Server], None],
        workers: int = 32,
        grace: float = 25.0,
    ) -> None:
        self.endpoint = endpoint
        self.grace = grace
        self._stopped = threading.Event()
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="csi-rpc")
        # maximum_concurrent_rpcs stays unset: its overflow answers RESOURCE_EXHAUSTED, which
        # a CO reads as "out of capacity". Excess calls queue for a worker instead.
        self.server = grpc.server(self._pool, options=[("grpc.so_reuseport", 0)])
        register(self.server)
        self.port = 0

    def start(self) -> None:
        if self.endpoint.scheme == "unix":
            assert self.endpoint.path is not None
            prepare_unix_socket(self.endpoint.path)
            old_umask = os.umask(0o177)  # the socket is created 0600
            try:
                self._bind()
            finally:
                os.umask(old_umask)
            os.chmod(self.endpoint.path, 0o600)
        else:
            self._bind()
        self.server.start()
        where = str(self.endpoint)
        if self.endpoint.scheme == "tcp" and self.endpoint.port == 0:
            where = f"tcp://{self.endpoint.host}:{self.port}"  # the port the kernel picked
        log.info("serving CSI on %s", where)

    def _bind(self) -> None:
        try:
            self.port = self.server.add_insecure_port(self.endpoint.grpc_address)
        except RuntimeError as err:
            raise ServerError(f"cannot listen on {self.endpoint}: {err}") from err
        if self.port == 0 and self.endpoint.scheme == "tcp":
            raise ServerError(f"cannot listen on {self.endpoint}: address in use or not permitted")
        if self.endpoint.scheme == "unix" and not (
            self.endpoint.path is not None and self.endpoint.path.exists()
        ):
            raise ServerError(f"cannot listen on {self.endpoint}: the socket was not created")

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish within the grace period."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.grace if grace is None else grace
        log.info("stopping: letting in-flight RPCs finish (grace %.0fs)", grace)
        self.server.stop(grace).wait(grace + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.endpoint.scheme == "unix" and self.endpoint.path is not None:
            try:
                if stat.S_ISSOCK(self.endpoint.path.lstat().st_mode):
                    self.endpoint.path.unlink()
            except FileNotFoundError:
                pass
        log.info("stopped")

    def wait_for_signal(self) -> int:
        """Block until SIGTERM or SIGINT, then stop gracefully. Returns the exit status."""
        received: list[int] = []

        def handle(signum: int, _frame: FrameType | None) -> None:
            received.append(signum)
            self._stop_requested.set()

        self._stop_requested = threading.Event()
        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stop_requested.wait(1.0):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("received %s", signal.Signals(received[0]).name if received else "stop")
        self.stop()
        return 0

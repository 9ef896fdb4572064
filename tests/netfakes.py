"""Network stand-ins for a LINSTOR controller that is not there or does not answer."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


def dead_port() -> int:
    """A local port nothing listens on (bound, then closed again: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MuteController(threading.Thread):
    """Accepts each connection and reads the request, then closes it without an answer: a FIN,
    or with ``reset`` an RST (SO_LINGER 0). Counts the requests; ``close()`` stops it."""

    def __init__(self, *, reset: bool = False) -> None:
        super().__init__(daemon=True)
        self.reset = reset
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            self.requests += 1
            if self.reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.sock.close()


def raw_server(reply: list[tuple[bytes, float]]) -> tuple[str, threading.Thread]:
    """One connection: answers any request with ``reply`` (pieces sent after a pause each),
    then closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.recv(65536)
            for piece, pause in reply:  # the client may hang up first: that is the point
                time.sleep(pause)
                conn.sendall(piece)
        srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}", thread

"""Network stand-ins for a LINSTOR controller that is not there or does not answer."""

from __future__ import annotations

import socket
import struct
import threading


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

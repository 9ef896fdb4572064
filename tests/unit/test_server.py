"""Server lifecycle: socket handling, graceful SIGTERM with an RPC in flight, loud bind failures."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.config import parse_endpoint
from csi_linstor.server import CsiServer, ServerError, prepare_unix_socket

SLOW_SERVER = textwrap.dedent(
    """
    import sys, time, logging
    from csi_linstor._gen import csi_pb2, csi_pb2_grpc
    from csi_linstor.config import parse_endpoint
    from csi_linstor.rpc import Runtime, rpc
    from csi_linstor.server import CsiServer

    logging.basicConfig(level=logging.INFO)

    class Slow(csi_pb2_grpc.IdentityServicer):
        runtime = Runtime()

        @rpc()
        def Probe(self, request, call):
            time.sleep(2.0)
            return csi_pb2.ProbeResponse()

    server = CsiServer(parse_endpoint(sys.argv[1]),
                       lambda s: csi_pb2_grpc.add_IdentityServicer_to_server(Slow(), s),
                       workers=4, grace=10)
    server.start()
    print("ready", flush=True)
    sys.exit(server.wait_for_signal())
    """
)


def test_sigterm_lets_the_inflight_rpc_finish_and_removes_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "csi.sock"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, f"unix://{sock}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        channel = grpc.insecure_channel(f"unix:{sock}")
        stub = csi_pb2_grpc.IdentityStub(channel)
        result: dict[str, object] = {}

        def call() -> None:
            try:
                result["response"] = stub.Probe(csi_pb2.ProbeRequest(), timeout=15)
            except grpc.RpcError as err:  # recorded and asserted below
                result["error"] = err

        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(0.5)  # the RPC is now sleeping inside the handler
        proc.send_signal(signal.SIGTERM)
        worker.join(15)
        assert "error" not in result, result.get("error")
        assert isinstance(result["response"], csi_pb2.ProbeResponse)
        assert proc.wait(15) == 0
        assert not sock.exists(), "the socket must be removed on a graceful stop"
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    sock = tmp_path / "csi.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    prepare_unix_socket(sock)
    assert not sock.exists()


def test_non_socket_file_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    with pytest.raises(ServerError, match="not a socket"):
        prepare_unix_socket(path)
    assert path.read_text() == "keep me"


def test_socket_directory_is_created(tmp_path: Path) -> None:
    endpoint = parse_endpoint(f"unix://{tmp_path}/a/b/csi.sock")
    server = CsiServer(endpoint, lambda s: None, workers=1)
    server.start()
    try:
        assert stat.S_ISSOCK(os.stat(endpoint.path).st_mode)
    finally:
        server.stop(0)
    assert not endpoint.path.exists()


def test_bind_failure_is_loud() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        server = CsiServer(parse_endpoint(f"tcp://127.0.0.1:{port}"), lambda s: None, workers=1)
        with pytest.raises(ServerError, match="cannot listen"):
            server.start()
    finally:
        taken.close()

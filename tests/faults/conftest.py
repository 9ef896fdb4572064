"""Fault-injection harness: the controller service on a unix socket, talking to the simulator or
to a real LINSTOR 1.33.3 through a LinstorClient with one or more endpoints.

The driver object lives for the whole test: every check that "the same RPC succeeds after the
fault" runs against the driver that saw the fault, never a restarted one.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.config import Config, parse_endpoint
from csi_linstor.csi.controller import ControllerServicer
from csi_linstor.deadline import Deadline
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.rpc import Runtime
from csi_linstor.sim import SimConfig, Simulator

GIB = 1024 ** 3
MOUNT = csi_pb2.VolumeCapability(
    mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
    access_mode=csi_pb2.VolumeCapability.AccessMode(
        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
# What a sidecar or kubelet does with these codes: back off and send the same request again.
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
           grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Driver:
    """One controller-service process stand-in (servicer, runtime, client, gRPC server)."""

    runtime: Runtime
    client: LinstorClient
    ctl: Any
    _server: Any
    _channel: Any
    _dir: str

    def locks(self) -> set[str]:
        """The per-volume locks held right now."""
        return self.runtime.locks.held()

    def close(self) -> None:
        self._channel.close()
        self._server.stop(None)
        self.client.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def start_driver(endpoints: list[str], *, deadline: float = 30.0, **client_kw: Any) -> Driver:
    """``deadline``: the RPC deadline when the caller sets none (the calls below set none, so
    the driver's own answer and message are what the test sees)."""
    sock_dir = tempfile.mkdtemp(prefix="csif-")  # short: unix socket paths are limited
    sock = f"{sock_dir}/csi.sock"
    client = LinstorClient(endpoints, **client_kw)
    runtime = Runtime(default_deadline=deadline)
    servicer = ControllerServicer(runtime, Config(csi_endpoint=parse_endpoint(f"unix://{sock}")),
                                  client)
    server = grpc.server(ThreadPoolExecutor(8))
    csi_pb2_grpc.add_ControllerServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    channel = grpc.insecure_channel(f"unix://{sock}")
    return Driver(runtime, client, csi_pb2_grpc.ControllerStub(channel), server, channel,
                  sock_dir)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(SimConfig(nodes=3, device_dir=tmp_path / "dev",
                                    state_dir=tmp_path / "state", real_devices=False))
    simulator.start()
    yield simulator
    simulator.stop()


def rpc_error(fn: Callable[..., Any], req: Any, **kw: Any) -> grpc.RpcError:
    """The error ``fn(req)`` answers (fails when it succeeds)."""
    with pytest.raises(grpc.RpcError) as err:
        fn(req, **kw)
    return err.value


def until_ok(fn: Callable[..., Any], req: Any, attempts: int = 20) -> tuple[Any, list[str]]:
    """Send ``req`` as a sidecar does: again after each retryable code; (reply, codes seen).
    Any other code fails the test at once with the driver's message."""
    seen: list[str] = []
    for _ in range(attempts):
        try:
            return fn(req), seen
        except grpc.RpcError as err:
            assert err.code() in RETRIED, f"{err.code()}: {err.details()}"
            seen.append(err.code().name)
            time.sleep(0.2)
    raise AssertionError(f"still failing after {attempts} attempts: {seen}")


def wait_for(cond: Callable[[], Any], seconds: float, what: str) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds:.0f}s: {what}")


def create_req(name: str, params: dict[str, str], size: int = GIB
               ) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        volume_capabilities=[MOUNT], parameters=params)


def dl() -> Deadline:
    return Deadline(30)

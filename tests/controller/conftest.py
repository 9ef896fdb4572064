"""A Controller + GroupController served over a unix socket, on a fresh LINSTOR simulator."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.config import Config, parse_endpoint
from csi_linstor.controller import ControllerServicer
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.rpc import Runtime
from csi_linstor.sim import SimConfig, Simulator


@dataclass
class Env:
    sim: Simulator
    client: LinstorClient
    servicer: ControllerServicer
    ctl: Any
    group: Any
    tmp: Path

    def counts(self) -> dict[str, int]:
        return self.sim.request_counts()

    def rgs(self) -> list[str]:
        return sorted(rg["name"] for rg in self.client.get("/v1/resource-groups",
                                                           deadline=_deadline()))

    def leftovers(self) -> tuple[list[str], list[str]]:
        return self.sim.list_resource_definitions(), self.sim.list_snapshots()


def _deadline():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


def make_env(tmp: Path, real_devices: bool = False, sim_config: SimConfig | None = None,
             **cfg_kw: Any) -> Env:
    sc = sim_config or SimConfig(nodes=3)
    sc.device_dir = tmp / "dev"
    sc.state_dir = tmp / "state"
    sc.real_devices = real_devices
    sim = Simulator(sc)
    url = sim.start()
    client = LinstorClient([url])
    cfg = Config(csi_endpoint=parse_endpoint(f"unix://{tmp}/csi.sock"), **cfg_kw)
    runtime = Runtime(default_deadline=30)
    servicer = ControllerServicer(runtime, cfg, client)
    server = grpc.server(ThreadPoolExecutor(8))
    csi_pb2_grpc.add_ControllerServicer_to_server(servicer, server)
    csi_pb2_grpc.add_GroupControllerServicer_to_server(servicer.group_controller, server)
    sock = tmp / "csi.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    channel = grpc.insecure_channel(f"unix://{sock}")
    env = Env(sim, client, servicer, csi_pb2_grpc.ControllerStub(channel),
              csi_pb2_grpc.GroupControllerStub(channel), tmp)
    env._server = server  # type: ignore[attr-defined]
    env._channel = channel  # type: ignore[attr-defined]
    return env


def close_env(env: Env) -> None:
    env._channel.close()  # type: ignore[attr-defined]
    env._server.stop(None)  # type: ignore[attr-defined]
    env.client.close()
    env.sim.stop()


@pytest.fixture
def env(tmp_path: Path):
    e = make_env(tmp_path)
    yield e
    close_env(e)


MOUNT = csi_pb2.VolumeCapability(
    mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
    access_mode=csi_pb2.VolumeCapability.AccessMode(
        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
BLOCK = csi_pb2.VolumeCapability(
    block=csi_pb2.VolumeCapability.BlockVolume(),
    access_mode=csi_pb2.VolumeCapability.AccessMode(
        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))

GIB = 1024 ** 3


def create_req(name: str, size: int = GIB, params: dict[str, str] | None = None,
               cap: Any = MOUNT, **kw: Any) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        volume_capabilities=[cap], parameters=params or {}, **kw)


def code_of(fn: Any, *args: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args)
    return err.value.code()

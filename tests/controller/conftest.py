"""A Controller + GroupController served over a unix socket, on a backend: a fresh LINSTOR
simulator ("sim") or the session's real LINSTOR 1.33.3 ("real", tests/real_linstor.py: one node,
storage layer only, FILE_THIN pools, emptied before and checked empty after each test).

Every test taking ``env`` runs on both backends unless marked ``@sim_only("why")``: DRBD
behaviour (diskless attach, in-use, disk states), several nodes or replicas, and the
simulator's fault knobs and request counters exist only on the simulator. A test that builds its
own environment says which backends it runs on the same way; the collection hook below refuses a
test that does neither, so every simulator-only test states its reason.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.config import Config, parse_endpoint
from csi_linstor.csi.controller import ControllerServicer
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.rpc import Runtime
from csi_linstor.sim import SimConfig, Simulator
from tests.co_retry import CoRetry
from tests.real_linstor import XFS_POOL, RealLinstor

BACKENDS = ("sim", "real")
# What a StorageClass must say on the real backend: one node, no DRBD module, the reflink pool.
REAL_CLASS = {"placementCount": "1", "layerList": "storage", "storagePool": XFS_POOL}
_PLACEMENT_KEYS = {f"{prefix}{key}" for key in ("placementCount", "layerList", "storagePool")
                   for prefix in ("", "linstor.csi.linbit.com/")}


def sim_only(reason: str) -> pytest.MarkDecorator:
    """Run this test on the simulator only, for ``reason`` (shown in the test's id)."""
    return pytest.mark.sim_only(reason)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sim_only")
        metafunc.parametrize("backend", ["sim"] if only else list(BACKENDS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    unmarked = []
    for item in items:
        if here not in Path(str(item.fspath)).resolve().parents:
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        only = item.get_closest_marker("sim_only")
        if only is not None and not (only.args and only.args[0]):
            unmarked.append(f"{item.nodeid}: sim_only without a reason")
        elif "backend" not in params and only is None:
            unmarked.append(f"{item.nodeid}: neither a backend parameter nor sim_only(reason)")
    if unmarked:
        raise pytest.UsageError("tests/controller: every test runs on both backends or says "
                                "why not:\n" + "\n".join(unmarked))


@dataclass
class Env:
    sim: Simulator | None
    client: LinstorClient
    servicer: ControllerServicer
    ctl: Any
    group: Any
    tmp: Path
    real: RealLinstor | None = None
    retried: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return "sim" if self.sim is not None else "real"

    @property
    def nodes(self) -> list[str]:
        """The satellites a volume can be placed on."""
        return sorted(n["name"] for n in self.client.get("/v1/nodes", deadline=_deadline()))

    def params(self, params: dict[str, str] | None = None, **kw: str) -> dict[str, str]:
        """A StorageClass's parameters for this backend: as given on the simulator; on real
        LINSTOR with the placement, layers and pool of REAL_CLASS instead of the given ones."""
        given = {**(params or {}), **kw}
        if self.sim is not None:
            return given
        return {**{k: v for k, v in given.items() if k not in _PLACEMENT_KEYS}, **REAL_CLASS}

    def counts(self) -> dict[str, int]:
        assert self.sim is not None, "request counts: simulator only"
        return self.sim.request_counts()

    def rds(self) -> list[str]:
        return sorted(rd["name"] for rd in self.client.get("/v1/resource-definitions",
                                                           deadline=_deadline()))

    def snapshots(self) -> list[str]:
        return sorted(f"{s['resource_name']}/{s['name']}" for s in self.client.get(
            "/v1/view/snapshots", deadline=_deadline()))

    def rgs(self) -> list[str]:
        return sorted(rg["name"] for rg in self.client.get("/v1/resource-groups",
                                                           deadline=_deadline()))

    def leftovers(self) -> tuple[list[str], list[str]]:
        return self.rds(), self.snapshots()


def _deadline():
    from csi_linstor.deadline import Deadline

    return Deadline(30)


def make_env(tmp: Path, real_devices: bool = False, sim_config: SimConfig | None = None,
             real: RealLinstor | None = None, **cfg_kw: Any) -> Env:
    """On ``real`` LINSTOR when given, else on a new simulator (``sim_config``)."""
    sim: Simulator | None = None
    if real is not None:
        assert sim_config is None, "a simulator configuration for the real backend"
        url = real.url
    else:
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
    ctl: Any = csi_pb2_grpc.ControllerStub(channel)
    group: Any = csi_pb2_grpc.GroupControllerStub(channel)
    retried: list[str] = []
    if real is not None:
        ctl, group = CoRetry(ctl, retried), CoRetry(group, retried)
    env = Env(sim, client, servicer, ctl, group, tmp, real, retried)
    env._server = server  # type: ignore[attr-defined]
    env._channel = channel  # type: ignore[attr-defined]
    return env


def close_env(env: Env) -> None:
    if env.retried:
        import warnings

        warnings.warn(f"retried as the CO would after DEADLINE_EXCEEDED on real LINSTOR: "
                      f"{env.retried}", stacklevel=2)
    env._channel.close()  # type: ignore[attr-defined]
    env._server.stop(None)  # type: ignore[attr-defined]
    env.client.close()
    if env.sim is not None:
        env.sim.stop()


def backend_env(request: pytest.FixtureRequest, backend: str, tmp: Path, **kw: Any) -> Env:
    """make_env on ``backend``; the real one is started (once a session) only when asked for."""
    if backend == "real":
        return make_env(tmp, real=request.getfixturevalue("real_linstor"), **kw)
    return make_env(tmp, **kw)


@pytest.fixture
def env(request: pytest.FixtureRequest, backend: str, tmp_path: Path):
    e = backend_env(request, backend, tmp_path)
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


@pytest.fixture
def lvm_env(tmp_path: Path) -> Any:
    """A simulator whose pools LINSTOR clones natively (DeviceProviderKind.isCloneSupported:
    LVM_THIN), for the native clone path."""
    from csi_linstor.sim.simulator import PoolSpec

    e = make_env(tmp_path, sim_config=SimConfig(nodes=3, pools=[
        PoolSpec("DfltStorPool", "LVM_THIN"), PoolSpec("sp1", "LVM_THIN")]))
    yield e
    close_env(e)

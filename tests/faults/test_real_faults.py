"""LINSTOR faults on the real LINSTOR 1.33.3 of ../shared/linstor-server: the satellite process
stopped during placement, publish, expand and delete; the controller process killed (SIGKILL)
mid-RPC and started again. One controller + satellite for the module, on an H2 *file* database
(an in-memory controller would forget everything when restarted). The driver's first controller
URL refuses connections throughout, so every RPC here also shows the failover to the second.

After each fault the same driver (never restarted) serves the same RPCs, and LINSTOR holds no
resource definition or snapshot.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from tests.faults.conftest import (
    GIB,
    MOUNT,
    Driver,
    create_req,
    rpc_error,
    start_driver,
    until_ok,
    wait_for,
)
from tests.real_linstor import NODE, XFS_POOL, RealLinstor, require_real_linstor

CLASS = {"placementCount": "1", "layerList": "storage", "storagePool": XFS_POOL}
VOL = "pvc-real-fault"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLinstor]:
    require_real_linstor()
    work = tmp_path_factory.mktemp("realfaults")
    linstor = RealLinstor(work, database=work / "db" / "linstordb").start()
    try:
        yield linstor
    finally:
        linstor.stop()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def driver(real: RealLinstor) -> Iterator[Driver]:
    if real.ctrl is None or real.ctrl.poll() is not None:
        real.start_controller()
    if real.stlt is None or real.stlt.poll() is not None:
        real.start_satellite()
    real.reset()
    d = start_driver([_dead_url(), real.url])
    yield d
    d.close()
    left = real.leftovers()
    real.reset()
    assert not left, f"the test left in real LINSTOR: {left}"


def _delete_all(driver: Driver, real: RealLinstor) -> None:
    for rd in real.rds():
        until_ok(driver.ctl.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=rd))
    # LINSTOR deletes a resource once its satellite confirms: wait for that, then nothing is left
    wait_for(lambda: real.leftovers() == [], 60, "LINSTOR finished deleting")
    assert driver.locks() == set()


def _report(fault: str, outcome: str) -> None:
    print(f"\nreal LINSTOR fault: {fault} -> {outcome}")


def _outcome(fn: Any, req: Any) -> str:
    try:
        fn(req)
        return "OK"
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.ABORTED), err.details()
        return f"{err.code().name}: {err.details()}"


def test_satellite_stopped_during_placement_publish_expand_and_delete(
        real: RealLinstor, driver: Driver) -> None:
    """One satellite outage (a restart costs LINSTOR's 10 s reconnect period): CreateVolume
    cannot place, publish of an existing volume is refused, expand and delete are stored by
    LINSTOR and done when the satellite is back; then every RPC succeeds again."""
    until_ok(driver.ctl.CreateVolume, create_req(VOL, CLASS))
    real.stop_satellite()
    err = rpc_error(driver.ctl.CreateVolume, create_req("pvc-real-new", CLASS))
    _report("satellite stopped, CreateVolume", f"{err.code().name}: {err.details()}")
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert "Not enough available nodes" in err.details()
    assert f"satellites not ONLINE: {NODE} (OFFLINE)" in err.details()
    assert "start the satellite" in err.details()
    assert real.rds() == [VOL]  # nothing half-made
    publish = csi_pb2.ControllerPublishVolumeRequest(volume_id=VOL, node_id=NODE,
                                                     volume_capability=MOUNT)
    err = rpc_error(driver.ctl.ControllerPublishVolume, publish)
    _report("satellite stopped, ControllerPublishVolume", f"{err.code().name}: {err.details()}")
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert NODE in err.details() and "offline" in err.details() and "retry" in err.details()
    expand = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=VOL, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB))
    delete = csi_pb2.DeleteVolumeRequest(volume_id=VOL)
    for name, fn, req in (("ControllerExpandVolume", driver.ctl.ControllerExpandVolume, expand),
                          ("DeleteVolume", driver.ctl.DeleteVolume, delete)):
        _report(f"satellite stopped, {name}", _outcome(fn, req))
        assert driver.locks() == set()
    # LINSTOR keeps the resource definition (flag DELETE) until the satellite confirms: to the
    # CO the volume is gone, and a volume of the same name is not "already there"
    assert real.rds() == [VOL]
    listed = driver.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries
    assert [e.volume.volume_id for e in listed] == []
    err = rpc_error(driver.ctl.CreateVolume, create_req(VOL, CLASS))
    _report("satellite stopped, CreateVolume of a name LINSTOR is deleting",
            f"{err.code().name}: {err.details()}")
    assert err.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE), err.details()
    real.start_satellite()
    # the satellite is back: LINSTOR finishes the deletion it stored, the same RPCs succeed
    _delete_all(driver, real)
    until_ok(driver.ctl.CreateVolume, create_req(VOL, CLASS))
    until_ok(driver.ctl.ControllerPublishVolume, publish)
    reply, _ = until_ok(driver.ctl.ControllerExpandVolume, expand)
    assert reply.capacity_bytes == 2 * GIB
    _delete_all(driver, real)


def test_controller_killed_mid_rpc_and_restarted(real: RealLinstor, driver: Driver) -> None:
    until_ok(driver.ctl.CreateVolume, create_req("pvc-before-kill", CLASS))
    # no pause needed: the H2 file database writes each commit at once (WRITE_DELAY=0, see
    # RealLinstor), as a production database does
    req = create_req(VOL, CLASS)
    answer: dict[str, Any] = {}

    def call() -> None:
        try:
            answer["reply"] = driver.ctl.CreateVolume(req)
        except grpc.RpcError as err:
            answer["error"] = err

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.1)  # the RPC is on its way (or done: either way the retry must converge)
    real.stop_controller(signal.SIGKILL)
    worker.join(60)
    assert not worker.is_alive(), "the RPC hangs after the controller died"
    err = answer.get("error")
    _report("controller SIGKILLed during CreateVolume",
            "OK" if err is None else f"{err.code().name}: {err.details()}")
    if err is not None:
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.ABORTED), err.details()
    # while it is down: UNAVAILABLE at once, naming both URLs and what to check
    down = rpc_error(driver.ctl.CreateVolume, req)
    _report("controller down, CreateVolume", f"{down.code().name}: {down.details()}")
    assert down.code() is grpc.StatusCode.UNAVAILABLE
    assert "no LINSTOR controller reachable" in down.details()
    assert real.url in down.details() and "connection refused" in down.details()
    assert "LS_CONTROLLERS" in down.details()
    assert driver.locks() == set()
    start = time.monotonic()
    real.start_controller()
    real.wait_online()
    _report("controller restart (H2 file database) until the satellite is ONLINE",
            f"{time.monotonic() - start:.1f} s")
    vol, seen = until_ok(driver.ctl.CreateVolume, req)
    assert vol.volume.volume_id == VOL
    assert real.rds() == sorted(["pvc-before-kill", VOL])  # the state survived, no duplicate
    _delete_all(driver, real)



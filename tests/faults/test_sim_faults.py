"""LINSTOR faults on the simulator: latency beyond the RPC deadline, 500s without a known ret
code, connections refused and reset (failover to the second controller URL), the controller
restarting mid-RPC, a satellite offline during placement, publish and delete, a replica not
UpToDate during resize.

Every case asserts the gRPC code the driver answers and that its message names what failed and
what to do; then the same driver (never restarted) serves the same RPC successfully, and LINSTOR
holds nothing the test did not leave on purpose. The real-LINSTOR counterparts are in
test_real_faults.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.sim import Simulator
from tests.faults.conftest import (
    GIB,
    MOUNT,
    Driver,
    create_req,
    dl,
    rpc_error,
    start_driver,
    until_ok,
    wait_for,
)
from tests.netfakes import MuteController, dead_port

VOL = "pvc-fault"
TWO = {"placementCount": "2"}
SNAP = "snapshot-fault"


def _replicas(driver: Driver, rd: str) -> list[str]:
    return sorted(r["node_name"] for r in driver.client.get(
        f"/v1/resource-definitions/{rd}/resources", deadline=dl())
        if "DISKLESS" not in (r.get("flags") or []))


def _no_replica(driver: Driver, rd: str) -> str:
    have = set(_replicas(driver, rd))
    return next(n for n in ("node-1", "node-2", "node-3") if n not in have)


@dataclass
class Case:
    """One RPC under a fault: ``setup`` prepares (and returns the request), ``route`` is the
    REST call the fault hits, ``check`` asserts the end state the RPC promised."""

    name: str
    method: str
    route: str
    setup: Callable[[Driver], Any]
    check: Callable[[Driver, Simulator, Any], None]


def _create(driver: Driver) -> Any:
    return create_req(VOL, TWO)


def _with_volume(make: Callable[[Driver], Any]) -> Callable[[Driver], Any]:
    def setup(driver: Driver) -> Any:
        driver.ctl.CreateVolume(create_req(VOL, TWO))
        return make(driver)
    return setup


def _publish(driver: Driver) -> Any:
    return csi_pb2.ControllerPublishVolumeRequest(
        volume_id=VOL, node_id=_no_replica(driver, VOL), volume_capability=MOUNT)


def _check_created(driver: Driver, sim: Simulator, req: Any) -> None:
    assert sim.list_resource_definitions() == [VOL]
    assert len(_replicas(driver, VOL)) == 2


def _check_published(driver: Driver, sim: Simulator, req: Any) -> None:
    res = driver.client.get(f"/v1/resource-definitions/{VOL}/resources/{req.node_id}",
                            deadline=dl())
    assert res["node_name"] == req.node_id


def _check_expanded(driver: Driver, sim: Simulator, req: Any) -> None:
    vd = driver.client.get(f"/v1/resource-definitions/{VOL}/volume-definitions/0", deadline=dl())
    assert vd["size_kib"] == 2 * GIB // 1024


def _check_deleted(driver: Driver, sim: Simulator, req: Any) -> None:
    assert sim.list_resource_definitions() == []


def _check_snapshot(driver: Driver, sim: Simulator, req: Any) -> None:
    assert sim.list_snapshots() == [f"{VOL}/{SNAP}"]


CASES = [
    Case("create", "CreateVolume", r"POST /v1/resource-groups/\{rg\}/spawn", _create,
         _check_created),
    Case("publish", "ControllerPublishVolume", r"/make-available$", _with_volume(_publish),
         _check_published),
    Case("expand", "ControllerExpandVolume",
         r"PUT /v1/resource-definitions/\{rd\}/volume-definitions/\{vnr\}",
         _with_volume(lambda d: csi_pb2.ControllerExpandVolumeRequest(
             volume_id=VOL, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB))),
         _check_expanded),
    Case("delete", "DeleteVolume", r"DELETE /v1/resource-definitions/\{rd\}$",
         _with_volume(lambda d: csi_pb2.DeleteVolumeRequest(volume_id=VOL)), _check_deleted),
    Case("snapshot", "CreateSnapshot", r"POST /v1/resource-definitions/\{rd\}/snapshots$",
         _with_volume(lambda d: csi_pb2.CreateSnapshotRequest(name=SNAP, source_volume_id=VOL)),
         _check_snapshot),
]
IDS = [c.name for c in CASES]


def _cleanup_and_check(driver: Driver, sim: Simulator) -> None:
    """Delete what the case made through the driver; then LINSTOR must be empty."""
    for snap in sim.list_snapshots():
        driver.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.split("/")[1]))
    for rd in sim.list_resource_definitions():
        driver.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    assert sim.list_resource_definitions() == [] and sim.list_snapshots() == []
    assert driver.locks() == set()


@pytest.fixture
def driver(sim: Simulator):
    d = start_driver([sim.url or ""])
    yield d
    d.close()


# -- latency beyond the RPC deadline -------------------------------------------------------------

SLOW = 3.0  # seconds the faulted REST call takes; the RPC deadline is 1 s


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_latency_beyond_the_deadline(sim: Simulator, driver: Driver, case: Case) -> None:
    req = case.setup(driver)
    rpc = getattr(driver.ctl, case.method)
    sim.set_latency(SLOW, route=case.route)
    driver.runtime.default_deadline = 1.0
    start = time.monotonic()
    err = rpc_error(rpc, req)
    slow_until = start + SLOW
    driver.runtime.default_deadline = 30.0
    sim.set_latency(0, route=case.route)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED, err.details()
    assert "did not answer before the RPC deadline" in err.details()
    assert "retry" in err.details()
    assert driver.locks() == set()  # released with the answer: the retry is not ABORTED
    # the sidecar retries at once, while LINSTOR still works on the slow request
    reply, seen = until_ok(rpc, req)
    assert "ABORTED" not in seen, seen
    time.sleep(max(0.0, slow_until - time.monotonic()) + 0.3)  # the slow request has landed
    case.check(driver, sim, req)
    reply2 = rpc(req)  # and again: idempotent after the fault
    assert type(reply2) is type(reply)
    _cleanup_and_check(driver, sim)


def test_the_caller_deadline_frees_the_volume_lock_while_linstor_hangs(
        sim: Simulator, driver: Driver) -> None:
    """The CO's deadline (gRPC timeout) ends the RPC while LINSTOR answers nothing for 60 s:
    the driver stops waiting at the same deadline (no hang) and the volume's lock is free."""
    req = create_req(VOL, TWO)
    sim.set_latency(60.0, route=r"^GET ")  # every read hangs (harmless when it lands later)
    err = rpc_error(driver.ctl.CreateVolume, req, timeout=1.0)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: driver.locks() == set(), 15, "the CreateVolume lock released")
    sim.set_latency(0, route=r"^GET ")
    vol, seen = until_ok(driver.ctl.CreateVolume, req)
    assert "ABORTED" not in seen, seen
    assert vol.volume.volume_id == VOL
    _cleanup_and_check(driver, sim)


def test_a_read_timeout_shorter_than_the_deadline_is_unavailable(sim: Simulator) -> None:
    driver = start_driver([sim.url or ""], read_timeout=0.5)
    try:
        sim.set_latency(3.0, route=r"/spawn$")
        err = rpc_error(driver.ctl.CreateVolume, create_req(VOL, TWO))
        sim.set_latency(0, route=r"/spawn$")
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
        assert "/spawn" in err.details() and "did not answer within" in err.details()
        assert "retry" in err.details()
        assert driver.locks() == set()
        until_ok(driver.ctl.CreateVolume, create_req(VOL, TWO))
        time.sleep(3.0)  # the slow spawn lands (and fails: the volume exists)
        assert sim.list_resource_definitions() == [VOL]
        _cleanup_and_check(driver, sim)
    finally:
        driver.close()


# -- 500 without a known ret code ----------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_500_without_a_known_code(sim: Simulator, driver: Driver, case: Case) -> None:
    req = case.setup(driver)
    rpc = getattr(driver.ctl, case.method)
    sim.fail_next(1, route=case.route)
    err = rpc_error(rpc, req)
    assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
    details = err.details()
    assert "failed" in details and "FAIL_UNKNOWN_ERROR" in details
    assert "linstor error-reports show " in details and "retried" in details
    report = details.split("error-reports show ")[1].split("`")[0]
    assert report and f"error reports: {report}" in details  # LINSTOR's report id, named
    assert driver.locks() == set()
    reply, _ = until_ok(rpc, req)
    case.check(driver, sim, req)
    _cleanup_and_check(driver, sim)


# -- connection refused, reset; failover -------------------------------------------------------

def _lifecycle(driver: Driver, sim: Simulator) -> None:
    """Create, publish, expand, snapshot, delete: every RPC through ``driver``."""
    driver.ctl.CreateVolume(create_req(VOL, TWO))
    driver.ctl.ControllerPublishVolume(_publish(driver))
    driver.ctl.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=VOL, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB)))
    driver.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(name=SNAP, source_volume_id=VOL))
    _cleanup_and_check(driver, sim)


def test_refused_first_controller_fails_over_then_all_down_is_unavailable(
        sim: Simulator) -> None:
    dead = f"http://127.0.0.1:{dead_port()}"
    driver = start_driver([dead, sim.url or ""])
    try:
        _lifecycle(driver, sim)  # every RPC works through the second URL
        assert driver.client.endpoints[driver.client._preferred] == sim.url
        sim.stop_serving()  # now both refuse
        err = rpc_error(driver.ctl.CreateVolume, create_req(VOL, TWO))
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
        details = err.details()
        assert "no LINSTOR controller reachable" in details
        assert dead in details and (sim.url or "") in details  # names both endpoints
        assert "connection refused" in details and "LS_CONTROLLERS" in details
        assert driver.locks() == set()
        sim.start_serving()
        _lifecycle(driver, sim)  # the same driver, no restart
    finally:
        driver.close()


def test_reset_first_controller_fails_over(sim: Simulator) -> None:
    """The first URL resets every connection: reads move to the second URL, which is then
    tried first, so every RPC works. (A write whose connection broke is never sent to another
    controller: tests/client/test_client.py::test_post_is_never_resent_after_the_request_left.)"""
    resetter = MuteController(reset=True)
    driver = start_driver([resetter.url, sim.url or ""])
    try:
        _lifecycle(driver, sim)
        assert resetter.requests >= 1
        resetter_only = start_driver([resetter.url])
        try:
            err = rpc_error(resetter_only.ctl.CreateVolume, create_req(VOL, TWO))
            assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
            assert resetter.url in err.details() and "Connection reset by peer" in err.details()
            assert "otherwise it may be restarting" in err.details()
        finally:
            resetter_only.close()
    finally:
        resetter.close()
        driver.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_connection_reset_after_the_request(sim: Simulator, driver: Driver,
                                              case: Case) -> None:
    """LINSTOR applied the request, then the connection broke: UNAVAILABLE, the message says
    it may have been applied, and the retry converges to the same end state."""
    req = case.setup(driver)
    rpc = getattr(driver.ctl, case.method)
    sim.drop_next(1, route=case.route)
    err = rpc_error(rpc, req)
    assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
    assert "broke during" in err.details()
    assert "may or may not have been applied; retry" in err.details()
    assert driver.locks() == set()
    until_ok(rpc, req)
    case.check(driver, sim, req)
    _cleanup_and_check(driver, sim)


# -- the controller restarting mid-RPC ---------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_controller_restarts_mid_rpc(sim: Simulator, driver: Driver, case: Case) -> None:
    """The controller goes down while it holds the RPC's REST call (never applied), stays down
    for a moment, and comes back on the same port with its state."""
    req = case.setup(driver)
    rpc = getattr(driver.ctl, case.method)
    sim.set_latency(30.0, route=case.route)
    before = sim.request_counts()
    key = next(k for k in _route_keys(case))
    answer: dict[str, Any] = {}

    def call() -> None:
        try:
            answer["reply"] = rpc(req)
        except grpc.RpcError as err:
            answer["error"] = err

    worker = threading.Thread(target=call)
    worker.start()
    wait_for(lambda: sim.request_counts().get(key, 0) > before.get(key, 0), 15,
             f"the driver's {key} reached the controller")
    sim.stop_serving()
    worker.join(30)
    assert not worker.is_alive(), "the RPC hangs after the controller went down"
    err = answer.get("error")
    assert err is not None and err.code() is grpc.StatusCode.UNAVAILABLE, answer
    assert "broke during" in err.details() and "retry" in err.details()
    # while it is down: UNAVAILABLE naming the controller, nothing waits
    down = rpc_error(rpc, req)
    assert down.code() is grpc.StatusCode.UNAVAILABLE
    assert "no LINSTOR controller reachable" in down.details() and (sim.url or "") in down.details()
    sim.set_latency(0, route=case.route)
    sim.start_serving()
    until_ok(rpc, req)
    case.check(driver, sim, req)
    _cleanup_and_check(driver, sim)


def _route_keys(case: Case) -> list[str]:
    import re

    from csi_linstor.sim.server import ROUTES

    return [f"{m} {t}" for m, t, _h, _v in ROUTES if re.search(case.route, f"{m} {t}")]


# -- a satellite offline -----------------------------------------------------------------------

def test_satellite_offline_during_placement(sim: Simulator, driver: Driver) -> None:
    for node in ("node-2", "node-3"):
        sim.set_node_online(node, False)
    err = rpc_error(driver.ctl.CreateVolume, create_req(VOL, TWO))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert "Not enough available nodes" in err.details()
    assert "satellites not ONLINE: node-2 (OFFLINE), node-3 (OFFLINE)" in err.details()
    assert "start the satellite" in err.details()
    assert sim.list_resource_definitions() == []  # nothing half-made left behind
    sim.set_node_online("node-3", True)
    vol = driver.ctl.CreateVolume(create_req(VOL, TWO)).volume
    assert _replicas(driver, VOL) == ["node-1", "node-3"]
    assert vol.volume_id == VOL
    sim.set_node_online("node-2", True)
    _cleanup_and_check(driver, sim)


def test_satellite_offline_during_publish(sim: Simulator, driver: Driver) -> None:
    driver.ctl.CreateVolume(create_req(VOL, TWO))
    req = _publish(driver)
    sim.set_node_online(req.node_id, False)
    err = rpc_error(driver.ctl.ControllerPublishVolume, req)
    print(f"\nsim fault: satellite offline, publish -> {err.code().name}: {err.details()}")
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION), \
        err.details()
    assert req.node_id in err.details()
    assert driver.locks() == set()
    sim.set_node_online(req.node_id, True)
    until_ok(driver.ctl.ControllerPublishVolume, req)
    _check_published(driver, sim, req)
    _cleanup_and_check(driver, sim)


def test_satellite_offline_during_delete(sim: Simulator, driver: Driver) -> None:
    driver.ctl.CreateVolume(create_req(VOL, TWO))
    node = _replicas(driver, VOL)[0]
    sim.set_node_online(node, False)
    req = csi_pb2.DeleteVolumeRequest(volume_id=VOL)
    try:
        driver.ctl.DeleteVolume(req)
        outcome = "OK"
    except grpc.RpcError as err:
        outcome = err.code().name
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.ABORTED), err.details()
        assert node in err.details()
    print(f"\nsim fault: satellite offline, delete -> {outcome}")
    sim.set_node_online(node, True)
    until_ok(driver.ctl.DeleteVolume, req)
    assert sim.list_resource_definitions() == [], outcome
    _cleanup_and_check(driver, sim)


# -- a replica not UpToDate during resize ------------------------------------------------------

@pytest.mark.parametrize("state", ["Outdated", "Inconsistent"])
def test_replica_not_uptodate_during_resize(sim: Simulator, driver: Driver, state: str) -> None:
    driver.ctl.CreateVolume(create_req(VOL, TWO))
    node = _replicas(driver, VOL)[1]
    sim.set_disk_state(VOL, node, state)
    req = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=VOL, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB))
    err = rpc_error(driver.ctl.ControllerExpandVolume, req)
    assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
    assert f"not UpToDate ({node}: {state})" in err.details()
    assert "retry when it has synced" in err.details()
    _check_size(driver, GIB)  # nothing grew
    sim.set_disk_state(VOL, node, None)  # resynced
    reply = driver.ctl.ControllerExpandVolume(req)
    assert reply.capacity_bytes == 2 * GIB
    _check_expanded(driver, sim, req)
    _cleanup_and_check(driver, sim)


def _check_size(driver: Driver, size: int) -> None:
    vd = driver.client.get(f"/v1/resource-definitions/{VOL}/volume-definitions/0", deadline=dl())
    assert vd["size_kib"] == size // 1024


# -- a 5xx with no LINSTOR body (a proxy in front of the controller) ----------------------------

def test_a_proxy_502_without_a_linstor_body(sim: Simulator) -> None:
    """What a reverse proxy (kube-rbac-proxy, an ingress) answers while LINSTOR behind it is
    down: 502 with an HTML page, no ret code. UNAVAILABLE, the status and what to look at."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Proxy(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    driver = start_driver([f"http://127.0.0.1:{proxy.server_address[1]}"])
    try:
        err = rpc_error(driver.ctl.CreateVolume, create_req(VOL, TWO))
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
        assert "HTTP 502" in err.details() and "Bad Gateway" in err.details()
        assert "proxy in front of it" in err.details() and "retried" in err.details()
        assert driver.locks() == set()
    finally:
        proxy.shutdown()
        proxy.server_close()
        driver.close()
    # the same requests through a working controller succeed
    good = start_driver([sim.url or ""])
    try:
        _lifecycle(good, sim)
    finally:
        good.close()

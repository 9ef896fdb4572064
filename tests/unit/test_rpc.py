"""The RPC wrapper: secrets never logged, errors mapped once, locks answer ABORTED."""

from __future__ import annotations

import logging
import threading

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.errors import NotFound
from csi_linstor.rpc import KeyLocks, Runtime, rpc, strip_secrets

SECRET = "s3cr3t-value-do-not-log"


class Aborted(Exception):
    pass


class FakeContext:
    """Just enough of grpc.ServicerContext: abort records the status and raises."""

    def __init__(self, remaining: float | None = None) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.aborts = 0
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborts += 1
        self.code, self.details = code, details
        raise Aborted(details)


class Servicer:
    def __init__(self) -> None:
        self.runtime = Runtime()
        self.started = threading.Event()
        self.release = threading.Event()
        self.seen_deadline = None

    @rpc(required=("volume_id", "staging_target_path", "volume_capability"))
    def NodeStageVolume(self, request, call):
        self.seen_deadline = call.deadline
        if request.volume_id == "boom":
            raise ZeroDivisionError("division by zero in a buggy helper")
        if request.volume_id == "missing":
            raise NotFound("volume missing does not exist")
        return csi_pb2.NodeStageVolumeResponse()

    @rpc(lock=lambda r: f"vol:{r.volume_id}")
    def NodeUnstageVolume(self, request, call):
        self.started.set()
        self.release.wait(5)
        return csi_pb2.NodeUnstageVolumeResponse()


def stage_request(volume_id: str = "pvc-1") -> csi_pb2.NodeStageVolumeRequest:
    return csi_pb2.NodeStageVolumeRequest(
        volume_id=volume_id,
        staging_target_path="/stage",
        volume_capability=csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
            access_mode=csi_pb2.VolumeCapability.AccessMode(mode=1),
        ),
        secrets={"password": SECRET, "token": SECRET},
        volume_context={"linstor.csi.linbit.com/mount-options": "noatime"},
    )


def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="csi_linstor")
    servicer = Servicer()
    servicer.NodeStageVolume(stage_request(), FakeContext())
    assert "NodeStageVolume" in caplog.text
    assert "noatime" in caplog.text  # the request was logged...
    assert SECRET not in caplog.text  # ...without its secrets
    assert "***stripped***" in caplog.text


def test_strip_secrets_reaches_nested_messages() -> None:
    req = csi_pb2.CreateVolumeRequest(name="x", secrets={"k": SECRET})
    group = csi_pb2.CreateVolumeGroupSnapshotRequest(name="g", secrets={"k": SECRET})
    for msg in (req, group):
        stripped = strip_secrets(msg)
        assert SECRET not in str(stripped)
        assert SECRET in str(msg)  # the original is untouched


def test_unexpected_exception_is_internal_with_request_id(caplog) -> None:
    caplog.set_level(logging.INFO, logger="csi_linstor")
    ctx = FakeContext()
    with pytest.raises(Aborted):
        Servicer().NodeStageVolume(stage_request("boom"), ctx)
    assert ctx.code is grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in ctx.details and "request" in ctx.details
    assert ctx.aborts == 1
    assert "Traceback" in caplog.text  # the traceback is in the log


def test_typed_error_gives_its_code_exactly_once() -> None:
    ctx = FakeContext()
    with pytest.raises(Aborted):
        Servicer().NodeStageVolume(stage_request("missing"), ctx)
    assert ctx.code is grpc.StatusCode.NOT_FOUND
    assert ctx.details == "volume missing does not exist"
    assert ctx.aborts == 1


@pytest.mark.parametrize("field", ["volume_id", "staging_target_path", "volume_capability"])
def test_required_fields(field: str) -> None:
    req = stage_request()
    req.ClearField(field)
    ctx = FakeContext()
    with pytest.raises(Aborted):
        Servicer().NodeStageVolume(req, ctx)
    assert ctx.code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in ctx.details


def test_deadline_follows_the_caller() -> None:
    servicer = Servicer()
    servicer.NodeStageVolume(stage_request(), FakeContext(remaining=7.0))
    assert 6.0 < servicer.seen_deadline.remaining() <= 7.0
    servicer.NodeStageVolume(stage_request(), FakeContext(remaining=None))
    assert servicer.seen_deadline.remaining() > 60  # bounded default when the caller set none


def test_same_volume_in_flight_answers_aborted_at_once() -> None:
    servicer = Servicer()
    req = csi_pb2.NodeUnstageVolumeRequest(volume_id="pvc-1", staging_target_path="/s")
    first = threading.Thread(target=servicer.NodeUnstageVolume, args=(req, FakeContext()))
    first.start()
    assert servicer.started.wait(5)
    ctx = FakeContext()
    with pytest.raises(Aborted):
        servicer.NodeUnstageVolume(req, ctx)
    assert ctx.code is grpc.StatusCode.ABORTED
    other = csi_pb2.NodeUnstageVolumeRequest(volume_id="pvc-2", staging_target_path="/s")
    servicer.release.set()  # a different volume is not blocked
    servicer.NodeUnstageVolume(other, FakeContext())
    first.join(5)
    assert servicer.runtime.locks.held() == set()  # released and forgotten


def test_keylocks_release_on_error() -> None:
    locks = KeyLocks()
    with pytest.raises(RuntimeError), locks.hold(["a"]):
        raise RuntimeError("x")
    with locks.hold(["a"]):
        pass


def test_metrics_count_calls_and_latency_per_method_and_code() -> None:
    from prometheus_client import generate_latest

    from csi_linstor.rpc import Metrics

    servicer = Servicer()
    servicer.runtime = Runtime(metrics=Metrics())
    servicer.NodeStageVolume(stage_request(), FakeContext())
    with pytest.raises(Aborted):
        servicer.NodeStageVolume(stage_request("missing"), FakeContext())
    text = generate_latest(servicer.runtime.metrics.registry).decode()
    assert 'csi_linstor_rpc_calls_total{code="OK",method="NodeStageVolume"} 1.0' in text
    assert 'csi_linstor_rpc_calls_total{code="NOT_FOUND",method="NodeStageVolume"} 1.0' in text
    assert 'csi_linstor_rpc_duration_seconds_count{code="OK",method="NodeStageVolume"} 1.0' in text

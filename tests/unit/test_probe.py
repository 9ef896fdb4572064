"""Probe is the driver's own health; a LINSTOR outage shows in a gauge, a log line and UNAVAILABLE."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.app import Driver
from csi_linstor.config import Config, parse_endpoint
from csi_linstor.sim import SimConfig, Simulator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gauge(port: int) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("csi_linstor_linstor_reachable "):
            return float(line.split()[1])
    return None


def _wait(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.05)


def test_linstor_outage_keeps_probe_ready_and_reports_it_elsewhere(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(SimConfig(nodes=1, device_dir=tmp_path / "dev", state_dir=tmp_path / "st"))
    url = sim.start()
    port = _free_port()
    cfg = Config(csi_endpoint=parse_endpoint(f"unix://{tmp_path}/csi.sock"), mode="controller",
                 linstor_endpoints=(url,), metrics_address=f"127.0.0.1:{port}",
                 probe_interval=0.1, linstor_connect_timeout=0.5, linstor_read_timeout=1.0)
    driver = Driver(cfg)
    caplog.set_level(logging.INFO, logger="csi_linstor.identity")
    driver.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/csi.sock")
    try:
        identity = csi_pb2_grpc.IdentityStub(channel)
        _wait(lambda: _gauge(port) == 1.0)
        assert identity.Probe(csi_pb2.ProbeRequest(), timeout=5).ready.value
        sim.set_drop_rate(1.0)  # LINSTOR goes away: every connection closes unanswered
        _wait(lambda: _gauge(port) == 0.0)
        # The livenessprobe sidecar must not restart the plugin: Probe stays ready.
        assert identity.Probe(csi_pb2.ProbeRequest(), timeout=5).ready.value
        down = [r for r in caplog.records if "LINSTOR unreachable" in r.getMessage()]
        assert len(down) == 1 and url in down[0].getMessage()
        time.sleep(0.3)  # more failed checks: still one log line, not one per check
        assert len([r for r in caplog.records if "LINSTOR unreachable" in r.getMessage()]) == 1
        # RPCs that need LINSTOR say so, with the code the sidecars retry on.
        with pytest.raises(grpc.RpcError) as err:
            csi_pb2_grpc.ControllerStub(channel).CreateVolume(csi_pb2.CreateVolumeRequest(
                name="pvc-outage", volume_capabilities=[csi_pb2.VolumeCapability(
                    mount=csi_pb2.VolumeCapability.MountVolume(),
                    access_mode=csi_pb2.VolumeCapability.AccessMode(
                        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))]),
                timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "LINSTOR" in err.value.details()
        sim.set_drop_rate(0.0)
        _wait(lambda: _gauge(port) == 1.0)
        assert any("LINSTOR reachable again" in r.getMessage() for r in caplog.records)
    finally:
        channel.close()
        driver.stop()
        sim.stop()

"""No secret ever reaches a log line or the metrics: every csi_secret field of every request, the
LINSTOR bearer token and the TLS private key, at debug level.

The driver runs as `csi-linstor serve` does in production (a separate process, all services,
metrics on), against a simulator in bearer-token mode. Every RPC that has a csi_secret field is
called with a unique marker in each such field (found from csi.proto's field options, so a
secret field added to the spec is covered without editing this test); then the whole log and the
/metrics page are searched for every marker and for the token.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from tests.real_linstor import REPO

SERVICES = {"Controller": csi_pb2_grpc.ControllerStub, "Node": csi_pb2_grpc.NodeStub,
            "GroupController": csi_pb2_grpc.GroupControllerStub}


def _is_secret(field: _descriptor.FieldDescriptor) -> bool:
    opts = field.GetOptions()
    return bool(opts.HasExtension(csi_pb2.csi_secret) and opts.Extensions[csi_pb2.csi_secret])


def _fill(msg: Message, markers: list[str]) -> None:
    """Put a fresh marker into every csi_secret field of ``msg`` (at any depth)."""
    for field in msg.DESCRIPTOR.fields:
        if _is_secret(field):
            m = f"SECRET-{uuid.uuid4().hex}"
            markers.append(m)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                getattr(msg, field.name)["key"] = m
            elif field.type == field.TYPE_STRING and not field.is_repeated:
                setattr(msg, field.name, m)
            continue
        if field.type == field.TYPE_MESSAGE and not field.is_repeated \
                and not field.message_type.GetOptions().map_entry:
            _fill(getattr(msg, field.name), markers)


def _secret_calls() -> list[tuple[str, str, Any]]:
    """(service, method, request type) for every RPC whose request carries a secret."""
    out = []
    for svc in csi_pb2.DESCRIPTOR.services_by_name.values():
        if svc.name not in SERVICES:
            continue
        for m in svc.methods:
            probe: list[str] = []
            cls = getattr(csi_pb2, m.input_type.name)
            _fill(cls(), probe)
            if probe:
                out.append((svc.name, m.name, cls))
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str, str]]:
    base = tmp_path_factory.mktemp("secrets")
    token = f"TOKEN-{uuid.uuid4().hex}"
    (base / "token").write_text(token + "\n")
    sim = subprocess.Popen(
        [sys.executable, "-m", "csi_linstor.cli", "sim", "--listen", "127.0.0.1:0", "--nodes",
         "2", "--device-dir", str(base / "dev"), "--state-dir", str(base / "state"),
         "--bearer-token-file", str(base / "token")],
        stdout=subprocess.PIPE, stderr=open(base / "sim.log", "wb"), cwd=REPO)
    assert sim.stdout is not None
    url = sim.stdout.readline().decode().strip()
    assert url.startswith("http://"), url
    sock = base / "csi.sock"
    log = base / "driver.log"
    port = 20000 + (uuid.uuid4().int % 10000)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.cli", "serve", "--linstor-endpoint", url,
             "--bearer-token", str(base / "token"), "--node", "node-1",
             "--csi-endpoint", f"unix://{sock}", "--kubelet-dir", str(base / "kubelet"),
             "--metrics-address", f"127.0.0.1:{port}", "--log-level", "debug"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    try:
        yield base, log, f"http://127.0.0.1:{port}/metrics", token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sim.terminate()
        sim.wait(30)


def test_every_secret_field_is_covered() -> None:
    calls = {f"{s}.{m}" for s, m, _ in _secret_calls()}
    # the RPCs csi.proto v1.12 gives secrets to; a new one appears here by itself
    assert {"Controller.CreateVolume", "Controller.DeleteVolume", "Node.NodeStageVolume",
            "Node.NodePublishVolume", "Controller.CreateSnapshot"} <= calls, calls


def test_no_secret_in_any_log_line_or_metric(driver: tuple[Path, Path, str, str]) -> None:
    base, log, metrics_url, token = driver
    markers: list[str] = []
    with grpc.insecure_channel(f"unix://{base / 'csi.sock'}") as ch:
        for service, method, cls in _secret_calls():
            req = cls()
            _fill(req, markers)
            for name in ("volume_id", "source_volume_id", "snapshot_id", "node_id", "name"):
                if name in req.DESCRIPTOR.fields_by_name and \
                        req.DESCRIPTOR.fields_by_name[name].type == _descriptor.FieldDescriptor.TYPE_STRING:
                    setattr(req, name, "pvc-secret-test")
            try:
                getattr(SERVICES[service](ch), method)(req, timeout=20)
            except grpc.RpcError:
                pass  # the answer does not matter here; what was logged does
    time.sleep(0.5)
    text = log.read_text(errors="replace")
    metrics = requests.get(metrics_url, timeout=10).text
    assert "request:" in text, "debug request logging did not run: the test would prove nothing"
    assert len(markers) >= 10, markers
    leaked = [m for m in [*markers, token] if m in text or m in metrics]
    assert not leaked, f"secrets in the log or metrics: {leaked}"
    # and the redaction is visible where a secret was sent
    assert re.search(r"\*\*\*stripped\*\*\*", text)


def test_snapshotter_secret_keys_never_logged(driver: tuple[Path, Path, str, str]) -> None:
    """The S3 access and secret keys of a VolumeSnapshotClass's snapshotter secret go to LINSTOR
    (the remote's body) and nowhere else: not into the log at debug level, not into the metrics,
    not into an error message, on success and on a shipment that fails."""
    from tests.s3server import REGION, S3Server

    base, log, metrics_url, _token = driver
    s3 = S3Server()
    try:
        s3.make_bucket("secrets-bucket")
        access, secret = f"AK{uuid.uuid4().hex}", f"SK{uuid.uuid4().hex}"
        ns = "snap.linstor.csi.linbit.com/"
        params = {ns + "type": "S3", ns + "remote-name": "secret-test", ns + "s3-endpoint": s3.url,
                  ns + "s3-bucket": "secrets-bucket", ns + "s3-signing-region": REGION,
                  ns + "s3-use-path-style": "true",
                  "csi.storage.k8s.io/snapshotter-secret-name": "s3-keys",
                  "csi.storage.k8s.io/snapshotter-secret-namespace": "default"}
        details = []
        with grpc.insecure_channel(f"unix://{base / 'csi.sock'}") as ch:
            ctl = csi_pb2_grpc.ControllerStub(ch)
            vol = ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
                name="pvc-keys", capacity_range=csi_pb2.CapacityRange(required_bytes=8 << 20),
                parameters={"placementCount": "1"},
                volume_capabilities=[csi_pb2.VolumeCapability(
                    block=csi_pb2.VolumeCapability.BlockVolume(),
                    access_mode=csi_pb2.VolumeCapability.AccessMode(mode=1))]),
                timeout=60).volume
            snap = ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                name="snap-keys", source_volume_id=vol.volume_id, parameters=params,
                secrets={"access-key": access, "secret-key": secret}), timeout=60).snapshot
            assert snap.ready_to_use and snap.snapshot_id.startswith("S3://secret-test/")
            # the keys change and the bucket is gone: the remote is updated, shipping fails
            params[ns + "s3-bucket"] = "no-such-bucket"
            access2, secret2 = f"AK{uuid.uuid4().hex}", f"SK{uuid.uuid4().hex}"
            with pytest.raises(grpc.RpcError) as err:
                ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                    name="snap-keys-2", source_volume_id=vol.volume_id, parameters=params,
                    secrets={"access-key": access2, "secret-key": secret2}), timeout=60)
            details.append(err.value.details() or "")
    finally:
        s3.stop()
    time.sleep(0.5)
    text = log.read_text(errors="replace")
    metrics = requests.get(metrics_url, timeout=10).text
    assert "no-such-bucket" in details[0], details  # failed where it should: in the upload
    assert "CreateSnapshot" in text and "secret-test" in text, "the calls were not logged"
    leaked = [k for k in (access, secret, access2, secret2)
              if k in text or k in metrics or any(k in d for d in details)]
    assert not leaked, f"snapshotter secrets in the log, metrics or errors: {leaked}"

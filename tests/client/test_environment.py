"""The client reads the environment once at start (proxies, NO_PROXY, CA bundle, netrc) and still
honours each of them, as ``requests`` would when it re-read them on every call."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorUnavailable
from csi_linstor.sim import SimConfig, Simulator
from tests.pki import make_pki

ENV_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
            "ALL_PROXY", "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC")


class _Recorder(ThreadingHTTPServer):
    """A stand-in proxy / controller that records each request line and Authorization."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.seen.append((self.requestline, self.headers.get("Authorization")))
        data = json.dumps({"version": "1.33.3", "rest_api_version": "1.27.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # never the user's own ~/.netrc
    return monkeypatch


@pytest.fixture
def recorder():
    server = _Recorder()
    yield server
    server.shutdown()
    server.server_close()


def test_http_proxy_from_the_environment_is_used(clean_env: pytest.MonkeyPatch,
                                                 recorder: _Recorder) -> None:
    clean_env.setenv("HTTP_PROXY", recorder.url)
    client = LinstorClient(["http://linstor.invalid:3370"])
    try:
        client.get("/v1/controller/version", deadline=Deadline(5))
    finally:
        client.close()
    # a proxy gets the absolute URL: the request went through it, not to the controller
    assert recorder.seen[0][0].startswith("GET http://linstor.invalid:3370/v1/controller/version")


def test_no_proxy_bypasses_the_proxy(clean_env: pytest.MonkeyPatch, recorder: _Recorder) -> None:
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    client = LinstorClient([recorder.url])
    try:
        assert client.version(Deadline(5))["version"] == "1.33.3"
    finally:
        client.close()
    assert recorder.seen[0][0].startswith("GET /v1/controller/version")


def test_netrc_credentials_are_sent(clean_env: pytest.MonkeyPatch, recorder: _Recorder,
                                    tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login admin password s3cret\n")
    netrc.chmod(0o600)
    clean_env.setenv("NETRC", str(netrc))
    client = LinstorClient([recorder.url])
    try:
        client.get("/v1/controller/version", deadline=Deadline(5))
    finally:
        client.close()
    assert recorder.seen[0][1] == "Basic YWRtaW46czNjcmV0"  # admin:s3cret


def test_the_environment_is_read_once_at_start(clean_env: pytest.MonkeyPatch,
                                               recorder: _Recorder) -> None:
    client = LinstorClient([recorder.url])
    try:
        clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # set after start: not used
        client.get("/v1/controller/version", deadline=Deadline(5))
    finally:
        client.close()
    assert recorder.seen[0][0].startswith("GET /v1/controller/version")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_ca_bundle_variable_verifies_the_controller(clean_env: pytest.MonkeyPatch,
                                                    pki: dict[str, Path], tmp_path: Path) -> None:
    sim = Simulator(SimConfig(nodes=1, device_dir=tmp_path / "dev", state_dir=tmp_path / "state",
                              real_devices=False, tls_cert=pki["server.crt"],
                              tls_key=pki["server.key"], tls_client_ca=pki["ca.crt"]))
    sim.start()
    try:
        url = sim.url
        assert url is not None
        cert = {"user_certificate": str(pki["client.crt"]), "user_key": str(pki["client.key"])}
        # no LS_ROOT_CA and no bundle: the system store does not trust the test CA
        untrusting = LinstorClient([url], **cert)
        with pytest.raises(LinstorUnavailable):
            untrusting.get("/v1/nodes", deadline=Deadline(5))
        untrusting.close()
        clean_env.setenv("REQUESTS_CA_BUNDLE", str(pki["ca.crt"]))
        trusting = LinstorClient([url], **cert)
        try:
            assert trusting.get("/v1/nodes", deadline=Deadline(5))[0]["name"] == "node-1"
        finally:
            trusting.close()
    finally:
        sim.stop()

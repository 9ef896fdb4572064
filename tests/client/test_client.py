"""The LINSTOR REST client against the simulator: decoding, errors, deadlines, failover, TLS."""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
import time
from pathlib import Path

import grpc
import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.errors import DeadlineExceeded
from csi_linstor.linstor import consts
from csi_linstor.linstor.client import LinstorClient, normalize_url
from csi_linstor.linstor.errors import ApiCallRc, LinstorError, LinstorUnavailable

# -- ret_code decoding ----------------------------------------------------------------------


def test_real_wire_value_is_fail_exists_rsc_dfn() -> None:
    wire = -4611686018406940171  # FAIL_EXISTS_RSC_DFN | MASK_CRT | MASK_RSC_DFN, signed
    assert consts.rc_is(wire, consts.FAIL_EXISTS_RSC_DFN)
    assert not consts.rc_is(wire, consts.FAIL_EXISTS_RSC)
    assert consts.is_error(wire) and not consts.is_warning(wire)
    assert consts.rc_name(wire) == "FAIL_EXISTS_RSC_DFN"
    assert consts.to_signed(0xC0000000013801F5) == wire


def test_warning_and_info_are_not_errors() -> None:
    warn = consts.to_signed(consts.WARN_NOT_FOUND | consts.MASK_DEL | consts.MASK_RSC_DFN)
    assert consts.rc_is(warn, consts.WARN_NOT_FOUND) and consts.is_warning(warn)
    assert not consts.is_error(warn)
    info = consts.INFO_NO_RSC_SPAWNED
    # same code bits as FAIL_SIGN_IN, told apart by the type bits
    assert consts.rc_is(info, consts.INFO_NO_RSC_SPAWNED)
    assert not consts.rc_is(info, consts.FAIL_SIGN_IN)


def test_error_message_carries_cause_correction_and_report_ids() -> None:
    rc = ApiCallRc.from_json({"ret_code": consts.to_signed(consts.FAIL_UNKNOWN_ERROR),
                              "message": "boom", "cause": "disk on fire",
                              "correction": "call the fire brigade",
                              "error_report_ids": ["5F3A-000001"]})
    err = LinstorError("POST", "/v1/x", 500, [rc])
    for fragment in ("boom", "disk on fire", "call the fire brigade", "5F3A-000001"):
        assert fragment in err.message


@pytest.mark.parametrize(
    ("url", "tls", "expect"),
    [
        ("ctl", False, "http://ctl:3370"),
        ("ctl", True, "https://ctl:3371"),
        ("http://ctl", False, "http://ctl:3370"),
        ("https://ctl", False, "https://ctl:3371"),
        ("linstor://ctl", False, "http://ctl:3370"),
        ("linstor+ssl://ctl", False, "https://ctl:3371"),
        ("http://10.0.0.1:8080/", False, "http://10.0.0.1:8080"),
    ],
)
def test_url_normalisation(url: str, tls: bool, expect: str) -> None:
    assert normalize_url(url, tls) == expect


# -- against the simulator ------------------------------------------------------------------


def test_missing_object_is_not_found_but_missing_endpoint_is_not(sim) -> None:
    client = LinstorClient([sim.url])
    with pytest.raises(LinstorError) as missing:
        client.get("/v1/resource-definitions/nope", deadline=Deadline(5))
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    assert missing.value.is_not_found()
    with pytest.raises(LinstorError) as no_route:
        client.get("/v1/no-such-endpoint", deadline=Deadline(5))
    assert not no_route.value.is_not_found()  # a 404 for "no such endpoint" is not "no object"
    assert no_route.value.code is not grpc.StatusCode.NOT_FOUND


def test_exists_errors_and_delete_warnings(sim) -> None:
    client = LinstorClient([sim.url])
    d = Deadline(10)
    client.post("/v1/resource-groups", deadline=d, body={"name": "rg1"})
    with pytest.raises(LinstorError) as exists:
        client.post("/v1/resource-groups", deadline=d, body={"name": "RG1"})  # case-insensitive
    assert exists.value.has(consts.FAIL_EXISTS_RSC_GRP)
    assert exists.value.code is grpc.StatusCode.ALREADY_EXISTS
    warnings = client.delete("/v1/resource-definitions/gone", deadline=d)  # 200 + WARN_NOT_FOUND
    assert any(rc.is_(consts.WARN_NOT_FOUND) for rc in warnings)


def test_version_gating(sim) -> None:
    client = LinstorClient([sim.url])
    assert client.rest_api_version(Deadline(5)) >= (1, 20)
    assert client.supports("1.0.0", Deadline(5))
    assert not client.supports("99.0", Deadline(5))


def test_slow_controller_gives_a_timeout_not_a_hang(sim) -> None:
    client = LinstorClient([sim.url])
    sim.set_latency(3.0)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.get("/v1/nodes", deadline=Deadline(0.5))
    assert time.monotonic() - start < 2.0
    # a read timeout shorter than the deadline: UNAVAILABLE ("did not answer"), also bounded
    quick = LinstorClient([sim.url], read_timeout=0.3)
    with pytest.raises(LinstorUnavailable, match="did not answer"):
        quick.get("/v1/nodes", deadline=Deadline(10))
    sim.reset_faults()


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


def test_failover_to_the_next_controller(sim) -> None:
    client = LinstorClient([f"http://127.0.0.1:{_dead_port()}", sim.url])
    nodes = client.get("/v1/nodes", deadline=Deadline(5))
    assert {n["name"] for n in nodes} == {"node-1", "node-2", "node-3"}
    # a POST also fails over when the connection was refused (the request never left)
    client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "rgf"})
    assert client.endpoints[client._preferred] == sim.url


def test_all_controllers_down_is_unavailable_and_names_them() -> None:
    a, b = _dead_port(), _dead_port()
    client = LinstorClient([f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"])
    with pytest.raises(LinstorUnavailable) as err:
        client.get("/v1/nodes", deadline=Deadline(5))
    assert str(a) in err.value.message and str(b) in err.value.message
    assert err.value.code is grpc.StatusCode.UNAVAILABLE


class _Dropper(threading.Thread):
    """Accepts connections, reads the request, closes without answering; counts requests."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.requests = 0

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            self.requests += 1
            conn.close()


def test_post_is_never_resent_after_the_request_left(sim) -> None:
    dropper = _Dropper()
    dropper.start()
    client = LinstorClient([f"http://127.0.0.1:{dropper.port}", sim.url])
    with pytest.raises(LinstorUnavailable, match="may or may not have been applied"):
        client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "once"})
    assert dropper.requests == 1
    assert sim.request_counts().get("POST /v1/resource-groups", 0) == 0
    with pytest.raises(LinstorError):  # it was not sent to the second controller either
        client.get("/v1/resource-groups/once", deadline=Deadline(5))
    dropper.sock.close()


# -- TLS and bearer tokens ------------------------------------------------------------------


def _make_pki(tmp: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("test-ca")).issuer_name(name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage, san: bool):
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    out: dict[str, Path] = {}

    def write(label: str, k, cert) -> None:
        out[label + ".crt"] = tmp / f"{label}.crt"
        out[label + ".crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            out[label + ".key"] = tmp / f"{label}.key"
            out[label + ".key"].write_bytes(k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))

    write("ca", None, ca)
    write("server", *leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, True))
    write("client", *leaf("linstor-csi-controller", ExtendedKeyUsageOID.CLIENT_AUTH, False))
    return out


class _TlsProxy(threading.Thread):
    """Terminates mutual TLS on loopback and forwards the bytes to the (plain HTTP) simulator."""

    def __init__(self, pki: dict[str, Path], upstream_port: int) -> None:
        super().__init__(daemon=True)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki["server.crt"], pki["server.key"])
        self.ctx.load_verify_locations(pki["ca.crt"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED  # like LINSTOR with a truststore
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.upstream = upstream_port
        self.client_names: list[str] = []

    def run(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        cert = conn.getpeercert() or {}
        self.client_names.append(dict(x[0] for x in cert.get("subject", ()))["commonName"])
        up = socket.create_connection(("127.0.0.1", self.upstream))

        def pump(src, dst) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, conn), daemon=True).start()
        pump(conn, up)


def test_mutual_tls_with_a_test_ca(sim, tmp_path: Path) -> None:
    pki = _make_pki(tmp_path)
    proxy = _TlsProxy(pki, int(sim.url.rsplit(":", 1)[1]))
    proxy.start()
    url = f"https://127.0.0.1:{proxy.port}"
    # PEM contents (as LS_ROOT_CA / LS_USER_CERTIFICATE / LS_USER_KEY carry them)
    client = LinstorClient([url], root_ca=pki["ca.crt"].read_text(),
                           user_certificate=pki["client.crt"].read_text(),
                           user_key=pki["client.key"].read_text())
    assert client.version(Deadline(5))["rest_api_version"]
    assert proxy.client_names[-1] == "linstor-csi-controller"
    client.close()
    # without a client certificate the server refuses: UNAVAILABLE, not a hang
    no_cert = LinstorClient([url], root_ca=str(pki["ca.crt"]))
    with pytest.raises(LinstorUnavailable):
        no_cert.get("/v1/nodes", deadline=Deadline(5))
    # an untrusted server certificate is refused too
    wrong_ca = LinstorClient([url], root_ca=str(pki["client.crt"]),
                             user_certificate=str(pki["client.crt"]),
                             user_key=str(pki["client.key"]))
    with pytest.raises(LinstorUnavailable):
        wrong_ca.get("/v1/nodes", deadline=Deadline(5))
    proxy.sock.close()


def test_bearer_token_is_sent_and_json_form_accepted(tmp_path: Path) -> None:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"version": "1.33.3", "rest_api_version": "1.27.0"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for content, token in (("plain-token\n", "plain-token"),
                               ('{"token": "json-token"}', "json-token")):
            path = tmp_path / "token"
            path.write_text(content)
            LinstorClient([url], bearer_token_file=path).version(Deadline(5))
            assert seen[-1] == f"Bearer {token}"
    finally:
        server.shutdown()


def test_unknown_5xx_is_unavailable_so_sidecars_retry(sim) -> None:
    client = LinstorClient([sim.url])
    sim.set_failure_rate(1.0, route="/v1/resource-groups")
    try:
        with pytest.raises(LinstorError) as err:
            client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "x5"})
    finally:
        sim.reset_faults()
    assert err.value.status == 500
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
    assert err.value.first is not None and err.value.first.error_report_ids  # named in the message
    assert err.value.first.error_report_ids[0] in err.value.message


def test_command_error_message_is_one_line() -> None:
    from csi_linstor.errors import CommandError

    err = CommandError(["mount", "-o", "bogus", "/dev/x", "/mnt"], 32,
                       "mount: /mnt: wrong fs type, bad option.\n       dmesg(1) may have more.\n")
    assert "\n" not in err.message
    assert "bad option. dmesg(1) may have more." in err.message

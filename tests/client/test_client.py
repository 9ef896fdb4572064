"""The LINSTOR REST client against the simulator: decoding, errors, deadlines, failover, HTTPS
with a test CA and client certificates, bearer tokens, redirects."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.errors import DeadlineExceeded, FailedPrecondition
from csi_linstor.linstor import consts
from csi_linstor.linstor.client import LinstorClient, normalize_url
from csi_linstor.linstor.errors import ApiCallRc, LinstorError, LinstorUnavailable
from csi_linstor.sim import SimConfig, Simulator
from tests.netfakes import MuteController, dead_port, raw_server
from tests.pki import make_pki

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
    assert client.rest_api_version(Deadline(5)) < (99,)


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


def test_failover_to_the_next_controller(sim) -> None:
    client = LinstorClient([f"http://127.0.0.1:{dead_port()}", sim.url])
    nodes = client.get("/v1/nodes", deadline=Deadline(5))
    assert {n["name"] for n in nodes} == {"node-1", "node-2", "node-3"}
    # a POST also fails over when the connection was refused (the request never left)
    client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "rgf"})
    assert client.endpoints[client._preferred] == sim.url


def test_all_controllers_down_is_unavailable_and_names_them() -> None:
    a, b = dead_port(), dead_port()
    client = LinstorClient([f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"])
    with pytest.raises(LinstorUnavailable) as err:
        client.get("/v1/nodes", deadline=Deadline(5))
    assert str(a) in err.value.message and str(b) in err.value.message
    assert err.value.code is grpc.StatusCode.UNAVAILABLE


def test_post_is_never_resent_after_the_request_left(sim) -> None:
    dropper = MuteController()
    client = LinstorClient([dropper.url, sim.url])
    with pytest.raises(LinstorUnavailable, match="may or may not have been applied"):
        client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "once"})
    assert dropper.requests == 1
    assert sim.request_counts().get("POST /v1/resource-groups", 0) == 0
    with pytest.raises(LinstorError):  # it was not sent to the second controller either
        client.get("/v1/resource-groups/once", deadline=Deadline(5))
    dropper.close()


# -- TLS and bearer tokens ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_sim(tmp_path: Path, pki: dict[str, Path]):
    """The simulator serving HTTPS and demanding client certificates (LINSTOR + truststore)."""
    simulator = Simulator(SimConfig(nodes=3, device_dir=tmp_path / "dev",
                                    state_dir=tmp_path / "state", real_devices=False,
                                    tls_cert=pki["server.crt"], tls_key=pki["server.key"],
                                    tls_client_ca=pki["ca.crt"]))
    simulator.start()
    yield simulator
    simulator.stop()


def test_mutual_tls_with_a_test_ca(tls_sim: Simulator, pki: dict[str, Path]) -> None:
    url = tls_sim.url
    assert url is not None and url.startswith("https://127.0.0.1:")
    # PEM contents, as LS_ROOT_CA / LS_USER_CERTIFICATE / LS_USER_KEY carry them
    client = LinstorClient([url], root_ca=pki["ca.crt"].read_text(),
                           user_certificate=pki["client.crt"].read_text(),
                           user_key=pki["client.key"].read_text())
    pools = client.get("/v1/view/storage-pools", deadline=Deadline(5))
    assert {p["node_name"] for p in pools} == {"node-1", "node-2", "node-3"}
    assert tls_sim.client_common_names[-1] == "linstor-csi-controller"
    client.close()
    # file paths work the same way
    by_path = LinstorClient([url], root_ca=str(pki["ca.crt"]),
                            user_certificate=str(pki["client.crt"]),
                            user_key=str(pki["client.key"]))
    assert by_path.version(Deadline(5))["rest_api_version"]
    by_path.close()


def test_missing_client_certificate_or_untrusted_server_is_unavailable_not_a_hang(
        tls_sim: Simulator, pki: dict[str, Path]) -> None:
    url = tls_sim.url
    assert url is not None
    no_cert = LinstorClient([url], root_ca=str(pki["ca.crt"]))
    start = time.monotonic()
    with pytest.raises(LinstorUnavailable) as err:
        no_cert.get("/v1/nodes", deadline=Deadline(5))
    assert time.monotonic() - start < 5
    assert url.split("//")[1] in err.value.message  # names the controller it could not reach
    # the client does not trust a server certificate signed by another CA
    wrong_ca = LinstorClient([url], root_ca=str(pki["client.crt"]),
                             user_certificate=str(pki["client.crt"]),
                             user_key=str(pki["client.key"]))
    with pytest.raises(LinstorUnavailable):
        wrong_ca.get("/v1/nodes", deadline=Deadline(5))
    # and a POST that failed in the handshake was never applied
    with pytest.raises(LinstorUnavailable):
        no_cert.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "tlsrg"})
    assert tls_sim.request_counts().get("POST /v1/resource-groups", 0) == 0
    assert tls_sim.app.tls_failures >= 2  # the server refused both certificate-less attempts


def test_http_port_redirecting_to_https_gives_a_clear_error_and_no_post_as_get(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    simulator = Simulator(SimConfig(nodes=1, device_dir=tmp_path / "dev",
                                    state_dir=tmp_path / "state", real_devices=False,
                                    tls_cert=pki["server.crt"], tls_key=pki["server.key"]))
    https_url = simulator.start()
    try:
        http_url = simulator.start_http_redirect()
        client = LinstorClient([http_url])
        with pytest.raises(FailedPrecondition) as err:
            client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "redir"})
        assert https_url in err.value.message and "LS_ROOT_CA" in err.value.message
        assert simulator.request_counts() == {}  # neither the POST nor a GET reached it
    finally:
        simulator.stop()


def _token_sim(tmp_path: Path, pki: dict[str, Path], tokens: list[str]) -> Simulator:
    simulator = Simulator(SimConfig(nodes=1, device_dir=tmp_path / "dev",
                                    state_dir=tmp_path / "state", real_devices=False,
                                    tls_cert=pki["server.crt"], tls_key=pki["server.key"],
                                    bearer_tokens=tokens))
    simulator.start()
    return simulator


def test_bearer_token_plain_and_json_forms(tmp_path: Path, pki: dict[str, Path]) -> None:
    simulator = _token_sim(tmp_path, pki, ["plain-token", "json-token"])
    try:
        for content in ("plain-token\n", '{"token": "json-token"}'):
            path = tmp_path / "token"
            path.write_text(content)
            client = LinstorClient([simulator.url or ""], root_ca=str(pki["ca.crt"]),
                                   bearer_token_file=path)
            assert client.get("/v1/nodes", deadline=Deadline(5))[0]["name"] == "node-1"
            client.close()
        assert simulator.app.auth_failures == 0
    finally:
        simulator.stop()


def test_missing_or_wrong_token_is_unauthenticated_with_what_to_do(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    simulator = _token_sim(tmp_path, pki, ["good"])
    try:
        anonymous = LinstorClient([simulator.url or ""], root_ca=str(pki["ca.crt"]))
        with pytest.raises(LinstorError) as err:
            anonymous.get("/v1/view/resources", deadline=Deadline(5))
        assert err.value.status == 401
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert err.value.has(consts.FAIL_ACC_DENIED_COMMAND)
        assert "bearer token" in err.value.message
        path = tmp_path / "token"
        path.write_text("stale")
        wrong = LinstorClient([simulator.url or ""], root_ca=str(pki["ca.crt"]),
                              bearer_token_file=path)
        with pytest.raises(LinstorError) as err:
            wrong.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "tok"})
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert simulator.list_resource_definitions() == []
        assert anonymous.request("GET", "/health", deadline=Deadline(5))[0] == 200  # exempt
    finally:
        simulator.stop()


def test_a_rotated_token_file_is_picked_up_without_a_restart(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    simulator = _token_sim(tmp_path, pki, ["first"])
    try:
        path = tmp_path / "token"
        path.write_text("first")
        client = LinstorClient([simulator.url or ""], root_ca=str(pki["ca.crt"]),
                               bearer_token_file=path)
        client.get("/v1/nodes", deadline=Deadline(5))
        simulator.set_bearer_tokens(["second"])  # the old token expired / was revoked
        path.write_text('{"token": "second"}')  # the Secret volume was updated
        client.post("/v1/resource-groups", deadline=Deadline(5), body={"name": "rotated"})
        assert client.get("/v1/resource-groups/rotated", deadline=Deadline(5))["name"] == "rotated"
        assert simulator.app.auth_failures == 1  # one refused attempt, then the new token
        assert simulator.request_counts()["POST /v1/resource-groups"] == 1  # applied once
    finally:
        simulator.stop()


def test_bearer_token_is_never_sent_in_clear_text_to_a_remote_host(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("secret-token")
    with pytest.raises(ValueError, match="clear text") as err:
        LinstorClient(["http://linstor.example:3370"], bearer_token_file=path)
    assert "secret-token" not in str(err.value)
    # a proxy on loopback (kube-rbac-proxy style) is allowed
    LinstorClient(["http://127.0.0.1:3370", "localhost:3370"], bearer_token_file=path).close()


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


def test_path_components_are_encoded_and_dot_segments_refused(sim) -> None:
    from csi_linstor.errors import InvalidArgument

    client = LinstorClient([sim.url])
    d = Deadline(10)
    client.post("/v1/resource-groups", deadline=d, body={"name": "rg1"})
    # '?' and '#' stay inside their component instead of starting a query or a fragment.
    for name in ("rg1?x=1", "rg1#frag", "rg 1"):
        with pytest.raises(LinstorError) as err:
            client.get(f"/v1/resource-groups/{name}", deadline=d)
        assert err.value.is_not_found()
    sim.reset_counts()
    for path in ("/v1/resource-groups/x/../rg1", "/v1/resource-groups/./rg1",
                 "/v1/resource-groups/"):
        with pytest.raises(InvalidArgument):
            client.delete(path, deadline=d)
    assert sim.request_counts() == {}
    assert client.get("/v1/resource-groups/rg1", deadline=d)["name"] == "rg1"


# -- replies decoded as they arrive (get_each) ----------------------------------------------


def test_get_each_hands_out_what_get_returns_and_errors_as_get(sim) -> None:
    client = LinstorClient([sim.url])
    seen: list[object] = []
    client.get_each("/v1/nodes", seen.append, deadline=Deadline(5))
    names = [n["name"] for n in client.get("/v1/nodes", deadline=Deadline(5))]
    assert [n["name"] for n in seen] == names and len(names) == 3  # type: ignore[index]
    with pytest.raises(LinstorError) as missing:
        client.get_each("/v1/resource-definitions/nope/resources", seen.append,
                        deadline=Deadline(5))
    assert missing.value.is_not_found() and len(seen) == 3


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"


def test_a_reply_cut_short_is_unavailable_after_the_elements_already_read() -> None:
    url, thread = raw_server([(HEAD + b'[{"name": "a"}, {"name": "b"}, {"na', 0.0)])
    seen: list[object] = []
    with pytest.raises(LinstorUnavailable, match="broke while reading its reply"):
        LinstorClient([url]).get_each("/v1/view/resources", seen.append, deadline=Deadline(5))
    assert seen == [{"name": "a"}, {"name": "b"}]
    thread.join(5)


def test_a_reply_trickling_past_the_deadline_is_deadline_exceeded() -> None:
    url, thread = raw_server([(HEAD + b"[1,", 0.0)] + [(b"1,", 0.2)] * 10)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        LinstorClient([url]).get_each("/v1/view/resources", lambda _: None, deadline=Deadline(0.7))
    assert time.monotonic() - start < 1.5
    thread.join(5)

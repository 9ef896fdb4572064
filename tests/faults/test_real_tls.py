"""TLS to the real LINSTOR 1.33.3 controller: its ``[https]`` section with a Java keystore (and
truststore) made by the JDK's ``keytool`` from tests/pki.py's certificates.

LINSTOR (GrizzlyHttpService) serves REST on the HTTPS port with the keystore; with a truststore
it sets ``needClientAuth`` (mutual TLS); its plain port then only redirects ``/v1`` to HTTPS.
The driver is the controller service talking to it (no satellite is needed: ListVolumes and
GetCapacity make the REST round trips).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from tests.faults.conftest import start_driver
from tests.pki import java_stores, make_pki
from tests.real_linstor import HttpsStores, RealLinstor, require_real_linstor

PASSWORD = "linstor-test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import shutil

    from tests.prerequisites import require

    require_real_linstor()
    require(shutil.which("keytool") is not None,
            "LINSTOR's HTTPS stores need keytool (openjdk-17-jre-headless)")
    d = tmp_path_factory.mktemp("tlspki")
    out = make_pki(d)
    out.update(java_stores(out, d, PASSWORD))
    other = tmp_path_factory.mktemp("otherpki")  # a CA LINSTOR does not know
    out.update({f"other-{k}": v for k, v in make_pki(other).items()})
    return out


def _controller(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path],
                mutual: bool) -> RealLinstor:
    stores = HttpsStores(keystore=pki["keystore"], password=PASSWORD, ca=pki["ca.crt"],
                         truststore=pki["truststore"] if mutual else None,
                         client=(pki["client.crt"], pki["client.key"]) if mutual else None)
    return RealLinstor(tmp_path_factory.mktemp("tlslinstor"), https=stores,
                       satellite=False).start()


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]
                ) -> Iterator[dict[str, RealLinstor]]:
    """Two controllers started side by side (each start is mostly waiting on the JVM):
    ``server`` has a keystore only; ``mtls`` a keystore and a truststore (client certificates
    required)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_controller, tmp_path_factory, pki, name == "mtls")
                   for name in ("server", "mtls")}
        started: dict[str, RealLinstor] = {}
        try:
            for name, future in futures.items():
                started[name] = future.result()
        except BaseException:
            for linstor in started.values():
                linstor.stop()
            raise
    yield started
    for linstor in started.values():
        linstor.stop()


@pytest.fixture(scope="module")
def mtls(controllers: dict[str, RealLinstor]) -> RealLinstor:
    return controllers["mtls"]


def _list(endpoint: str, **client_kw: str) -> grpc.RpcError | None:
    driver = start_driver([endpoint], deadline=15, **client_kw)
    try:
        driver.ctl.ListVolumes(csi_pb2.ListVolumesRequest())
        driver.ctl.GetCapacity(csi_pb2.GetCapacityRequest())
        return None
    except grpc.RpcError as err:
        return err
    finally:
        driver.close()


def _report(case: str, err: grpc.RpcError | None) -> None:
    print(f"\nreal LINSTOR TLS: {case} -> "
          + ("OK" if err is None else f"{err.code().name}: {err.details()}"))


def test_server_certificate_verified_without_client_certificates(
        controllers: dict[str, RealLinstor], pki: dict[str, Path]) -> None:
    server_only = controllers["server"]
    err = _list(server_only.url, root_ca=str(pki["ca.crt"]))
    _report("keystore only, LS_ROOT_CA = the signing CA", err)
    assert err is None
    err = _list(server_only.url, root_ca=str(pki["other-ca.crt"]))
    _report("keystore only, LS_ROOT_CA = another CA", err)
    assert err is not None and err.code() is grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in err.details()
    assert "set LS_ROOT_CA to the CA that signed it" in err.details()
    assert server_only.url in err.details()


def test_mutual_tls(mtls: RealLinstor, pki: dict[str, Path]) -> None:
    # PEM contents, as the LS_* environment variables carry them
    err = _list(mtls.url, root_ca=pki["ca.crt"].read_text(),
                user_certificate=pki["client.crt"].read_text(),
                user_key=pki["client.key"].read_text())
    _report("keystore + truststore, CA and client certificate", err)
    assert err is None


def test_wrong_ca_is_a_clear_error(mtls: RealLinstor, pki: dict[str, Path]) -> None:
    err = _list(mtls.url, root_ca=str(pki["other-ca.crt"]),
                user_certificate=str(pki["client.crt"]), user_key=str(pki["client.key"]))
    _report("keystore + truststore, wrong CA", err)
    assert err is not None and err.code() is grpc.StatusCode.UNAVAILABLE
    assert "certificate verify failed" in err.details()
    assert "set LS_ROOT_CA to the CA that signed it" in err.details()


def test_missing_or_untrusted_client_certificate_is_a_clear_error(
        mtls: RealLinstor, pki: dict[str, Path]) -> None:
    err = _list(mtls.url, root_ca=str(pki["ca.crt"]))
    _report("keystore + truststore, no client certificate", err)
    assert err is not None and err.code() is grpc.StatusCode.UNAVAILABLE
    assert "requires a client certificate (set LS_USER_CERTIFICATE and LS_USER_KEY)" \
        in err.details()
    err = _list(mtls.url, root_ca=str(pki["ca.crt"]),
                user_certificate=str(pki["other-client.crt"]),
                user_key=str(pki["other-client.key"]))
    _report("keystore + truststore, client certificate of another CA", err)
    assert err is not None and err.code() is grpc.StatusCode.UNAVAILABLE
    assert "does not trust the client certificate in LS_USER_CERTIFICATE" in err.details()


def test_https_only_controller_reached_over_plain_http(mtls: RealLinstor) -> None:
    # its plain port: LINSTOR redirects /v1 to HTTPS; the driver never follows (a POST
    # would become a GET) and says what to configure
    err = _list(mtls.plain_url)
    _report("plain HTTP to the plain port of an HTTPS controller", err)
    assert err is not None and err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "the controller serves HTTPS" in err.details()
    assert mtls.url in err.details() and "LS_ROOT_CA" in err.details()
    # plain HTTP to the HTTPS port: LINSTOR closes the connection without a word
    plain = mtls.url.replace("https://", "http://")
    err = _list(plain)
    _report("plain HTTP to the HTTPS port", err)
    assert err is not None and err.code() is grpc.StatusCode.UNAVAILABLE
    assert "if this port serves HTTPS, use an https:// (linstor+ssl://) URL" in err.details()



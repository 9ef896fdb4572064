"""TLS failures through the driver against the simulator's HTTPS (Python's ssl): the same
what-to-do messages as against real LINSTOR (test_real_tls.py), where no Java runtime is
needed. The simulator demands client certificates like LINSTOR with a truststore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.sim import SimConfig, Simulator
from tests.faults.conftest import start_driver
from tests.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = make_pki(tmp_path_factory.mktemp("simtlspki"))
    out.update({f"other-{k}": v for k, v in
                make_pki(tmp_path_factory.mktemp("simtlsother")).items()})
    return out


@pytest.fixture
def tls_sim(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Simulator]:
    simulator = Simulator(SimConfig(nodes=1, device_dir=tmp_path / "dev",
                                    state_dir=tmp_path / "state", real_devices=False,
                                    tls_cert=pki["server.crt"], tls_key=pki["server.key"],
                                    tls_client_ca=pki["ca.crt"]))
    simulator.start()
    yield simulator
    simulator.stop()


def _list(endpoint: str, **client_kw: str) -> grpc.RpcError | None:
    driver = start_driver([endpoint], deadline=15, **client_kw)
    try:
        driver.ctl.ListVolumes(csi_pb2.ListVolumesRequest())
        return None
    except grpc.RpcError as err:
        return err
    finally:
        driver.close()


def test_tls_mistakes_say_what_to_set(tls_sim: Simulator, pki: dict[str, Path]) -> None:
    url = tls_sim.url or ""
    good = {"root_ca": str(pki["ca.crt"]), "user_certificate": str(pki["client.crt"]),
            "user_key": str(pki["client.key"])}
    assert _list(url, **good) is None
    wrong_ca = _list(url, **{**good, "root_ca": str(pki["other-ca.crt"])})
    assert wrong_ca is not None and wrong_ca.code() is grpc.StatusCode.UNAVAILABLE
    assert "set LS_ROOT_CA to the CA that signed it" in wrong_ca.details()
    no_cert = _list(url, root_ca=str(pki["ca.crt"]))
    assert no_cert is not None and no_cert.code() is grpc.StatusCode.UNAVAILABLE
    assert "LS_USER_CERTIFICATE" in no_cert.details(), no_cert.details()
    plain = _list(url.replace("https://", "http://"))
    assert plain is not None and plain.code() is grpc.StatusCode.UNAVAILABLE
    assert "https://" in plain.details().split(";", 1)[1], plain.details()
    assert tls_sim.list_resource_definitions() == []

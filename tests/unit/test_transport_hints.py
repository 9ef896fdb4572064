"""The what-to-do hints for transport failures to LINSTOR (seen on real LINSTOR 1.33.3 in
tests/faults/test_real_tls.py): each failure shape gets its hint, and failures that mean "down
or slow" get none."""

from __future__ import annotations

import http.client

import pytest
import requests

from csi_linstor.linstor.transport import transport_hint

HTTPS = "https://ctl:3371"
HTTP = "http://ctl:3370"


def _closed() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(
        ("Connection aborted.", http.client.RemoteDisconnected(
            "Remote end closed connection without response")))


@pytest.mark.parametrize(("base", "err", "cert", "want"), [
    (HTTPS, requests.exceptions.SSLError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), True,
     "set LS_ROOT_CA to the CA that signed it"),
    (HTTPS, requests.exceptions.SSLError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]"), False,
     "requires a client certificate: set LS_USER_CERTIFICATE and LS_USER_KEY"),
    (HTTPS, requests.exceptions.SSLError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     False, "does not speak TLS"),
    (HTTPS, _closed(), False, "requires a client certificate (set LS_USER_CERTIFICATE"),
    (HTTPS, _closed(), True, "does not trust the client certificate in LS_USER_CERTIFICATE"),
    (HTTP, _closed(), False, "if this port serves HTTPS, use an https://"),
    (HTTP, requests.exceptions.ConnectionError(
        ("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))), False,
     "if this port serves HTTPS, use an https://"),
])
def test_configuration_mistakes_get_a_hint(base: str, err: Exception, cert: bool,
                                           want: str) -> None:
    assert want in transport_hint(base, err, client_certificate=cert)


@pytest.mark.parametrize("err", [
    requests.exceptions.ConnectionError("[Errno 111] Connection refused"),
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectTimeout("connect timed out"),
])
def test_down_or_slow_gets_none(err: Exception) -> None:
    assert transport_hint(HTTPS, err, client_certificate=False) == ""
    assert transport_hint(HTTP, err, client_certificate=False) == ""

"""What to do about a failed connection to LINSTOR: hints for the transport failures that are
configuration mistakes (TLS), appended to the UNAVAILABLE message.

How LINSTOR 1.33.3's REST service (Grizzly, ``GrizzlyHttpService``) fails each one, seen against
the real controller in tests/faults/test_real_tls.py:

- server certificate not signed by the client's CA: the client's handshake fails with
  ``CERTIFICATE_VERIFY_FAILED`` (nothing sent);
- ``[https] truststore`` set (``needClientAuth``) and no or a foreign client certificate: TLS 1.3
  completes the client's side of the handshake, then the controller closes the connection without
  a response (``RemoteDisconnected``), or a TLS alert arrives;
- plain HTTP sent to the HTTPS port: closed without a response as well (a TLS server in Python,
  like the simulator's, resets the connection instead);
- the plain port of a controller that serves HTTPS answers ``/v1`` with a redirect (handled by the
  client: FAILED_PRECONDITION).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def transport_hint(base: str, err: BaseException, *, client_certificate: bool) -> str:
    """``'; <what to do>'`` for ``err`` on endpoint ``base``, or ``''`` when it has no
    configuration meaning (refused, reset by a crash, timeouts: the controller is down/slow)."""
    text = _chain(err)
    https = urlsplit(base).scheme == "https"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ("; the controller's TLS certificate is not signed by the CA the driver trusts "
                "(or names another host): set LS_ROOT_CA to the CA that signed it and use the "
                "host name or address in its certificate")
    if "CERTIFICATE_REQUIRED" in text or "certificate required" in text:
        return ("; the controller requires a client certificate: set LS_USER_CERTIFICATE and "
                "LS_USER_KEY")
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return (f"; {base} does not speak TLS: use the controller's HTTPS port, or an http:// "
                "URL for its plain port")
    if ("SSLError" in text or "SSL:" in text) and https:
        return ("; the TLS handshake failed: check LS_ROOT_CA, LS_USER_CERTIFICATE and "
                "LS_USER_KEY against the controller's [https] keystore and truststore")
    closed = "RemoteDisconnected" in text or "closed connection without response" in text
    # Python's ssl server (and some proxies) reset plain HTTP sent to a TLS port instead
    reset = "ConnectionResetError" in text or "Connection reset by peer" in text
    if closed or (reset and not https):
        if https and not client_certificate:
            return ("; the controller closed the connection without answering: if its [https] "
                    "section has a truststore it requires a client certificate (set "
                    "LS_USER_CERTIFICATE and LS_USER_KEY), otherwise it may be restarting")
        if https:
            return ("; the controller closed the connection without answering: if its [https] "
                    "section has a truststore, it does not trust the client certificate in "
                    "LS_USER_CERTIFICATE (sign it with a CA in that truststore); otherwise it "
                    "may be restarting")
        return ("; the controller closed the connection without answering: if this port serves "
                "HTTPS, use an https:// (linstor+ssl://) URL and LS_ROOT_CA; otherwise it may "
                "be restarting")
    return ""


def _chain(err: BaseException) -> str:
    """The text of ``err`` and of every exception it was caused by (requests wraps urllib3's)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current!r} {current}")
        current = current.__cause__ or current.__context__
    return " ".join(parts)

"""LINSTOR REST v1 client on ``requests``.

- One ``requests.Session`` per client with a connection pool sized to the driver's worker count;
  requests are built in final form and sent through its ``LinstorAdapter`` (``adapter.py``:
  ``HTTPAdapter`` with its per-call pool lookup, TLS and proxy work done once per controller).
- Every call has a connect timeout and a read timeout bounded by the caller's RPC ``Deadline``.
- Several controller URLs: connection failures move on to the next one (the one that answered is
  tried first next time). GETs may be retried on any connection error; a POST/PUT/DELETE is only
  re-sent when the connection failed *before* the request went out, never silently after.
- TLS server verification (LS_ROOT_CA), client certificates (LS_USER_CERTIFICATE + LS_USER_KEY),
  bearer token from a file (only ever sent over HTTPS or to a loopback proxy; re-read once when
  the controller answers 401, so a rotated token file is picked up). None of them is logged.
- The environment (proxy variables and NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE, ~/.netrc) is
  read once, when the client is built, per controller URL, instead of by ``requests`` on every
  call (that re-read was a sixth of the driver's CPU per RPC). A change to it needs a restart.
- Redirects are never followed: a controller serving HTTPS redirects its HTTP port with a 302,
  and following it would turn a POST into a GET. The error names the HTTPS URL to configure.
- Every path component is percent-encoded here, in one place, and an empty, ``.`` or ``..``
  component is refused before anything is sent (urllib3 would collapse ``..`` and address another
  object). Names reaching a path are checked against LINSTOR's name rules first (``mapping/ids.py``), so
  a component can never contain ``/`` either.
- Errors are decoded from the ApiCallRc list by ``ret_code`` (never by HTTP status alone) into
  ``LinstorError`` carrying the gRPC code a CSI caller should see; warnings in a 2xx reply are
  returned to the caller, not raised.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.auth import HTTPBasicAuth
from requests.structures import CaseInsensitiveDict

from csi_linstor.deadline import Deadline
from csi_linstor.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from csi_linstor.linstor.adapter import LinstorAdapter, build_request, decode_reply
from csi_linstor.linstor.errors import ApiCallRc, LinstorError, LinstorUnavailable, parse_rc_list
from csi_linstor.linstor.models import ControllerVersion
from csi_linstor.linstor.stream import NotAnArray, each_item
from csi_linstor.linstor.transport import transport_hint

log = logging.getLogger("csi_linstor.linstor")

HTTP_PORT = 3370
HTTPS_PORT = 3371
USER_AGENT = "csi-linstor"
STREAM_CHUNK = 256 << 10  # bytes read at a time from a reply decoded as it arrives


def normalize_url(url: str, tls: bool = False) -> str:
    """``host``, ``host:port``, ``linstor://host``, ``linstor+ssl://host`` or a URL → base URL."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = ("https://" if tls else "http://") + url
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "linstor":
        scheme = "https" if tls else "http"
    elif scheme == "linstor+ssl":
        scheme = "https"
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported LINSTOR URL scheme {parts.scheme!r} in {url!r}")
    if not parts.hostname:
        raise ValueError(f"LINSTOR URL {url!r} names no host")
    port = parts.port or (HTTPS_PORT if scheme == "https" else HTTP_PORT)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port}{parts.path}"


def _pem_file(value: str | None, directory: Path, name: str) -> str | None:
    """LS_* values are PEM content or a file path; requests wants a path."""
    if not value:
        return None
    if "-----BEGIN" not in value:
        if not Path(value).is_file():
            raise ValueError(f"{name}: {value!r} is neither PEM content nor a readable file")
        return value
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return str(path)


def read_bearer_token(path: Path) -> str:
    text = path.read_text().strip()
    if text.startswith("{"):
        token = json.loads(text).get("token")
        if not isinstance(token, str) or not token:
            raise ValueError(f"bearer token file {path} holds JSON without a 'token' string")
        return token
    return text


class LinstorClient:
    def __init__(
        self,
        endpoints: Iterable[str],
        *,
        pool_size: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        root_ca: str | None = None,
        user_certificate: str | None = None,
        user_key: str | None = None,
        skip_tls_verify: bool = False,
        bearer_token_file: Path | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        tls = bool(root_ca or user_certificate or user_key)
        self.endpoints = [normalize_url(e, tls) for e in endpoints] or [normalize_url("localhost", tls)]
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._preferred = 0
        self._lock = threading.Lock()
        self._api_version: tuple[int, ...] | None = None
        self.controller_release = ""  # LINSTOR's own version, e.g. "1.33.3", once known
        self.session = requests.Session()
        self._adapter = LinstorAdapter(pool_connections=len(self.endpoints),
                                       pool_maxsize=max(pool_size, 4), max_retries=0)
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        self.session.headers["User-Agent"] = user_agent
        self.session.headers["Accept"] = "application/json"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # Passed with every request (with what _read_environment found), never set on the session.
        self._verify: bool | str = True
        if tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="csi-linstor-tls-")
            tmp = Path(self._tmp.name)
            ca = _pem_file(root_ca, tmp, "ca.pem")
            cert = _pem_file(user_certificate, tmp, "cert.pem")
            key = _pem_file(user_key, tmp, "key.pem")
            self._verify = False if skip_tls_verify else (ca or True)
            if cert and key:
                self.session.cert = (cert, key)
        elif skip_tls_verify:
            self._verify = False
        self._environment = {base: self._read_environment(base) for base in self.endpoints}
        for base, env in self._environment.items():
            self._adapter.route(_origin(base), verify=env["verify"], proxies=env["proxies"],
                                cert=self.session.cert)
        self._token_file = bearer_token_file
        self._token = ""
        if bearer_token_file is not None:
            plain = [e for e in self.endpoints if e.startswith("http://") and not _loopback(e)]
            if plain:
                raise ValueError(
                    f"refusing to send the bearer token in clear text to {', '.join(plain)}: "
                    "use https:// (or linstor+ssl://) endpoints with LS_ROOT_CA, or a proxy on "
                    "localhost")
            self._token = read_bearer_token(bearer_token_file)
            self.session.headers["Authorization"] = f"Bearer {self._token}"

    def _read_environment(self, base: str) -> dict[str, Any]:
        """What ``requests`` would take from the environment for ``base`` (proxies honouring
        NO_PROXY, the CA bundle variables when nothing more specific is configured, ~/.netrc
        credentials): read once, then passed with every request while the session itself
        stops reading the environment (``trust_env``)."""
        self.session.trust_env = True
        try:
            merged = self.session.merge_environment_settings(base, {}, None, self._verify, None)
            auth = requests.utils.get_netrc_auth(base)
        finally:
            self.session.trust_env = False
        authorization = None
        if auth:  # what requests' prepare_auth would add for netrc credentials, made once
            probe = requests.PreparedRequest()
            probe.headers = CaseInsensitiveDict()
            HTTPBasicAuth(*auth)(probe)
            authorization = probe.headers["Authorization"]
        return {"proxies": merged["proxies"], "verify": merged["verify"],
                "authorization": authorization}

    def close(self) -> None:
        self.session.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- transport ---------------------------------------------------------------------------

    def _order(self) -> list[int]:
        with self._lock:
            first = self._preferred
        n = len(self.endpoints)
        return [(first + i) % n for i in range(n)]

    def request(
        self,
        method: str,
        path: str,
        *,
        deadline: Deadline,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        each: Callable[[Any], None] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON or None). Raises on transport failure.

        ``each``: a 2xx reply (a JSON array) is decoded as it arrives and ``each`` is called per
        element (``stream.each_item``); the data returned is then None. Other replies are
        decoded whole, as without it."""
        path = encode_path(path)
        idempotent = method in ("GET", "HEAD")
        last_error: Exception | None = None
        failed: list[str] = []  # "<endpoint>: <what went wrong>[; <what to do>]", for the message
        for index in self._order():
            base = self.endpoints[index]
            read = deadline.timeout(self.read_timeout, what=f"LINSTOR {method} {path}")
            connect = min(self.connect_timeout, read)
            try:
                env = self._environment[base]
                # The adapter directly, not Session.send: redirects are never followed, no
                # hooks are set, no cookies kept, and the environment was read at start.
                response = self._adapter.send(
                    build_request(method, base + path, params, body, self.session.headers,
                                  env["authorization"]),
                    stream=True, timeout=(connect, read), verify=env["verify"],
                    proxies=env["proxies"], cert=self.session.cert)
            except (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError) as err:
                # Not sent (or not to a trusted peer): safe to try the next controller.
                last_error = err
                failed.append(self._failure(base, err))
                log.debug("LINSTOR controller %s unreachable: %s", base, _short(err))
                continue
            except requests.exceptions.ConnectionError as err:
                if idempotent or _never_sent(err):
                    last_error = err
                    failed.append(self._failure(base, err))
                    log.debug("LINSTOR controller %s unreachable: %s", base, _short(err))
                    continue
                raise LinstorUnavailable(
                    f"connection to LINSTOR at {base} broke during {method} {path}: {_short(err)}; "
                    f"the request may or may not have been applied; retry{self._hint(base, err)}"
                ) from err
            except requests.exceptions.ReadTimeout as err:
                if deadline.expired():
                    raise DeadlineExceeded(
                        f"LINSTOR {method} {path} at {base} did not answer before the RPC "
                        "deadline; it may still apply the request: retry (if this repeats, "
                        "check the controller's load and `linstor error-reports list`)"
                    ) from err
                raise LinstorUnavailable(
                    f"LINSTOR {method} {path} at {base} did not answer within {read:.1f}s; retry"
                ) from err
            if response.is_redirect:
                response.close()
                target = response.headers.get("Location", "?")
                raise FailedPrecondition(
                    f"LINSTOR at {base} redirects {method} {path} to {target}: the controller "
                    "serves HTTPS; set --linstor-endpoint (LS_CONTROLLERS) to its https:// URL "
                    "(or linstor+ssl://host) and LS_ROOT_CA to the CA that signed it")
            if last_error is not None:
                log.warning("LINSTOR controller %s answered after another was unreachable: %s",
                            base, _short(last_error))
            with self._lock:
                self._preferred = index
            if each is not None and 200 <= response.status_code < 300:
                self._stream(response, method, path, base, deadline, each)
                return response.status_code, None
            return response.status_code, decode_reply(self._body(response, method, path, base,
                                                            deadline))
        raise LinstorUnavailable(
            f"no LINSTOR controller reachable ({', '.join(self.endpoints)}) for {method} {path}: "
            f"{' | '.join(failed) or 'no attempt made'}; check --linstor-endpoint / "
            "LS_CONTROLLERS and that the controller is running"
        )

    @staticmethod
    def _body(response: requests.Response, method: str, path: str, base: str,
              deadline: Deadline) -> bytes:
        """The whole reply, read as it arrives within the RPC's deadline: a connection that
        breaks while it arrives is UNAVAILABLE and a reply still trickling in when the deadline
        passes is DEADLINE_EXCEEDED (both said the request may have been applied), never an
        unexpected error."""
        pieces: list[bytes] = []
        try:
            for piece in _chunks(response):
                pieces.append(piece)
                deadline.timeout(what=f"the rest of LINSTOR's reply to {method} {path}")
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
            response.close()
            if deadline.expired():
                raise DeadlineExceeded(
                    f"LINSTOR {method} {path} at {base} did not finish its reply before the RPC "
                    "deadline; it may have applied the request: retry") from err
            raise LinstorUnavailable(
                f"the connection to LINSTOR at {base} broke while reading its reply to {method} "
                f"{path}: {_short(err)}; it may have applied the request: retry") from err
        except DeadlineExceeded:
            response.close()
            raise
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    @staticmethod
    def _stream(response: requests.Response, method: str, path: str, base: str,
                deadline: Deadline, each: Callable[[Any], None]) -> None:
        """Hand the reply's array elements to ``each`` as they arrive, within the deadline."""
        def check() -> None:
            deadline.timeout(what=f"the rest of LINSTOR's reply to {method} {path}")

        try:
            each_item(_chunks(response), each, check)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
            if deadline.expired():
                raise DeadlineExceeded(
                    f"LINSTOR {method} {path} at {base} did not finish its reply before the RPC "
                    "deadline; retry") from err
            raise LinstorUnavailable(
                f"the connection to LINSTOR at {base} broke while reading its reply to {method} "
                f"{path}: {_short(err)}; retry") from err
        except NotAnArray as err:
            raise LinstorUnavailable(
                f"LINSTOR at {base} answered {method} {path} with a reply that is not a JSON "
                f"array: {err}; retry, and check the controller's version") from err
        finally:
            response.close()

    def _failure(self, base: str, err: Exception) -> str:
        text = _short(err)
        for marker, said in (("Connection refused", "connection refused (nothing listens)"),
                             ("Name or service not known", "host name not resolved"),
                             ("Temporary failure in name resolution", "host name not resolved")):
            if marker in str(err):
                text = said
        return f"{base}: {text}{self._hint(base, err)}"

    def _hint(self, base: str, err: Exception) -> str:
        """What to do about a transport failure that is a configuration mistake (TLS), as
        '; <hint>', or ''. Seen on real LINSTOR 1.33.3 (tests/faults/test_real_tls.py)."""
        return transport_hint(base, err, client_certificate=self.session.cert is not None)

    def _checked(self, method: str, path: str, *, deadline: Deadline,
                 params: Mapping[str, Any] | None = None, body: Any = None,
                 each: Callable[[Any], None] | None = None) -> tuple[int, Any]:
        status, data = self.request(method, path, deadline=deadline, params=params, body=body,
                                    each=each)
        if status == 401 and self._reload_token():
            # Refused before anything was applied, so any method may be sent again, once.
            status, data = self.request(method, path, deadline=deadline, params=params, body=body,
                                        each=each)
        rcs = parse_rc_list(data) if isinstance(data, (list, dict)) else []
        has_error = any(rc.is_error for rc in rcs)
        if status >= 400 or (has_error and status >= 300) or (has_error and _is_rc_list(data)):
            raise LinstorError(method, path, status, rcs, body=_text(data))
        return status, data

    def _reload_token(self) -> bool:
        """Re-read the token file after a 401; True when it holds a new token."""
        if self._token_file is None:
            return False
        try:
            token = read_bearer_token(self._token_file)
        except (OSError, ValueError) as err:
            log.warning("could not re-read the bearer token file %s: %s", self._token_file, err)
            return False
        with self._lock:
            if token == self._token:
                return False
            self._token = token
            self.session.headers["Authorization"] = f"Bearer {token}"
        log.info("LINSTOR refused the bearer token; using the new one from %s", self._token_file)
        return True

    # -- verbs -------------------------------------------------------------------------------

    def get(self, path: str, *, deadline: Deadline, params: Mapping[str, Any] | None = None) -> Any:
        """GET an object or list; a missing object raises LinstorError with code NOT_FOUND."""
        return self._checked("GET", path, deadline=deadline, params=params)[1]

    def get_each(self, path: str, each: Callable[[Any], None], *, deadline: Deadline,
                 params: Mapping[str, Any] | None = None) -> None:
        """GET a list, calling ``each`` per element as the reply arrives: for replies the
        size of the cluster that the caller reduces (never holds the whole list)."""
        self._checked("GET", path, deadline=deadline, params=params, each=each)

    def post(self, path: str, *, deadline: Deadline, body: Any = None,
             params: Mapping[str, Any] | None = None) -> list[ApiCallRc]:
        return parse_rc_list(self._checked("POST", path, deadline=deadline, params=params,
                                           body=body if body is not None else {})[1])

    def post_raw(self, path: str, *, deadline: Deadline, body: Any = None) -> Any:
        """POST whose reply is an object (e.g. clone, query-size-info); errors still raise."""
        return self._checked("POST", path, deadline=deadline, body=body if body is not None else {})[1]

    def put(self, path: str, *, deadline: Deadline, body: Any = None,
            params: Mapping[str, Any] | None = None) -> list[ApiCallRc]:
        return parse_rc_list(self._checked("PUT", path, deadline=deadline, params=params,
                                           body=body)[1])

    def delete(self, path: str, *, deadline: Deadline,
               params: Mapping[str, Any] | None = None) -> list[ApiCallRc]:
        return parse_rc_list(self._checked("DELETE", path, deadline=deadline, params=params)[1])

    # -- helpers -----------------------------------------------------------------------------

    def version(self, deadline: Deadline) -> dict[str, Any]:
        """``GET /v1/controller/version``; also refreshes the cached versions (the LINSTOR
        monitor calls this every few seconds, so an upgraded controller is noticed)."""
        data = self.get("/v1/controller/version", deadline=deadline)
        data = data if isinstance(data, dict) else {}
        info = ControllerVersion.from_json(data)
        with self._lock:
            self._api_version = info.rest_api
            self.controller_release = info.version
        return data

    def rest_api_version(self, deadline: Deadline) -> tuple[int, ...]:
        """The controller's REST API version (cached), for gating optional request fields."""
        if self._api_version is None:
            self.version(deadline)
        return self._api_version or (0,)


def encode_path(path: str) -> str:
    """``path`` with every component percent-encoded; INVALID_ARGUMENT for a component that is
    empty, ``.`` or ``..``, which would address another object than the one named."""
    parts = path.split("/")
    if parts[0] != "" or len(parts) < 2:
        raise InvalidArgument(f"LINSTOR REST path {path!r} is not absolute")
    for part in parts[1:]:
        if part in ("", ".", ".."):
            raise InvalidArgument(
                f"LINSTOR REST path {path!r} has an empty, '.' or '..' component: a name in the "
                "request is not a valid LINSTOR name; fix the id or name sent to the driver")
    return "/".join(quote(part, safe="") for part in parts)


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The reply's (decompressed) bytes as they arrive: each piece is what one read of the
    socket gave (``read1``), so the caller's deadline check runs between reads even when the
    controller sends slowly (``iter_content`` waits for a full chunk)."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(STREAM_CHUNK)
        return
    while True:
        data = read1(STREAM_CHUNK, decode_content=True)
        if not data:
            return
        yield data


def _is_rc_list(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and all(
        isinstance(i, dict) and "ret_code" in i for i in data
    )


def _origin(base: str) -> str:
    """``scheme://host:port`` of a normalized base URL (which may carry a path)."""
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else json.dumps(data)[:500]


def _never_sent(err: Exception) -> bool:
    """True when a ConnectionError happened while connecting (the request never left).

    urllib3 raises NewConnectionError (name resolution and refused connections included) before
    a single byte of the request is written; anything else may have reached the controller.
    """
    reason = getattr(err.args[0] if err.args else None, "reason", None)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _short(err: Exception | None) -> str:
    if err is None:
        return "no attempt made"
    text = str(err)
    return text if len(text) < 300 else text[:300] + "..."

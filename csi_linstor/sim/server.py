"""HTTP front end of the simulator: routing, status mapping, fault knobs and the /sim admin API."""

from __future__ import annotations

import collections
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import consts as C
from .controller import Controller
from .model import ApiError, Request, make_rc

log = logging.getLogger("csi_linstor.sim")

MAX_RECORDED_REPLY = 256 * 1024
AUTH_EXEMPT = ("/", "/health", "/ui")  # LINSTOR's AuthenticationFilter lets these through

P = r"(?P<{}>[^/]+)"
N = r"(?P<{}>\d+)"
RD = "/v1/resource-definitions/{rd}"
RSC = RD + "/resources/{node}"

# (method, template, handler name, min REST version)
ROUTES: list[tuple[str, str, str, tuple[int, int, int] | None]] = [
    ("GET", "/health", "h_health", None),
    ("GET", "/v1/controller/version", "h_version", None),
    ("GET", "/v1/controller/properties", "h_ctrl_props", None),
    ("POST", "/v1/controller/properties", "h_ctrl_props_modify", None),
    ("GET", "/v1/nodes", "h_nodes", None),
    ("GET", "/v1/nodes/{node}", "h_node", None),
    ("PUT", "/v1/nodes/{node}", "h_node_modify", None),
    ("GET", "/v1/nodes/{node}/storage-pools", "h_node_pools", None),
    ("GET", "/v1/nodes/{node}/storage-pools/{sp}", "h_node_pool", None),
    ("GET", "/v1/view/storage-pools", "h_view_pools", None),
    ("GET", "/v1/resource-groups", "h_rgs", None),
    ("POST", "/v1/resource-groups", "h_rg_create", None),
    ("GET", "/v1/resource-groups/{rg}", "h_rg", None),
    ("PUT", "/v1/resource-groups/{rg}", "h_rg_modify", None),
    ("DELETE", "/v1/resource-groups/{rg}", "h_rg_delete", None),
    ("GET", "/v1/resource-groups/{rg}/volume-groups", "h_vgs", None),
    ("POST", "/v1/resource-groups/{rg}/volume-groups", "h_vg_create", None),
    ("GET", "/v1/resource-groups/{rg}/volume-groups/{vnr}", "h_vg", None),
    ("DELETE", "/v1/resource-groups/{rg}/volume-groups/{vnr}", "h_vg_delete", None),
    ("POST", "/v1/resource-groups/{rg}/spawn", "h_spawn", None),
    ("POST", "/v1/resource-groups/{rg}/query-size-info", "h_query_size_info", (1, 17, 0)),
    ("GET", "/v1/resource-definitions", "h_rds", None),
    ("POST", "/v1/resource-definitions", "h_rd_create", None),
    ("GET", RD, "h_rd", None),
    ("PUT", RD, "h_rd_modify", None),
    ("DELETE", RD, "h_rd_delete", None),
    ("GET", RD + "/sync-status", "h_sync_status", None),
    ("GET", RD + "/volume-definitions", "h_vds", None),
    ("POST", RD + "/volume-definitions", "h_vd_create", None),
    ("GET", RD + "/volume-definitions/{vnr}", "h_vd", None),
    ("PUT", RD + "/volume-definitions/{vnr}", "h_vd_modify", None),
    ("DELETE", RD + "/volume-definitions/{vnr}", "h_vd_delete", None),
    ("GET", RD + "/resources", "h_resources", None),
    ("POST", RD + "/resources", "h_resources_create", None),
    ("GET", RSC, "h_resource", None),
    ("POST", RSC, "h_resource_create", None),
    ("PUT", RSC, "h_resource_modify", None),
    ("DELETE", RSC, "h_resource_delete", None),
    ("GET", RSC + "/volumes", "h_volumes", None),
    ("GET", RSC + "/volumes/{vnr}", "h_volume", None),
    ("POST", RSC + "/make-available", "h_make_available", None),
    ("PUT", RSC + "/toggle-disk/diskless", "h_toggle_diskless", None),
    ("PUT", RSC + "/toggle-disk/diskless/{sp}", "h_toggle_diskless", None),
    ("PUT", RSC + "/toggle-disk/diskful", "h_toggle_diskful", None),
    ("PUT", RSC + "/toggle-disk/diskful/{sp}", "h_toggle_diskful", None),
    ("PUT", RSC + "/toggle-disk", "h_toggle_unified", (1, 28, 0)),
    ("POST", RD + "/autoplace", "h_autoplace", None),
    ("GET", "/v1/view/resources", "h_view_resources", None),
    ("GET", RD + "/snapshots", "h_snapshots", None),
    ("POST", RD + "/snapshots", "h_snapshot_create", None),
    ("GET", RD + "/snapshots/{snap}", "h_snapshot", None),
    ("DELETE", RD + "/snapshots/{snap}", "h_snapshot_delete", None),
    ("GET", "/v1/view/snapshots", "h_view_snapshots", None),
    ("POST", "/v1/actions/snapshot/multi", "h_snapshot_multi", None),
    ("POST", RD + "/snapshot-restore-volume-definition/{snap}", "h_restore_vd", None),
    ("POST", RD + "/snapshot-restore-resource/{snap}", "h_restore_resource", None),
    ("POST", RD + "/clone", "h_clone", None),
    ("GET", RD + "/clone/{dst}", "h_clone_status", None),
    ("GET", "/v1/remotes", "h_remotes", None),
    ("DELETE", "/v1/remotes", "h_remote_delete", None),
    ("GET", "/v1/remotes/s3", "h_remotes_kind", None),
    ("POST", "/v1/remotes/s3", "h_bk_s3_create", None),
    ("PUT", "/v1/remotes/s3/{remote}", "h_bk_s3_modify", None),
    ("GET", "/v1/remotes/linstor", "h_remotes_kind", None),
    ("POST", "/v1/remotes/linstor", "h_bk_linstor_create", None),
    ("PUT", "/v1/remotes/linstor/{remote}", "h_bk_linstor_modify", None),
    ("GET", "/v1/remotes/ebs", "h_remotes_kind", None),
    ("GET", "/v1/remotes/{remote}/backups", "h_backups", None),
    ("POST", "/v1/remotes/{remote}/backups", "h_bk_create", None),
    ("DELETE", "/v1/remotes/{remote}/backups", "h_bk_delete", None),
    ("POST", "/v1/remotes/{remote}/backups/info", "h_bk_info", None),
    ("POST", "/v1/remotes/{remote}/backups/restore", "h_bk_restore", None),
    ("POST", "/v1/remotes/{remote}/backups/abort", "h_bk_abort", None),
    ("POST", "/v1/remotes/{remote}/backups/ship", "h_bk_ship", None),
    # the receiving controller's side of a LINSTOR-to-LINSTOR shipment (sim/backups.py)
    ("POST", "/v1/internal/backups/requestShip", "h_bk_receive", None),
    ("GET", "/v1/key-value-store", "h_kvs_list", None),
    ("GET", "/v1/encryption/passphrase", "h_passphrase_status", None),
    ("POST", "/v1/encryption/passphrase", "h_passphrase_create", None),
    ("GET", "/v1/key-value-store/{inst}", "h_kvs_get", None),
    ("PUT", "/v1/key-value-store/{inst}", "h_kvs_modify", None),
    ("DELETE", "/v1/key-value-store/{inst}", "h_kvs_delete", None),
]


def _compile(template: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\{[a-z]+\})", template):
        if part.startswith("{"):
            name = part[1:-1]
            out += (N if name == "vnr" else P).format(name)
        else:
            out += re.escape(part)
    return re.compile("^" + out + "/?$")


COMPILED = [(m, _compile(t), t, h, v) for m, t, h, v in ROUTES]


@dataclass
class Rule:
    pattern: re.Pattern[str] | None
    value: float
    count: int | None = None  # remaining uses for count-based rules

    def matches(self, method: str, path: str, template: str) -> bool:
        if self.pattern is None:
            return True
        return any(self.pattern.search(s) for s in
                   (path, f"{method} {path}", f"{method} {template}", template))


@dataclass
class Faults:
    latency: list[Rule] = field(default_factory=list)
    failure: list[Rule] = field(default_factory=list)
    drop: list[Rule] = field(default_factory=list)

    def clear(self) -> None:
        self.latency.clear()
        self.failure.clear()
        self.drop.clear()


def _rule(route: str | None, value: float, count: int | None = None) -> Rule:
    return Rule(re.compile(route) if route else None, value, count)


class SimHTTPServer(ThreadingHTTPServer):
    """The REST listener; HTTPS when given an SSL context (the handshake runs in the request's
    own thread, so a slow or failing client cannot stall the accept loop)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], app: App,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self._open: set[socket.socket] = set()  # accepted connections, for cut_connections()
        self._open_lock = threading.Lock()
        super().__init__(addr, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Close every open client connection, as a controller process that dies does."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(10.0)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as err:
                # What a client sees: the handshake fails (no/untrusted certificate, wrong CA).
                log.info("TLS handshake with %s failed: %s", client_address[0], err)
                with self.app.counts_lock:
                    self.app.tls_failures += 1
                request.close()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


class RedirectHTTPServer(ThreadingHTTPServer):
    """The plain-HTTP port of a controller that serves HTTPS: ``/v1/*`` answers 302 to the
    HTTPS port, as LINSTOR's Grizzly service does (python-linstor probes for it)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], target: str) -> None:
        self.target = target.rstrip("/")
        super().__init__(addr, RedirectHandler)


class RedirectHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RedirectHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - " + format, self.address_string(), *args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        if self.path.startswith("/v1/"):
            self.send_response(302)
            self.send_header("Location", self.server.target + self.path)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class App:
    """Request dispatch shared by the HTTP handler threads."""

    def __init__(self, ctrl: Controller, admin: Callable[[str, str, dict, Any], Any]) -> None:
        self.ctrl = ctrl
        self.admin = admin
        self.faults = Faults()
        self.faults_lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.reply_bytes: dict[str, int] = {}  # JSON bytes sent, keyed like counts
        self.counts_lock = threading.Lock()
        # The last request bodies (method, route template, body) for contract tests that check
        # every body a client sent against LINSTOR's OpenAPI schemas. Bounded; cheap.
        self.bodies: collections.deque[tuple[str, str, Any]] = collections.deque(maxlen=20000)
        # The last replies (method, route template, status, JSON bytes), for the same tests.
        self.replies: collections.deque[tuple[str, str, int, bytes]] = collections.deque(
            maxlen=20000)
        self.rng = random.Random()
        # Bearer-token mode (LINSTOR >= 1.34 with Auth/TokenAuthenticationEnabled): when this
        # set is not empty every path but the exempt ones needs "Authorization: Bearer <t>".
        self.tokens: set[str] = set()
        self.auth_failures = 0
        self.tls_failures = 0
        self.client_cns: collections.deque[str] = collections.deque(maxlen=100)
        # Bumped by Simulator.stop_serving (a controller restart): a request still waiting in a
        # latency rule then is never applied, as a LINSTOR API call whose transaction had not
        # committed when its process died (state lives in the controller's database).
        self.generation = 0

    def _unauthorized(self, path: str, authorization: str | None) -> bool:
        if not self.tokens or path in AUTH_EXEMPT or path.startswith("/sim/") or path == "/sim":
            return False
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() in self.tokens:
            return False
        with self.counts_lock:
            self.auth_failures += 1
        return True

    def _pick(self, rules: list[Rule], method: str, path: str, template: str) -> Rule | None:
        with self.faults_lock:
            for rule in rules:
                if rule.matches(method, path, template):
                    if rule.count is not None:
                        if rule.count <= 0:
                            continue
                        rule.count -= 1
                        return rule
                    if rules is self.faults.latency or self.rng.random() < rule.value:
                        return rule
        return None

    def record_reply(self, method: str, route: str, status: int, data: bytes) -> None:
        """Count a REST reply's bytes; keep it (encoded as sent) for contract tests, bounded,
        big ones skipped."""
        key = f"{method} {route}"
        with self.counts_lock:
            self.reply_bytes[key] = self.reply_bytes.get(key, 0) + len(data)
            if len(data) <= MAX_RECORDED_REPLY:
                self.replies.append((method, route, status, data))

    def route(self, method: str, raw_path: str, body: bytes, authorization: str | None = None
              ) -> tuple[int, Any, bool, str | None]:
        """(status, json body or None, drop_connection, route template or None for /sim)."""
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        if self._unauthorized(path, authorization):
            return 401, [make_rc(C.FAIL_ACC_DENIED_COMMAND,
                                 "Access denied: a valid bearer token is required.")], False, path
        if path.startswith("/sim/") or path == "/sim":
            try:
                return 200, self.admin(method, path, query, body), False, None
            except KeyError as e:
                return 404, {"error": f"not found: {e}"}, False, None
            except (ValueError, TypeError) as e:
                return 400, {"error": str(e)}, False, None
        matched_path = False
        for m, rx, template, hname, since in COMPILED:
            mo = rx.match(path)
            if not mo:
                continue
            if since is not None and self.ctrl.rest_version < since:
                continue
            matched_path = True
            if m != method:
                continue
            return (*self._run(method, path, template, hname, mo.groupdict(), query, body),
                    template)
        if matched_path:
            return 405, [make_rc(C.FAIL_UNKNOWN_ERROR,
                                 f"HTTP method {method} not allowed for path '{path}'.")], False, path
        return 404, [make_rc(C.FAIL_UNKNOWN_ERROR, f"Path '{path}' not found on server.")], False, path

    def _run(self, method: str, path: str, template: str, hname: str, params: dict,
             query: dict, body: bytes) -> tuple[int, Any, bool]:
        key = f"{method} {template}"
        with self.counts_lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if body.strip():
                try:
                    self.bodies.append((method, template, json.loads(body)))
                except ValueError:
                    self.bodies.append((method, template, body.decode("utf-8", "replace")))
        generation = self.generation
        lat = self._pick(self.faults.latency, method, path, template)
        if lat is not None and lat.value > 0:
            time.sleep(lat.value)
        if self.generation != generation:  # the "controller" restarted meanwhile: not applied
            return 503, None, True
        if self._pick(self.faults.failure, method, path, template) is not None:
            entries = [make_rc(C.FAIL_UNKNOWN_ERROR, "Injected failure (simulator fault knob).",
                               report=True)]
            if (method, template) == ("POST", RD + "/clone"):
                return 500, _clone_failure(params["rd"], body, entries), False
            return 500, entries, False
        drop = self._pick(self.faults.drop, method, path, template) is not None
        req = Request(method=method, path=path, params=params, query=query, raw_body=body,
                      template=template)
        handler = getattr(self.ctrl, hname)
        try:
            with self.ctrl.lock:
                self.ctrl.begin_request()
                self.ctrl.reap()
                status, out = handler(req)
            for fn in req.after:
                fn()
        except ApiError as e:
            if e.body is not None:
                return e.status or 500, e.body, drop
            return e.status or C.http_status(e.entries, 500), e.entries, drop
        except Exception as e:  # an unhandled bug: what the real server does too
            log.exception("handler %s failed", hname)
            return 500, [make_rc(C.FAIL_UNKNOWN_ERROR, f"Unhandled exception: {e}",
                                 report=True)], drop
        if isinstance(out, list) and out and isinstance(out[0], dict) and "ret_code" in out[0]:
            status = C.http_status(out, status)
        return status, out, drop


def _clone_failure(src: str, body: bytes, entries: list[dict]) -> dict[str, Any]:
    """Clone answers errors in its success type (ResourceDefinitionCloneStarted), as LINSTOR."""
    try:
        dst = str((json.loads(body or b"{}") or {}).get("name") or "")
    except (ValueError, AttributeError):
        dst = ""
    return {"location": f"/v1/resource-definitions/{src}/clone/{dst}", "source_name": src,
            "clone_name": dst, "messages": entries}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SimHTTPServer

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - " + format, self.address_string(), *args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        app = self.server.app
        if self.server.ssl_context is not None:
            cert = self.connection.getpeercert() or {}
            subject = dict(x[0] for x in cert.get("subject", ()))
            if "commonName" in subject:
                app.client_cns.append(subject["commonName"])
        status, out, drop, route = app.route(self.command, self.path, body,
                                             self.headers.get("Authorization"))
        if drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if out is None:
            data = b""
        elif isinstance(out, (bytes, str)):
            data = out.encode() if isinstance(out, str) else out
        else:
            data = json.dumps(out).encode()
        if route is not None:
            app.record_reply(self.command, route, status, data)
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="linstor-controller"')
        if out is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

"""The :class:`Simulator` object: configuration, lifecycle, fault knobs (Python and /sim HTTP)."""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import ssl
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .controller import Controller
from .devices import DeviceManager
from .model import DEFAULT_POOL, DISK_STATES
from .server import App, Faults, RedirectHTTPServer, SimHTTPServer, _rule

log = logging.getLogger("csi_linstor.sim")

TIB_KIB = 1024 * 1024 * 1024


@dataclass
class PoolSpec:
    name: str
    provider_kind: str = "FILE_THIN"
    capacity_kib: int = TIB_KIB
    nodes: list[str] | None = None  # None: every node


def default_pools() -> list[PoolSpec]:
    return [PoolSpec(DEFAULT_POOL), PoolSpec("sp1")]


@dataclass
class SimConfig:
    nodes: int | list[str] = 3
    pools: list[PoolSpec] = field(default_factory=default_pools)
    node_props: dict[str, dict[str, str]] = field(default_factory=dict)
    device_dir: Path | None = None  # default /dev
    state_dir: Path | None = None  # default: a private temp dir, removed on stop()
    rest_api_version: str = "1.27.0"
    version: str = "1.33.3"
    clone_polls: int = 1  # GET clone status answers CLONING this many times, then COMPLETE
    thin_alloc_fraction: float = 0.0  # share of a volume's size a thin pool loses
    real_devices: bool = True  # False: no loop devices (model-only), device paths still reported
    # Auto-promote from real opens (sim/opens.py): node -> path prefixes (its kubelet root). A
    # rw mount or write-open of a volume's device under them makes that node's resource Primary
    # (in_use), on top of the set_in_use knob. Empty: in_use follows the knob only.
    node_roots: dict[str, list[str]] = field(default_factory=dict)
    # HTTPS like LINSTOR's [https] section: certificate + key (PEM files); with a client CA the
    # server demands a client certificate signed by it (LINSTOR's truststore: mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Bearer-token mode (LINSTOR >= 1.34, Auth/TokenAuthenticationEnabled): accepted tokens.
    bearer_tokens: list[str] = field(default_factory=list)
    # LINSTOR's master passphrase (sim/luks.py): None = unset, so LUKS stacks fail as in LINSTOR
    # until one is created (POST /v1/encryption/passphrase or this field).
    master_passphrase: str | None = None

    @property
    def https(self) -> bool:
        return self.tls_cert is not None

    def node_names(self) -> list[str]:
        if isinstance(self.nodes, int):
            return [f"node-{i}" for i in range(1, self.nodes + 1)]
        return list(self.nodes)

    def add_pool(self, name: str, provider_kind: str = "LVM", capacity_kib: int = TIB_KIB,
                 nodes: list[str] | None = None) -> SimConfig:
        """Add a pool (e.g. a thick ``LVM`` pool, which cannot snapshot). Returns self."""
        self.pools.append(PoolSpec(name, provider_kind, capacity_kib, nodes))
        return self


_live: weakref.WeakSet[Simulator] = weakref.WeakSet()


def _atexit() -> None:
    for sim in list(_live):
        try:
            sim.stop()
        except Exception:  # pragma: no cover
            log.exception("simulator cleanup at exit failed")


atexit.register(_atexit)


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._own_state_dir = self.config.state_dir is None
        self.state_dir = Path(self.config.state_dir or tempfile.mkdtemp(prefix="csi-linstor-sim-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.device_dir = Path(self.config.device_dir or "/dev")
        self.device_dir.mkdir(parents=True, exist_ok=True)
        self.devices = DeviceManager(self.state_dir, self.device_dir,
                                     enabled=self.config.real_devices)
        self.controller = Controller(self.config, self.devices)
        self.app = App(self.controller, self._admin)
        self.app.tokens.update(self.config.bearer_tokens)
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._redirect: RedirectHTTPServer | None = None
        self.redirect_url: str | None = None
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.url: str | None = None
        _live.add(self)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            assert self.url is not None
            return self.url
        self._server = SimHTTPServer((host, port), self.app, self._ssl_context())
        real_port = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.config.https else "http"
        self.url = f"{scheme}://{shown}:{real_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="csi-linstor-sim", daemon=True)
        self._thread.start()
        log.info("LINSTOR simulator listening on %s (nodes: %s, devices in %s%s%s)", self.url,
                 ",".join(self.config.node_names()), self.device_dir,
                 ", client certificates required" if self.config.tls_client_ca else "",
                 ", bearer tokens required" if self.app.tokens else "")
        return self.url

    def start_http_redirect(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the plain-HTTP port of an HTTPS controller: ``/v1/*`` → 302 to :attr:`url`."""
        if self.url is None or not self.config.https:
            raise RuntimeError("start the simulator with tls_cert/tls_key before its redirect")
        if self._redirect is None:
            self._redirect = RedirectHTTPServer((host, port), self.url)
            threading.Thread(target=self._redirect.serve_forever, kwargs={"poll_interval": 0.1},
                             name="csi-linstor-sim-redirect", daemon=True).start()
            shown = f"[{host}]" if ":" in host else host
            self.redirect_url = f"http://{shown}:{self._redirect.server_address[1]}"
        assert self.redirect_url is not None
        return self.redirect_url

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.tls_cert is None:
            if cfg.tls_key is not None or cfg.tls_client_ca is not None:
                raise ValueError("the simulator's TLS key / client CA need a certificate too")
            return None
        if cfg.tls_key is None:
            raise ValueError("the simulator's TLS certificate needs its key (tls_key)")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        if cfg.tls_client_ca is not None:
            ctx.load_verify_locations(cfg.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED  # LINSTOR with a truststore: needClientAuth
        return ctx

    @property
    def client_common_names(self) -> list[str]:
        """Common names of the client certificates seen, oldest first (last 100)."""
        return list(self.app.client_cns)

    def stop_serving(self) -> None:
        """Go down as a controller process does when it stops or is killed: the REST port
        refuses connections, open connections are cut, a request still held by a latency rule
        is never applied. The state stays, as LINSTOR's database keeps it (a real controller
        restarted on an H2 file database keeps its objects: tests/faults/test_real_faults.py)."""
        server = self._server
        if server is None:
            return
        with self.app.counts_lock:
            self.app.generation += 1
        server.shutdown()
        server.server_close()
        server.cut_connections()
        self._server = None

    def start_serving(self) -> str:
        """Come back on the same address after :meth:`stop_serving`, with the same state."""
        if self._server is not None:
            assert self.url is not None
            return self.url
        assert self.url is not None, "start() the simulator first"
        parts = urlsplit(self.url)
        host = parts.hostname or "127.0.0.1"
        self._server = SimHTTPServer((host, parts.port or 0), self.app, self._ssl_context())
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="csi-linstor-sim", daemon=True)
        self._thread.start()
        log.info("LINSTOR simulator serving again on %s", self.url)
        return self.url

    def set_bearer_tokens(self, tokens: list[str]) -> None:
        """Replace the accepted tokens; an empty list turns token authentication off."""
        with self.app.counts_lock:
            self.app.tokens = set(tokens)

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        for server in (self._redirect, self._server):
            if server is not None:
                server.shutdown()
                server.server_close()
        with self.controller.lock:
            self.devices.close()
            for rd in self.controller.rds.values():
                for vd in rd.vds.values():
                    vd.device = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        _live.discard(self)
        log.info("LINSTOR simulator stopped")

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs --------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.app.faults

    def set_latency(self, seconds: float, route: str | None = None) -> None:
        """Delay matching requests. ``route`` is a regex searched in the path, in
        ``"METHOD /path"`` and in ``"METHOD /route/{template}"``; None = every request.
        ``seconds=0`` removes the rule for that route."""
        with self.app.faults_lock:
            self.faults.latency[:] = [r for r in self.faults.latency
                                      if (r.pattern.pattern if r.pattern else None) != route]
            if seconds > 0:
                self.faults.latency.append(_rule(route, seconds))

    def set_failure_rate(self, rate: float, route: str | None = None) -> None:
        """Answer this share of matching requests with 500 FAIL_UNKNOWN_ERROR (not applied)."""
        with self.app.faults_lock:
            self.faults.failure[:] = [r for r in self.faults.failure
                                      if (r.pattern.pattern if r.pattern else None) != route]
            if rate > 0:
                self.faults.failure.append(_rule(route, rate))

    def fail_next(self, count: int = 1, route: str | None = None) -> None:
        """Fail the next ``count`` matching requests with 500 FAIL_UNKNOWN_ERROR."""
        with self.app.faults_lock:
            self.faults.failure.append(_rule(route, 1.0, count))

    def set_drop_rate(self, rate: float, route: str | None = None) -> None:
        """Apply this share of matching requests, then close the connection without a reply."""
        with self.app.faults_lock:
            self.faults.drop[:] = [r for r in self.faults.drop
                                   if (r.pattern.pattern if r.pattern else None) != route]
            if rate > 0:
                self.faults.drop.append(_rule(route, rate))

    def drop_next(self, count: int = 1, route: str | None = None) -> None:
        """Apply the next ``count`` matching requests, then drop the connection unanswered."""
        with self.app.faults_lock:
            self.faults.drop.append(_rule(route, 1.0, count))

    def set_node_online(self, node: str, online: bool) -> None:
        with self.controller.lock:
            self.controller.nodes[node.upper()].online = bool(online)

    def set_node_props(self, node: str, props: dict[str, str]) -> None:
        with self.controller.lock:
            self.controller.nodes[node.upper()].props.update(props)

    def _res(self, rd: str, node: str) -> Any:
        return self.controller.rds[rd.upper()].resources[node.upper()]

    def set_disk_state(self, rd: str, node: str, state: str | None) -> None:
        """Override a replica's disk state (e.g. Outdated, Inconsistent); None = UpToDate."""
        if state is not None and state not in DISK_STATES:
            raise ValueError(f"unknown disk state {state!r}")
        with self.controller.lock:
            self._res(rd, node).disk_state = state

    def set_in_use(self, rd: str, node: str, in_use: bool) -> None:
        with self.controller.lock:
            self._res(rd, node).in_use = bool(in_use)

    def set_quorum(self, rd: str, node: str, quorum: bool) -> None:
        with self.controller.lock:
            self._res(rd, node).quorum = bool(quorum)

    def set_suspended(self, rd: str, node: str, suspended: bool) -> None:
        with self.controller.lock:
            self._res(rd, node).suspended = bool(suspended)

    def set_reported(self, rd: str, node: str, reported: bool) -> None:
        """Whether the satellite reported state for this replica (``state`` omitted if not)."""
        with self.controller.lock:
            self._res(rd, node).reported = bool(reported)

    def set_clone_behaviour(self, polls: int | None = None, fail: bool | None = None) -> None:
        """Clones started from now on answer CLONING ``polls`` times, then COMPLETE/FAILED."""
        with self.controller.lock:
            if polls is not None:
                self.controller.clone_polls = int(polls)
            if fail is not None:
                self.controller.clone_fail = bool(fail)

    def set_snapshot_failure(self, fail: bool) -> None:
        """New snapshots get flag FAILED_DEPLOYMENT instead of SUCCESSFUL."""
        with self.controller.lock:
            self.controller.snapshot_fail = bool(fail)

    def set_snapshot_delete_delay(self, seconds: float) -> None:
        """Deleted snapshots stay (flag DELETE, name taken) this long, as while LINSTOR's
        satellites delete them; 0 (the default) deletes at once."""
        with self.controller.lock:
            self.controller.snapshot_delete_seconds = float(seconds)

    def reset_faults(self) -> None:
        """Turn every knob off: latency, failures, drops, offline nodes, replica states."""
        with self.app.faults_lock:
            self.faults.clear()
        c = self.controller
        with c.lock:
            for n in c.nodes.values():
                n.online = True
            for rd in c.rds.values():
                for res in rd.resources.values():
                    res.disk_state = None
                    res.in_use = False
                    res.quorum = True
                    res.suspended = False
                    res.reported = True
            c.clone_polls = self.config.clone_polls
            c.clone_fail = False
            c.snapshot_fail = False
            c.snapshot_delete_seconds = 0.0

    def request_counts(self) -> dict[str, int]:
        """REST calls served, keyed ``"METHOD /route/{template}"``."""
        with self.app.counts_lock:
            return dict(self.app.counts)

    def reply_bytes(self) -> dict[str, int]:
        """JSON bytes of the REST replies sent (what a client received), keyed like
        ``request_counts``."""
        with self.app.counts_lock:
            return dict(self.app.reply_bytes)

    def reset_counts(self) -> None:
        with self.app.counts_lock:
            self.app.counts.clear()
            self.app.reply_bytes.clear()

    def request_bodies(self) -> list[tuple[str, str, Any]]:
        """Bodies of the REST requests served (most recent 20000): (method, template, JSON)."""
        with self.app.counts_lock:
            return list(self.app.bodies)

    def replies(self) -> list[tuple[str, str, int, Any]]:
        """REST replies sent (most recent 20000): (method, route template, status, JSON or
        None). Unrouted paths appear with their path instead of a template."""
        with self.app.counts_lock:
            raw = list(self.app.replies)
        return [(m, r, st, json.loads(d) if d else None) for m, r, st, d in raw]

    # -- inspection ---------------------------------------------------------------------------

    def list_resource_definitions(self) -> list[str]:
        with self.controller.lock:
            return sorted(rd.name for rd in self.controller.rds.values())

    def list_snapshots(self) -> list[str]:
        """``"<rd>/<snapshot>"`` for every snapshot."""
        with self.controller.lock:
            return sorted(f"{rd.name}/{s.name}" for rd in self.controller.rds.values()
                          for s in rd.snapshots.values())

    def device_path(self, rd: str, vnr: int = 0) -> str:
        with self.controller.lock:
            vd = self.controller.rds[rd.upper()].vds[vnr]
            if vd.device is not None and self.controller.rds[rd.upper()].resources:
                vd.device.ensure()
            return str(self.device_dir / f"drbd{vd.minor}")

    def drbd_status(self, rd: str, node: str) -> list[dict]:
        with self.controller.lock:
            self.controller.begin_request()
            return self.controller.drbd_status(rd, node)

    # -- /sim admin HTTP API ------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict, body: bytes) -> Any:
        data = json.loads(body) if body.strip() else {}
        route = data.get("route")
        parts = [p for p in path.split("/") if p][1:]
        if parts == ["stats"] and method == "GET":
            counts = self.request_counts()
            sent = self.reply_bytes()
            return {"counts": counts, "total": sum(counts.values()),
                    "reply_bytes": sent, "reply_bytes_total": sum(sent.values()),
                    "auth_failures": self.app.auth_failures,
                    "tls_failures": self.app.tls_failures}
        if parts in (["stats", "reset"], ["stats"]) and method in ("POST", "DELETE"):
            self.reset_counts()
            return {}
        if parts == ["latency"] and method == "POST":
            self.set_latency(float(data["seconds"]), route)
            return {}
        if parts == ["failure-rate"] and method == "POST":
            self.set_failure_rate(float(data["rate"]), route)
            return {}
        if parts == ["fail-next"] and method == "POST":
            self.fail_next(int(data.get("count", 1)), route)
            return {}
        if parts == ["drop"] and method == "POST":
            if "count" in data:
                self.drop_next(int(data["count"]), route)
            else:
                self.set_drop_rate(float(data["rate"]), route)
            return {}
        if parts == ["bearer-tokens"] and method == "POST":
            self.set_bearer_tokens([str(t) for t in data["tokens"]])
            return {}
        if parts == ["reset-faults"] and method == "POST":
            self.reset_faults()
            return {}
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "online" and method == "POST":
            self.set_node_online(parts[1], bool(data["online"]))
            return {}
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "props" and method == "POST":
            self.set_node_props(parts[1], dict(data))
            return {}
        if len(parts) == 3 and parts[0] == "resources" and method == "POST":
            rd, node = parts[1], parts[2]
            if "disk_state" in data:
                self.set_disk_state(rd, node, data["disk_state"])
            if "in_use" in data:
                self.set_in_use(rd, node, data["in_use"])
            if "quorum" in data:
                self.set_quorum(rd, node, data["quorum"])
            if "suspended" in data:
                self.set_suspended(rd, node, data["suspended"])
            if "reported" in data:
                self.set_reported(rd, node, data["reported"])
            return {}
        if parts == ["clone"] and method == "POST":
            self.set_clone_behaviour(data.get("polls"), data.get("fail"))
            return {}
        if parts == ["snapshot-failure"] and method == "POST":
            self.set_snapshot_failure(bool(data["fail"]))
            return {}
        if parts == ["snapshot-delete-delay"] and method == "POST":
            self.set_snapshot_delete_delay(float(data["seconds"]))
            return {}
        if parts == ["replies"] and method == "GET":
            return [{"method": m, "route": r, "status": st, "body": b}
                    for m, r, st, b in self.replies()]
        if parts == ["requests"] and method == "GET":
            return [{"method": m, "route": t, "body": b} for m, t, b in self.request_bodies()]
        if parts == ["double-opens"] and method == "GET":
            with self.controller.lock:
                return [{"resource": rd, "nodes": nodes}
                        for rd, nodes in self.controller.double_opens]
        if parts == ["state"] and method == "GET":
            return {"resource_definitions": self.list_resource_definitions(),
                    "snapshots": self.list_snapshots()}
        if len(parts) == 2 and parts[0] == "drbd-status" and method == "GET":
            node = (query.get("node") or [""])[0]
            if not node:
                raise ValueError("query parameter 'node' is required")
            return self.drbd_status(parts[1], node)
        raise KeyError(f"{method} {path}")


"""The controller's own Kubernetes API access: a few GETs and LISTs over ``requests``.

Two features need the Kubernetes API (issue 17), as in LINBIT's driver: the RWX block check (which
pods use a claim: only the pods of one KubeVirt VM may share a raw block volume) and consistency
groups (a PVC's labels). Neither is a watch or a write, so this is a small reader, not the official
client: importing ``kubernetes`` costs ~40 MB of RSS and ~0.5 s, and the driver otherwise never
needs it.

Where the connection comes from, first found wins:

1. ``--kubeconfig`` (or ``$KUBECONFIG``): its current context's server, CA, client certificate and
   key (files or ``-data``), bearer token (or ``tokenFile``); ``exec`` and ``auth-provider``
   plugins are refused with a clear message (use a token or certificate);
2. in cluster: ``$KUBERNETES_SERVICE_HOST``/``_PORT`` and the pod's service-account token and CA
   (the projected token rotates: it is re-read at most once a minute).

Every call has a timeout bounded by the RPC deadline; a failure raises :class:`KubeError` with the
server, the path and the status (403 names the RBAC rule the chart grants).
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import yaml

from csi_linstor.deadline import Deadline

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
TOKEN_REREAD_SECONDS = 60.0


class KubeConfigError(ValueError):
    """The Kubernetes connection cannot be configured (bad kubeconfig, not in a cluster)."""


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no response)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Connection:
    server: str
    verify: str | bool = True  # CA bundle path, or False (insecure-skip-tls-verify)
    cert: tuple[str, str] | None = None
    token: str | None = None
    token_file: str | None = None
    source: str = ""


def _data_file(data: str, suffix: str, keep: list[Any]) -> str:
    f = tempfile.NamedTemporaryFile(prefix="csi-linstor-kube-", suffix=suffix, delete=False)
    f.write(base64.b64decode(data))
    f.close()
    os.chmod(f.name, 0o600)
    keep.append(f.name)
    return f.name


def _path(value: str, base: Path) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def from_kubeconfig(path: Path) -> Connection:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {err}") from err
    base = path.parent
    name = doc.get("current-context")
    ctx = next((c.get("context", {}) for c in doc.get("contexts", []) if c.get("name") == name),
               None)
    if ctx is None:
        raise KubeConfigError(f"kubeconfig {path} has no current-context {name!r}")
    cluster = next((c.get("cluster", {}) for c in doc.get("clusters", [])
                    if c.get("name") == ctx.get("cluster")), None)
    user = next((u.get("user", {}) for u in doc.get("users", [])
                 if u.get("name") == ctx.get("user")), {}) or {}
    if not cluster or not cluster.get("server"):
        raise KubeConfigError(f"kubeconfig {path}: context {name!r} names no cluster server")
    if user.get("exec") or user.get("auth-provider"):
        raise KubeConfigError(f"kubeconfig {path}: user {ctx.get('user')!r} authenticates "
                              "through an exec or auth-provider plugin, which the driver does not "
                              "run; give it a token, tokenFile or client certificate")
    keep: list[Any] = []
    verify: str | bool = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority"):
        verify = _path(cluster["certificate-authority"], base)
    elif cluster.get("certificate-authority-data"):
        verify = _data_file(cluster["certificate-authority-data"], ".crt", keep)
    cert = None
    crt = user.get("client-certificate") and _path(user["client-certificate"], base) or \
        (user.get("client-certificate-data") and
         _data_file(user["client-certificate-data"], ".crt", keep))
    key = user.get("client-key") and _path(user["client-key"], base) or \
        (user.get("client-key-data") and _data_file(user["client-key-data"], ".key", keep))
    if crt and key:
        cert = (crt, key)
    token_file = _path(user["tokenFile"], base) if user.get("tokenFile") else None
    return Connection(server=str(cluster["server"]).rstrip("/"), verify=verify, cert=cert,
                      token=user.get("token"), token_file=token_file,
                      source=f"kubeconfig {path}")


def in_cluster() -> Connection:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
        "KUBERNETES_SERVICE_PORT")
    if not host or not port or not (SA_DIR / "token").exists():
        raise KubeConfigError(
            "no Kubernetes API: not running in a pod with a service-account token "
            "(KUBERNETES_SERVICE_HOST unset or no token in /var/run/secrets/kubernetes.io/"
            "serviceaccount) and no --kubeconfig given")
    if ":" in host:
        host = f"[{host}]"
    return Connection(server=f"https://{host}:{port}", verify=str(SA_DIR / "ca.crt"),
                      token_file=str(SA_DIR / "token"), source="the pod's service account")


def connection(kubeconfig: Path | None) -> Connection:
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if kubeconfig is not None:
        return from_kubeconfig(kubeconfig)
    return in_cluster()


class KubeApi:
    """GET one object or LIST a collection; objects are JSON dicts as ``kubectl get -o json``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.session = requests.Session()
        self.session.trust_env = False  # read once: no proxies/netrc for the API server
        self.session.verify = conn.verify
        if conn.cert:
            self.session.cert = conn.cert
        self._token = conn.token
        self._token_read = 0.0
        self._lock = threading.Lock()

    def _auth(self) -> dict[str, str]:
        if self.conn.token_file:
            with self._lock:
                if time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS:
                    try:
                        self._token = Path(self.conn.token_file).read_text().strip()
                    except OSError as err:
                        raise KubeError(f"cannot read the Kubernetes token "
                                        f"{self.conn.token_file}: {err}") from err
                    self._token_read = time.monotonic()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _call(self, path: str, deadline: Deadline,
              params: dict[str, str] | None = None) -> dict[str, Any] | None:
        url = self.conn.server + path
        timeout = (min(CONNECT_TIMEOUT, deadline.timeout(what="Kubernetes API call")),
                   deadline.timeout(READ_TIMEOUT, what="Kubernetes API call"))
        try:
            resp = self.session.get(url, params=params, headers=self._auth(), timeout=timeout)
        except requests.RequestException as err:
            raise KubeError(f"Kubernetes API {self.conn.server} ({self.conn.source}) unreachable "
                            f"for GET {path}: {err}") from err
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            hint = ""
            if resp.status_code in (401, 403):
                hint = ("; the controller's service account needs the RBAC rules the chart "
                        "grants (get persistentvolumeclaims, list pods and persistentvolumes)")
            raise KubeError(f"Kubernetes API GET {path} answered {resp.status_code}: "
                            f"{resp.text[:300]}{hint}", resp.status_code)
        try:
            body: dict[str, Any] = resp.json()
        except ValueError as err:
            raise KubeError(f"Kubernetes API GET {path} answered no JSON: {err}") from err
        return body

    def get(self, path: str, deadline: Deadline) -> dict[str, Any] | None:
        """The object at ``path`` (e.g. ``/api/v1/namespaces/ns/persistentvolumeclaims/x``);
        None when it does not exist."""
        return self._call(path, deadline)

    def list(self, path: str, deadline: Deadline,
             params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """All items of a collection, page by page (``limit``/``continue``)."""
        out: list[dict[str, Any]] = []
        query = dict(params or {}, limit="500")
        while True:
            body = self._call(path, deadline, query) or {}
            out.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return out
            query["continue"] = token


def pvc_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/persistentvolumeclaims/" \
           f"{quote(name, safe='')}"


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"


PVS_PATH = "/api/v1/persistentvolumes"


class LazyKubeApi:
    """The API built on first use: a driver whose features never need Kubernetes starts (and
    runs) without it; the first call that does need it fails with the configuration error."""

    def __init__(self, kubeconfig: Path | None) -> None:
        self.kubeconfig = kubeconfig
        self._api: KubeApi | None = None
        self._lock = threading.Lock()

    def __call__(self) -> KubeApi:
        with self._lock:
            if self._api is None:
                self._api = KubeApi(connection(self.kubeconfig))
                log.info("Kubernetes API: %s (%s)", self._api.conn.server, self._api.conn.source)
            return self._api

"""A small read-only Kubernetes reader on the official ``kubernetes`` client.

Why the official client: it is the maintained reference client, already pinned for the test
suite (kubernetes==37.0.1), and it loads kubeconfig files exactly as kubectl does (contexts, exec
and token auth, client certificates, in-cluster service accounts). It is an optional extra
(``pip install csi-linstor[operate]``): ``serve`` never imports it.

Every call has a timeout; objects come back as plain JSON dicts (camelCase, as kubectl shows
them), so the checks read the same field names an operator reads in ``kubectl get -o yaml``.
Connection and authentication failures raise :class:`KubeUnreachable` (exit code 4) with a
message naming the API server and the configuration source, never a credential.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csi_linstor.ops.common import KubeUnreachable

SNAP = ("snapshot.storage.k8s.io", "v1")
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)


class Forbidden(Exception):
    """The identity in use may not read this kind of object (RBAC); the check is skipped."""


def _import() -> Any:
    try:
        import kubernetes  # noqa: F401 - imported for its availability
    except ImportError as err:
        raise KubeUnreachable(
            "the 'kubernetes' Python package is not installed: pip install 'csi-linstor[operate]' "
            "(the container image has it)") from err
    from kubernetes import client, config

    return client, config


def config_source(kubeconfig: str | None) -> tuple[str, str | None]:
    """('kubeconfig', path) or ('in-cluster', None): --kubeconfig, then $KUBECONFIG, then the
    pod's service account, then ~/.kube/config."""
    if kubeconfig:
        return "kubeconfig", kubeconfig
    env = os.environ.get("KUBECONFIG")
    if env:
        return "kubeconfig", env.split(os.pathsep)[0]
    if os.environ.get("KUBERNETES_SERVICE_HOST") and Path(
            "/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        return "in-cluster", None
    return "kubeconfig", str(Path.home() / ".kube" / "config")


class KubeReader:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        client, config = _import()
        self._client = client
        kind, path = config_source(kubeconfig)
        try:
            if kind == "in-cluster":
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                self.source = "the pod's service account (in-cluster)"
                self.api = client.ApiClient(cfg)
                ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                self.namespace = ns_file.read_text().strip() if ns_file.exists() else ""
            else:
                assert path is not None
                if not Path(path).is_file():
                    raise KubeUnreachable(
                        f"no Kubernetes configuration: {path} does not exist; pass --kubeconfig "
                        "FILE or set KUBECONFIG (inside a pod the service account is used)")
                self.source = f"kubeconfig {path}" + (f" (context {context})" if context else "")
                self.api = config.new_client_from_config(config_file=path, context=context)
                self.namespace = _context_namespace(config, path, context)
        except KubeUnreachable:
            raise
        except (config.ConfigException, OSError, ValueError, KeyError, TypeError) as err:
            raise KubeUnreachable(f"cannot load the Kubernetes configuration from "
                                  f"{path or 'the service account'}: {_first_line(err)}") from err
        self.api.configuration.retries = 1
        self.server = str(self.api.configuration.host)
        self.core = client.CoreV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def close(self) -> None:
        self.api.close()

    # -- transport ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call, JSON dicts out. 404 -> None; 403 -> Forbidden; no answer or 401 ->
        KubeUnreachable."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            result = fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            reason = _api_reason(err)
            if err.status == 403:
                raise Forbidden(f"not allowed to {what}: {reason}") from err
            if err.status == 401:
                raise KubeUnreachable(
                    f"the Kubernetes API at {self.server} refused the credentials of "
                    f"{self.source} (401 Unauthorized); renew them (kubectl would fail too)"
                ) from err
            if err.status == 0 or err.status is None:
                raise KubeUnreachable(f"the Kubernetes API at {self.server} did not answer "
                                      f"while trying to {what}: {reason}") from err
            raise KubeUnreachable(f"the Kubernetes API at {self.server} failed to {what}: "
                                  f"{err.status} {reason}") from err
        except (HTTPError, OSError) as err:
            raise KubeUnreachable(
                f"cannot reach the Kubernetes API at {self.server} (from {self.source}): "
                f"{_first_line(err)}; check the kubeconfig's server and that the cluster is up"
            ) from err
        if isinstance(result, dict):
            return result
        return self.api.sanitize_for_serialization(result)

    def _items(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
               ) -> list[dict[str, Any]]:
        data = self._call(what, fn, *args, **kwargs)
        return list((data or {}).get("items") or [])

    # -- reads -------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise KubeUnreachable unless the API server answers (GET /version)."""
        from kubernetes import client

        self._call("read the server version", client.VersionApi(self.api).get_code)

    def storage_classes(self) -> list[dict[str, Any]]:
        return self._items("list StorageClasses", self.storage.list_storage_class)

    def storage_class(self, name: str) -> dict[str, Any] | None:
        return self._call(f"read StorageClass {name}", self.storage.read_storage_class, name)

    def pvcs(self) -> list[dict[str, Any]]:
        return self._items("list PersistentVolumeClaims",
                           self.core.list_persistent_volume_claim_for_all_namespaces)

    def pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(f"read PersistentVolumeClaim {namespace}/{name}",
                          self.core.read_namespaced_persistent_volume_claim, name, namespace)

    def pvs(self) -> list[dict[str, Any]]:
        return self._items("list PersistentVolumes", self.core.list_persistent_volume)

    def pv(self, name: str) -> dict[str, Any] | None:
        return self._call(f"read PersistentVolume {name}", self.core.read_persistent_volume, name)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return self._items(f"list pods in namespace {namespace}", self.core.list_namespaced_pod,
                           namespace)

    def volume_attachments(self) -> list[dict[str, Any]]:
        return self._items("list VolumeAttachments", self.storage.list_volume_attachment)

    def csinode(self, name: str) -> dict[str, Any] | None:
        return self._call(f"read CSINode {name}", self.storage.read_csi_node, name)

    def events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """Events about one object, oldest first (as ``kubectl describe`` lists them)."""
        sel = f"involvedObject.kind={kind},involvedObject.name={name}"
        items = self._items(f"list events of {kind} {namespace}/{name}",
                            self.core.list_namespaced_event, namespace, field_selector=sel)
        return sorted(items, key=event_time)

    def volume_snapshots(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            return self._items("list VolumeSnapshots", self.custom.list_namespaced_custom_object,
                               *SNAP, namespace, "volumesnapshots")
        return self._items("list VolumeSnapshots", self.custom.list_cluster_custom_object,
                           *SNAP, "volumesnapshots")

    def volume_snapshot_contents(self) -> list[dict[str, Any]]:
        return self._items("list VolumeSnapshotContents",
                           self.custom.list_cluster_custom_object, *SNAP,
                           "volumesnapshotcontents")


def _context_namespace(config: Any, path: str, context: str | None) -> str:
    """The namespace the kubeconfig context names (what kubectl uses without -n), or ""."""
    contexts, active = config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "")


def event_time(ev: dict[str, Any]) -> str:
    return str(ev.get("lastTimestamp") or ev.get("eventTime")
               or (ev.get("metadata") or {}).get("creationTimestamp") or "")


def _api_reason(err: Any) -> str:
    """The API server's message (Status.message), never the response headers."""
    try:
        body = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or err.reason or "no reason given")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) < 300 else line[:300] + "..."

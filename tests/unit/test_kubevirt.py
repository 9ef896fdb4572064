"""The RWX block check (kube/kubevirt.py) and the controller's Kubernetes reader (kube/api.py):
which pods share a claim, when they count as one KubeVirt VM, and how a kubeconfig is read."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError
from csi_linstor.kube.api import KubeApi, KubeConfigError, KubeError, connection, from_kubeconfig
from csi_linstor.kube.kubevirt import KubeVirtCheck, check_one_vm, vm_of


def pod(name: str, claim: str, *, vm: str | None = None, phase: str = "Running",
        labels: dict[str, str] | None = None, owner: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
    if vm:
        meta["labels"]["vm.kubevirt.io/name"] = vm
    if owner:
        meta["ownerReferences"] = [{"kind": "Pod", "name": owner}]
    return {"metadata": meta, "status": {"phase": phase},
            "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}


def refusal(pods: list[dict[str, Any]]) -> str | None:
    try:
        check_one_vm(pods, "pvc-1", "ns", "disk")
    except CsiError as err:
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        return err.message
    return None


def test_the_pods_of_one_vm_may_share_the_disk():
    assert refusal([pod("virt-launcher-a", "disk", vm="vm1"),
                    pod("virt-launcher-b", "disk", vm="vm1")]) is None
    assert refusal([pod("one", "disk")]) is None  # a single user needs no check
    # pods of other claims and finished pods do not count
    assert refusal([pod("web", "disk"), pod("other", "data"),
                    pod("done", "disk", phase="Succeeded")]) is None


def test_two_vms_or_plain_pods_are_refused_naming_the_pods():
    msg = refusal([pod("virt-launcher-a", "disk", vm="vm1"),
                   pod("virt-launcher-b", "disk", vm="vm2")])
    assert msg and "virt-launcher-a (VM vm1)" in msg and "virt-launcher-b (VM vm2)" in msg
    msg = refusal([pod("web-1", "disk"), pod("web-2", "disk")])
    assert msg and "web-1 (no KubeVirt VM)" in msg and "--disable-rwx-block-validation" in msg
    assert refusal([pod("virt-launcher-a", "disk", vm="vm1"), pod("web", "disk")])


def test_a_hotplug_pod_counts_as_its_owner_vm():
    launcher = pod("virt-launcher-a", "other", vm="vm1")
    hotplug = pod("hp-volume-x", "disk", labels={"kubevirt.io": "hotplug-disk"},
                  owner="virt-launcher-a")
    assert vm_of(hotplug, {"virt-launcher-a": launcher}) == "vm1"
    assert refusal([launcher, hotplug, pod("virt-launcher-b", "disk", vm="vm1")]) is None
    orphan = pod("hp-volume-y", "disk", labels={"kubevirt.io": "hotplug-disk"}, owner="gone")
    assert refusal([orphan, pod("virt-launcher-b", "disk", vm="vm1")])


class FakeApi:
    def __init__(self, pvs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.pvs, self.pods, self.paths = pvs, pods, []

    def list(self, path: str, deadline: Deadline) -> list[dict[str, Any]]:
        self.paths.append(path)
        return self.pvs if path.endswith("/persistentvolumes") else self.pods


def test_the_check_finds_the_claim_from_the_pv_and_maps_api_failures():
    pvs = [{"spec": {"csi": {"volumeHandle": "pvc-1"},
                     "claimRef": {"namespace": "vms", "name": "disk"}}}]
    api = FakeApi(pvs, [pod("a", "disk"), pod("b", "disk")])
    with pytest.raises(CsiError) as err:
        KubeVirtCheck(lambda: api)("pvc-1", None, None, Deadline(5))
    assert "claim vms/disk" in err.value.message
    assert api.paths == ["/api/v1/persistentvolumes", "/api/v1/namespaces/vms/pods"]
    # no PV names the volume: allowed (LINBIT's driver does the same), a warning logged
    KubeVirtCheck(lambda: FakeApi([], []))("pvc-2", None, None, Deadline(5))

    def no_config() -> Any:
        raise KubeConfigError("no Kubernetes API: not running in a pod")

    with pytest.raises(CsiError) as err:
        KubeVirtCheck(no_config)("pvc-1", "vms", "disk", Deadline(5))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not running in a pod" in err.value.message

    class Down(FakeApi):
        def list(self, path: str, deadline: Deadline) -> list[dict[str, Any]]:
            raise KubeError("Kubernetes API https://k:6443 unreachable")

    with pytest.raises(CsiError) as err:
        KubeVirtCheck(lambda: Down([], []))("pvc-1", "vms", "disk", Deadline(5))
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and "unreachable" in err.value.message


def kubeconfig(tmp: Path, user: dict[str, Any], server: str = "https://k:6443",
               cluster: dict[str, Any] | None = None) -> Path:
    doc = {"current-context": "c",
           "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
           "clusters": [{"name": "k", "cluster": {"server": server, **(cluster or {})}}],
           "users": [{"name": "u", "user": user}]}
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_credentials_are_read_and_plugins_refused(tmp_path, monkeypatch):
    data = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    conn = from_kubeconfig(kubeconfig(tmp_path, {"client-certificate-data": data,
                                                 "client-key-data": data},
                                      cluster={"certificate-authority": "ca.crt"}))
    assert conn.verify == str(tmp_path / "ca.crt")  # relative to the kubeconfig's directory
    assert conn.cert and Path(conn.cert[0]).read_bytes().startswith(b"-----BEGIN")
    assert oct(Path(conn.cert[1]).stat().st_mode & 0o777) == "0o600"
    conn = from_kubeconfig(kubeconfig(tmp_path, {"tokenFile": "/t"}, server="https://k:6443/"))
    assert (conn.server, conn.token_file) == ("https://k:6443", "/t")
    with pytest.raises(KubeConfigError, match="exec or auth-provider"):
        from_kubeconfig(kubeconfig(tmp_path, {"exec": {"command": "aws"}}))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="no --kubeconfig"):
        connection(None)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, {"token": "x"})))
    assert connection(None).token == "x"


@pytest.fixture
def apiserver():
    """A stand-in API server: pods pages, a 403 for PVs, the bearer token each request had."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization", ""))
            if self.path.startswith("/api/v1/persistentvolumes"):
                self._send(403, {"message": "forbidden"})
            elif "continue=p2" in self.path:
                self._send(200, {"items": [{"metadata": {"name": "b"}}], "metadata": {}})
            elif self.path.startswith("/api/v1/namespaces/ns/pods"):
                self._send(200, {"items": [{"metadata": {"name": "a"}}],
                                 "metadata": {"continue": "p2"}})
            else:
                self._send(404, {})

        def _send(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def test_the_reader_pages_lists_and_says_which_rbac_rule_is_missing(tmp_path, apiserver):
    url, seen = apiserver
    api = KubeApi(from_kubeconfig(kubeconfig(tmp_path, {"token": "secret"}, server=url)))
    assert [p["metadata"]["name"] for p in api.list("/api/v1/namespaces/ns/pods",
                                                    Deadline(5))] == ["a", "b"]
    assert seen == ["Bearer secret", "Bearer secret"]
    assert api.get("/api/v1/namespaces/ns/persistentvolumeclaims/x", Deadline(5)) is None
    with pytest.raises(KubeError) as err:
        api.list("/api/v1/persistentvolumes", Deadline(5))
    assert err.value.status == 403 and "list pods and persistentvolumes" in str(err.value)

"""A real Kubernetes control plane and the real CSI sidecars, as plain processes on loopback.

``KubeCluster`` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by
tests/k8s/build-tools.sh from tests/k8s/tools), with a PKI made per run by openssl. ``CsiDeployment``
then installs the Helm chart's rendered objects into it (CSIDriver, RBAC, the controller
Deployment, the node DaemonSet), starts our driver in controller mode and every sidecar of the
controller pod **with the arguments the chart renders** (so a wrong flag in the chart fails these
tests), each authenticated as the chart's controller ServiceAccount (so a missing RBAC rule fails
them too), plus snapshot-controller, and creates what kubelets would: a Node per LINSTOR node
(labelled with the segments NodeGetInfo reports) and a CSINode. No kubelet can run here (no
container runtime): pods are scheduled and attached, never started; the node half of the CSI
flow stays with csi-sanity and tests/e2e's kubelet-shaped harness.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.real_linstor import free_port

REPO = Path(__file__).resolve().parent.parent.parent
CHART = REPO / "helm" / "csi-linstor"
DRIVER = "linstor.csi.linbit.com"
NAMESPACE = "linstor"
HELM = shutil.which("helm") or str(Path.home() / "go" / "bin" / "helm")


def wait_for(cond: Callable[[], Any], seconds: float, what: str, every: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy; AssertionError after ``seconds``."""
    end = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < end:
        try:
            last = cond()
        except Exception as e:  # noqa: BLE001 - a poll that raises is retried, and reported
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


@dataclass
class Processes:
    work: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.work / f"{name}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                 cwd=REPO)
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.popen.poll() is not None]
        if dead:
            raise AssertionError("; ".join(f"{p.name} exited {p.popen.returncode}:\n{p.tail()}"
                                           for p in dead))

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.popen.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(10)
        self.procs.clear()


# ---------------------------------------------------------------------------------------------
# PKI


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA, an apiserver serving cert for 127.0.0.1, an admin client cert in system:masters,
    and the service-account signing key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-subj", "/CN=csi-linstor-test-ca", "-days", "2", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in (("apiserver", "/CN=kube-apiserver", "server.ext"),
                            ("admin", "/O=system:masters/CN=admin", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext, cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(path: Path, server: str, ca: Path, *, cert: Path | None = None,
               key: Path | None = None, token: str | None = None) -> Path:
    user: dict[str, Any] = {}
    if cert is not None and key is not None:
        user = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        user = {"token": token}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority": str(ca)}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    return path


# ---------------------------------------------------------------------------------------------
# the control plane


class KubeCluster:
    def __init__(self, work: Path, bin_dir: Path) -> None:
        self.work = work
        self.bin = bin_dir
        self.pki = work / "pki"
        self.procs = Processes(work)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.admin_kubeconfig = work / "admin.kubeconfig"
        self.api: Any = None  # kubernetes.client.ApiClient

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def start(self) -> KubeCluster:
        make_pki(self.pki)
        kubeconfig(self.admin_kubeconfig, self.server, self.pki / "ca.crt",
                   cert=self.pki / "admin.crt", key=self.pki / "admin.key")
        client, peer, metrics = free_port(), free_port(), free_port()
        self.procs.spawn("etcd", [
            self.tool("etcd"), "--data-dir", str(self.work / "etcd"), "--unsafe-no-fsync",
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{metrics}"])
        p = self.pki
        self.procs.spawn("kube-apiserver", [
            self.tool("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}", f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}", f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=Node,RBAC",
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
            "--allow-privileged=true"])  # as every real cluster: the node plugin is privileged
        self._connect()
        kc = str(self.admin_kubeconfig)
        self.procs.spawn("kube-controller-manager", [
            self.tool("kube-controller-manager"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--controllers=*", "--leader-elect=false",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=false", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            # no kubelet renews the fake Nodes' heartbeats: keep them Ready for the whole run
            "--node-monitor-grace-period=24h", "--node-startup-grace-period=24h"])
        self.procs.spawn("kube-scheduler", [
            self.tool("kube-scheduler"), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}"])
        return self

    def _connect(self) -> None:
        from kubernetes import client, config

        def ready() -> bool:
            self.procs.check_alive()
            out = subprocess.run([self.tool("kubectl"), f"--kubeconfig={self.admin_kubeconfig}",
                                  "get", "--raw", "/readyz"], capture_output=True, text=True,
                                 timeout=10, check=False)
            return out.stdout.strip() == "ok"

        wait_for(ready, 60, "kube-apiserver /readyz", every=0.3)
        self.api = config.new_client_from_config(str(self.admin_kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        out = subprocess.run([self.tool("kubectl"), f"--kubeconfig={self.admin_kubeconfig}",
                              *args], capture_output=True, text=True, input=input, timeout=60,
                             check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def apply(self, objects: list[dict[str, Any]] | str) -> None:
        text = objects if isinstance(objects, str) else yaml.safe_dump_all(objects)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text)

    def stop(self) -> None:
        if self.api is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001 - best effort at teardown
                self.api.close()
        self.procs.stop()


# ---------------------------------------------------------------------------------------------
# the chart, rendered


def render_chart(linstor_url: str, values: list[str] | None = None) -> list[dict[str, Any]]:
    argv = [HELM, "template", "csi-linstor", str(CHART), "--namespace", NAMESPACE,
            "--kube-version", "1.34.0", "--set", f"linstor.endpoint={linstor_url}"]
    for v in values or []:
        argv += ["--set", v]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise AssertionError(f"helm template failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objs: list[dict[str, Any]], kind: str, part: str = "") -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and part in o["metadata"]["name"]]
    assert len(hits) == 1, f"{kind} *{part}*: {[o['metadata']['name'] for o in hits]}"
    return hits[0]


def container_argv(c: dict[str, Any], env: dict[str, str]) -> list[str]:
    """A container's command line with $(VAR) references expanded from ``env``."""
    out = []
    for a in [*(c.get("command") or []), *(c.get("args") or [])]:
        for k, v in env.items():
            a = a.replace(f"$({k})", v)
        out.append(a)
    return out


@dataclass
class NodeInfo:
    name: str
    segments: dict[str, str]
    max_volumes: int


class CsiDeployment:
    """The chart installed into ``cluster``, our driver and the sidecars running against it."""

    def __init__(self, cluster: KubeCluster, linstor_url: str, nodes: list[NodeInfo],
                 crds_dir: Path, values: list[str] | None = None) -> None:
        self.cluster = cluster
        self.linstor_url = linstor_url
        self.nodes = nodes
        self.crds_dir = crds_dir
        self.objects = render_chart(linstor_url, values)
        self.work = cluster.work / "csi"
        self.work.mkdir(exist_ok=True)
        self.sock = self.work / "csi.sock"
        self.procs = Processes(self.work)

    def start(self) -> CsiDeployment:
        c = self.cluster
        c.kubectl("create", "namespace", NAMESPACE)
        self._fake_kubelets()
        self._snapshot_crds()
        # everything the chart renders goes into the API server: a wrong object fails here
        c.apply(self.objects)
        dep = find(self.objects, "Deployment", "controller")
        pod = wait_for(lambda: self._controller_pod(dep), 60, "the controller Deployment's pod")
        token = self._service_account_token(dep["spec"]["template"]["spec"]["serviceAccountName"])
        sa_kubeconfig = kubeconfig(self.work / "controller-sa.kubeconfig", c.server,
                                   c.pki / "ca.crt", token=token)
        env = {"NAMESPACE": NAMESPACE, "POD_NAME": pod, "LS_CONTROLLERS": self.linstor_url,
               "KUBE_NODE_NAME": self.nodes[0].name}
        for cont in dep["spec"]["template"]["spec"]["containers"]:
            argv = container_argv(cont, env)
            argv = [a.replace("/csi/csi.sock", str(self.sock)) for a in argv]
            name = cont["name"]
            if name == "csi-linstor":
                # the driver reads PVCs and pods with the chart's service account (issue 17),
                # as in a pod; here through a kubeconfig holding that account's token
                self.procs.spawn(name, [sys.executable, "-m", "csi_linstor.cli", *argv[1:]]
                                 if argv[0] == "csi-linstor" else
                                 [sys.executable, "-m", "csi_linstor.cli", *argv],
                                 env=dict(os.environ, **env, KUBECONFIG=str(sa_kubeconfig)))
                wait_for(self.sock.exists, 30, "the driver's socket")
                continue
            if name == "liveness-probe":
                continue  # serves /healthz for the kubelet's probe; nothing calls it here
            self.procs.spawn(name, [c.tool(name), *argv, f"--kubeconfig={sa_kubeconfig}"],
                             env=dict(os.environ, **env))
        self.procs.spawn("snapshot-controller", [
            c.tool("snapshot-controller"), f"--kubeconfig={c.admin_kubeconfig}",
            "--leader-election=false", "--feature-gates=CSIVolumeGroupSnapshot=true"])
        time.sleep(1.0)
        self.procs.check_alive()
        return self

    def _controller_pod(self, dep: dict[str, Any]) -> str:
        sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        pods = self.cluster.core.list_namespaced_pod(NAMESPACE, label_selector=sel).items
        return pods[0].metadata.name if pods else ""

    def _service_account_token(self, sa: str) -> str:
        from kubernetes import client

        req = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc"],
                                           expiration_seconds=7200))
        return self.cluster.core.create_namespaced_service_account_token(
            sa, NAMESPACE, req).status.token

    def _fake_kubelets(self) -> None:
        """What a kubelet and node-driver-registrar would publish: a Ready Node labelled with
        NodeGetInfo's segments, and a CSINode naming this driver."""
        c = self.cluster
        for n in self.nodes:
            labels = {"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux",
                      **n.segments}
            c.core.create_node({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": labels, "annotations": {
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true"}}})
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            c.core.patch_node_status(n.name, {"status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "fake kubelet", "lastHeartbeatTime": now,
                                "lastTransitionTime": now}],
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}})
            driver: dict[str, Any] = {"name": DRIVER, "nodeID": n.name,
                                      "topologyKeys": sorted(n.segments)}
            if n.max_volumes:
                driver["allocatable"] = {"count": n.max_volumes}
            c.storage.create_csi_node({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
                                       "metadata": {"name": n.name},
                                       "spec": {"drivers": [driver]}})

    def _snapshot_crds(self) -> None:
        """The snapshot CRDs, Established before csi-snapshotter and snapshot-controller start
        (otherwise snapshots take 30 s of retries and group snapshots stay off)."""
        files = sorted(self.crds_dir.glob("*.yaml"))
        assert files, f"no snapshot CRDs in {self.crds_dir}"
        self.cluster.apply("\n---\n".join(f.read_text() for f in files))
        names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]

        def established() -> bool:
            for name in names:
                crd = self.cluster.ext.read_custom_resource_definition(name)
                conds = {x.type: x.status for x in (crd.status.conditions or [])}
                if conds.get("Established") != "True":
                    return False
            return True

        wait_for(established, 30, "the snapshot CRDs to be Established")

    def stop(self) -> None:
        self.procs.stop()


def node_infos(linstor_url: str, node_names: list[str], work: Path) -> list[NodeInfo]:
    """NodeGetInfo of a node-mode driver per LINSTOR node (what node-driver-registrar reads)."""
    import grpc

    from csi_linstor._gen import csi_pb2, csi_pb2_grpc

    procs = Processes(work)
    out = []
    try:
        for name in node_names:
            sock = work / f"node-{name}.sock"
            procs.spawn(f"node-{name}", [
                sys.executable, "-m", "csi_linstor.cli", "serve", "--mode", "node",
                "--node", name, "--linstor-endpoint", linstor_url,
                "--csi-endpoint", f"unix://{sock}", "--kubelet-dir", str(work / "kubelet")])
            wait_for(sock.exists, 30, f"node plugin {name}")
            with grpc.insecure_channel(f"unix://{sock}") as ch:
                info = csi_pb2_grpc.NodeStub(ch).NodeGetInfo(csi_pb2.NodeGetInfoRequest(),
                                                              timeout=30)
            out.append(NodeInfo(info.node_id, dict(info.accessible_topology.segments),
                                info.max_volumes_per_node))
    finally:
        procs.stop()
    return out


def json_dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


@contextlib.contextmanager
def kube_cluster(work: Path, bin_dir: Path) -> Iterator[KubeCluster]:
    c = KubeCluster(work, bin_dir)
    try:
        yield c.start()
    finally:
        c.stop()

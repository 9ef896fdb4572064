"""Properties of the rendered Helm chart helm/csi-linstor."""

from __future__ import annotations

import re

import pytest
from deploy_helpers import FULL_VALUES, HelmResult, RenderFn

DRIVER = "csi-linstor"  # name of the driver container in both pods
CONTROLLER_SIDECARS = {"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"}


# --- helpers -----------------------------------------------------------------------------
def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def container(workload: dict, name: str) -> dict:
    found = [c for c in containers(workload) if c["name"] == name]
    assert found, f"no container {name} in {workload['metadata']['name']}"
    return found[0]


def expand(value: str, c: dict) -> str:
    """Expand $(VAR) the way the kubelet does, from the container's literal env values."""
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    return re.sub(
        r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value
    )


def flag(c: dict, name: str) -> str | None:
    """Value of --name=value in the container's args (last one wins, like Go's flag package)."""
    val = None
    for a in c.get("args", []):
        if a.startswith(f"--{name}="):
            val = expand(a.split("=", 1)[1], c)
    return val


def workloads(r: HelmResult) -> list[dict]:
    return r.of_kind("Deployment") + r.of_kind("DaemonSet")


# --- images ------------------------------------------------------------------------------
def test_every_image_is_pinned(any_render: HelmResult) -> None:
    for w in workloads(any_render):
        for c in containers(w):
            image = c["image"]
            name, _, tag = image.rpartition("/")[2].partition(":")
            assert tag, f"{c['name']}: image {image} has no tag"
            assert tag != "latest", f"{c['name']}: image {image} uses :latest"
            assert name


def test_driver_image_defaults_to_app_version(default_render: HelmResult) -> None:
    for w in workloads(default_render):
        assert container(w, DRIVER)["image"] == "csi-linstor:0.1.0"


# --- CSI socket ----------------------------------------------------------------------------
def test_sidecars_talk_to_the_driver_socket(any_render: HelmResult) -> None:
    for w in workloads(any_render):
        driver = container(w, DRIVER)
        endpoint = flag(driver, "csi-endpoint")
        assert endpoint and endpoint.startswith("unix://"), endpoint
        sock = endpoint[len("unix://") :]
        sock_dir = sock.rsplit("/", 1)[0]
        driver_mounts = {m["mountPath"]: m["name"] for m in driver["volumeMounts"]}
        assert sock_dir in driver_mounts, f"driver does not mount {sock_dir}"
        sidecars = [c for c in containers(w) if c["name"] != DRIVER]
        assert sidecars
        for c in sidecars:
            addr = flag(c, "csi-address")
            assert addr == sock, (
                f"{w['kind']}/{c['name']}: --csi-address={addr}, driver listens on {sock}"
            )
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get(sock_dir) == driver_mounts[sock_dir], (
                f"{c['name']} does not share the socket volume with the driver"
            )


# --- controller ----------------------------------------------------------------------------
def test_controller_pod_is_unprivileged(any_render: HelmResult) -> None:
    dep = any_render.one("Deployment", "controller")
    spec = pod_spec(dep)
    assert not [v for v in spec.get("volumes", []) if "hostPath" in v]
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    psc = spec.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True
    assert psc.get("runAsUser", 0) != 0
    for c in containers(dep):
        sc = c.get("securityContext", {})
        assert not sc.get("privileged"), c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
        assert not sc.get("capabilities", {}).get("add"), c["name"]
        seccomp = sc.get("seccompProfile") or psc.get("seccompProfile")
        assert seccomp == {"type": "RuntimeDefault"}, c["name"]
        assert sc.get("runAsUser", 1) != 0, c["name"]


def test_controller_driver_mode_and_liveness(any_render: HelmResult) -> None:
    dep = any_render.one("Deployment", "controller")
    driver = container(dep, DRIVER)
    assert driver["args"][0] == "serve"
    assert flag(driver, "mode") == "controller"
    probe_port = driver["livenessProbe"]["httpGet"]["port"]
    assert driver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    lp = container(dep, "liveness-probe")
    assert int(flag(lp, "health-port")) == probe_port
    assert probe_port in [p["containerPort"] for p in lp["ports"]]
    socket_vol = [v for v in pod_spec(dep)["volumes"] if v["name"] == "socket-dir"]
    assert socket_vol and "emptyDir" in socket_vol[0]
    assert {c["name"] for c in containers(dep)} >= CONTROLLER_SIDECARS | {DRIVER, "liveness-probe"}


def test_leader_election_in_every_controller_sidecar(any_render: HelmResult) -> None:
    dep = any_render.one("Deployment", "controller")
    for name in CONTROLLER_SIDECARS:
        c = container(dep, name)
        assert "--leader-election=true" in c["args"], name
        assert "--leader-election-namespace=$(NAMESPACE)" in c["args"], name
        ns = [e for e in c["env"] if e["name"] == "NAMESPACE"]
        assert ns and ns[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", name


def test_provisioner_flags(default_render: HelmResult) -> None:
    p = container(default_render.one("Deployment", "controller"), "csi-provisioner")
    for a in (
        "--feature-gates=Topology=true",
        "--extra-create-metadata",
        "--default-fstype=ext4",
        "--enable-capacity",
        "--capacity-ownerref-level=2",
    ):
        assert a in p["args"], a
    assert flag(p, "timeout") == "1m"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in p["env"]}
    assert env == {"NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}


def worker_flags(dep: dict) -> dict[str, int]:
    out = {}
    for c in containers(dep):
        if c["name"] == DRIVER:
            continue
        for f in ("worker-threads", "workers"):
            v = flag(c, f)
            if v is not None:
                out[c["name"]] = int(v)
    return out


@pytest.mark.parametrize(
    "extra", [(), ("--set", "workers=4"), ("--set", "controller.sidecarWorkerThreads=100")]
)
def test_sidecar_workers_never_exceed_driver_workers(
    render: RenderFn, extra: tuple[str, ...]
) -> None:
    r = render(*extra)
    assert r.returncode == 0, r.stderr
    dep = r.one("Deployment", "controller")
    driver_workers = int(flag(container(dep, DRIVER), "workers"))
    sidecar = worker_flags(dep)
    assert set(sidecar) == CONTROLLER_SIDECARS
    for name, n in sidecar.items():
        assert 1 <= n <= driver_workers, f"{name}: {n} workers > driver --workers={driver_workers}"


def test_full_values_cap_sidecar_workers(full_render: HelmResult) -> None:
    dep = full_render.one("Deployment", "controller")
    assert flag(container(dep, DRIVER), "workers") == "8"
    assert set(worker_flags(dep).values()) == {8}
    assert flag(container(dep, "csi-provisioner"), "timeout") == "2m"


def test_storage_capacity_off(render: RenderFn) -> None:
    r = render("--set", "storageCapacity=false")
    assert r.returncode == 0, r.stderr
    assert r.one("CSIDriver")["spec"]["storageCapacity"] is False
    p = container(r.one("Deployment", "controller"), "csi-provisioner")
    assert "--enable-capacity" not in p["args"]
    role = r.one("Role")
    assert not [rule for rule in role["rules"] if "csistoragecapacities" in rule["resources"]]


def test_group_snapshots(default_render: HelmResult, full_render: HelmResult) -> None:
    gate = "--feature-gates=CSIVolumeGroupSnapshot=true"

    def groups(r: HelmResult) -> set[str]:
        return {g for rule in r.one("ClusterRole")["rules"] for g in rule["apiGroups"]}

    assert (
        gate
        not in container(default_render.one("Deployment", "controller"), "csi-snapshotter")["args"]
    )
    assert "groupsnapshot.storage.k8s.io" not in groups(default_render)
    assert gate in container(full_render.one("Deployment", "controller"), "csi-snapshotter")["args"]
    assert "groupsnapshot.storage.k8s.io" in groups(full_render)


# --- TLS, token, metrics ---------------------------------------------------------------------
def test_endpoint_tls_and_bearer_token(default_render: HelmResult, full_render: HelmResult) -> None:
    for w in workloads(default_render):
        d = container(w, DRIVER)
        assert flag(d, "linstor-endpoint") == "http://linstor-controller.linstor.svc:3370"
        assert not [
            e for e in d["env"] if e["name"].startswith("LS_") and e["name"] != "LS_CONTROLLERS"
        ]
        assert flag(d, "bearer-token") is None
    for w in workloads(full_render):
        d = container(w, DRIVER)
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in d["env"]
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
        }
        assert refs == {
            "LS_ROOT_CA": {"name": "linstor-csi-client-tls", "key": "ca.crt"},
            "LS_USER_CERTIFICATE": {"name": "linstor-csi-client-tls", "key": "tls.crt"},
            "LS_USER_KEY": {"name": "linstor-csi-client-tls", "key": "tls.key"},
        }
        token = flag(d, "bearer-token")
        assert token == "/etc/csi-linstor/bearer-token/token"
        mount = [m for m in d["volumeMounts"] if token.startswith(m["mountPath"] + "/")]
        assert mount and mount[0]["readOnly"] is True
        vol = [v for v in pod_spec(w)["volumes"] if v["name"] == mount[0]["name"]]
        assert vol[0]["secret"]["secretName"] == "linstor-api-token"
        port = 9090 if w["kind"] == "Deployment" else 9097  # node pods: host ports
        assert flag(d, "metrics-address") == f":{port}"
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in d["ports"]


# --- node --------------------------------------------------------------------------------------
def test_node_daemonset(default_render: HelmResult) -> None:
    ds = default_render.one("DaemonSet", "node")
    spec = pod_spec(ds)
    assert spec["automountServiceAccountToken"] is False
    d = container(ds, DRIVER)
    assert flag(d, "mode") == "node"
    assert "--node=$(KUBE_NODE_NAME)" in d["args"]
    assert flag(d, "kubelet-dir") == "/var/lib/kubelet"
    kube_node = [e for e in d["env"] if e["name"] == "KUBE_NODE_NAME"][0]
    assert kube_node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert d["securityContext"]["privileged"] is True
    mounts = {m["mountPath"]: m for m in d["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "Bidirectional"
    assert "/dev" in mounts and "/run/mount" in mounts
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["plugin-dir"]["hostPath"] == {
        "path": "/var/lib/kubelet/plugins/linstor.csi.linbit.com",
        "type": "DirectoryOrCreate",
    }
    assert vols["registration-dir"]["hostPath"]["path"] == "/var/lib/kubelet/plugins_registry"
    reg = container(ds, "csi-node-driver-registrar")
    assert (
        flag(reg, "kubelet-registration-path")
        == "/var/lib/kubelet/plugins/linstor.csi.linbit.com/csi.sock"
    )
    container(ds, "liveness-probe")


def test_node_locks_of_running_tools_live_on_the_host(default_render: HelmResult) -> None:
    """A mkfs/fsck/resize2fs/mount that a killed driver container left running holds its lock
    in --runtime-dir; the directory is a hostPath, so the next container sees the lock."""
    ds = default_render.one("DaemonSet", "node")
    d = container(ds, "csi-linstor")
    assert flag(d, "runtime-dir") == "/run/csi-linstor"
    mounts = {m["mountPath"]: m["name"] for m in d["volumeMounts"]}
    vols = {v["name"]: v for v in pod_spec(ds)["volumes"]}
    assert vols[mounts["/run/csi-linstor"]]["hostPath"] == {
        "path": "/run/csi-linstor", "type": "DirectoryOrCreate"}


def test_node_pod_is_in_the_host_network_namespace(render: RenderFn) -> None:
    """drbdsetup reaches DRBD's netlink family only from the host's network namespace, so the
    node pod runs there by default; its host ports differ from the common 9808/9809/9090."""
    r = render("--set", "metrics.enabled=true")
    assert r.returncode == 0, r.stderr
    ds = r.one("DaemonSet", "node")
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    ports = {p["containerPort"] for c in containers(ds) for p in c.get("ports", [])}
    assert ports == {9818, 9819, 9097}, ports
    assert flag(container(ds, DRIVER), "metrics-address") == ":9097"
    assert flag(container(r.one("Deployment", "controller"), DRIVER), "metrics-address") == ":9090"
    off = render("--set", "node.hostNetwork=false")
    assert off.returncode == 0, off.stderr
    spec = pod_spec(off.one("DaemonSet", "node"))
    assert "hostNetwork" not in spec and "dnsPolicy" not in spec


def test_node_kubelet_dir_and_driver_name(render: RenderFn) -> None:
    r = render(
        "--set", "kubeletDir=/var/lib/k0s/kubelet", "--set", "driverName=linstor.example.com"
    )
    assert r.returncode == 0, r.stderr
    ds = r.one("DaemonSet", "node")
    vols = {v["name"]: v for v in pod_spec(ds)["volumes"]}
    assert (
        vols["plugin-dir"]["hostPath"]["path"] == "/var/lib/k0s/kubelet/plugins/linstor.example.com"
    )
    assert vols["registration-dir"]["hostPath"]["path"] == "/var/lib/k0s/kubelet/plugins_registry"
    assert vols["kubelet-dir"]["hostPath"]["path"] == "/var/lib/k0s/kubelet"
    reg = container(ds, "csi-node-driver-registrar")
    assert (
        flag(reg, "kubelet-registration-path")
        == "/var/lib/k0s/kubelet/plugins/linstor.example.com/csi.sock"
    )
    d = container(ds, DRIVER)
    assert {m["mountPath"]: m.get("mountPropagation") for m in d["volumeMounts"]}[
        "/var/lib/k0s/kubelet"
    ] == "Bidirectional"
    assert flag(d, "driver-name") == "linstor.example.com"
    assert flag(d, "kubelet-dir") == "/var/lib/k0s/kubelet"
    assert r.one("CSIDriver")["metadata"]["name"] == "linstor.example.com"


def test_node_name_map(full_render: HelmResult) -> None:
    ds = full_render.one("DaemonSet", "node")
    d = container(ds, DRIVER)
    assert d["command"][:2] == ["/usr/bin/tini", "--"]
    assert not any(a.startswith("--node=") for a in d["args"])  # the wrapper adds it
    script = d["command"][4]
    assert "/etc/csi-linstor/node-names/" in script and '--node="$n"' in script
    cm = full_render.one("ConfigMap")
    assert cm["data"]["worker-1"] == "worker-1.storage.example.com"
    vols = {v["name"]: v for v in pod_spec(ds)["volumes"]}
    assert vols["node-names"]["configMap"]["name"] == cm["metadata"]["name"]


# --- CSIDriver -----------------------------------------------------------------------------------
def test_csidriver(default_render: HelmResult) -> None:
    drv = default_render.one("CSIDriver")
    assert drv["metadata"]["name"] == "linstor.csi.linbit.com"
    assert drv["spec"] == {
        "attachRequired": True,
        "podInfoOnMount": True,
        "fsGroupPolicy": "ReadWriteOnceWithFSType",
        "storageCapacity": True,
        "seLinuxMount": True,
        "requiresRepublish": False,
        "volumeLifecycleModes": ["Persistent"],
    }


# --- RBAC ------------------------------------------------------------------------------------------
def test_rbac_has_no_wildcards(any_render: HelmResult) -> None:
    roles = any_render.of_kind("ClusterRole") + any_render.of_kind("Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), (
                    f"{role['kind']}/{role['metadata']['name']}: {rule}"
                )
            assert not rule.get("nonResourceURLs")


def test_rbac_bindings(any_render: HelmResult) -> None:
    sas = {sa["metadata"]["name"]: sa for sa in any_render.of_kind("ServiceAccount")}
    node_sa = any_render.one("ServiceAccount", "node")
    assert node_sa["automountServiceAccountToken"] is False
    assert (
        pod_spec(any_render.one("DaemonSet", "node"))["serviceAccountName"]
        == node_sa["metadata"]["name"]
    )
    ctrl_sa = any_render.one("ServiceAccount", "controller")["metadata"]["name"]
    assert pod_spec(any_render.one("Deployment", "controller"))["serviceAccountName"] == ctrl_sa
    for b in any_render.of_kind("ClusterRoleBinding") + any_render.of_kind("RoleBinding"):
        subjects = {s["name"] for s in b["subjects"]}
        assert subjects == {ctrl_sa}, "only the controller is bound to roles"
        assert subjects <= set(sas)
    role = any_render.one("Role")
    leases = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert leases and leases[0]["resources"] == ["leases"]


def test_secrets_access_is_opt_in(default_render: HelmResult, full_render: HelmResult) -> None:
    def has_secrets(r: HelmResult) -> bool:
        return any("secrets" in rule["resources"] for rule in r.one("ClusterRole")["rules"])

    assert not has_secrets(default_render)
    assert has_secrets(full_render)


# --- values ------------------------------------------------------------------------------------------
def test_endpoint_is_required(render: RenderFn) -> None:
    r = render(endpoint=False)
    assert r.returncode != 0
    assert "linstor.endpoint is required" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "typo",
    [
        "linstor.endpiont=http://x:3370",
        "controller.replica=2",
        "node.tolerations[0].efect=NoSchedule",
        "workerz=3",
        "groupSnapshots.enable=true",
    ],
)
def test_schema_rejects_typos(render: RenderFn, typo: str) -> None:
    r = render("--set", typo)
    assert r.returncode != 0, f"--set {typo} was accepted"
    bad_key = typo.split("=")[0].rsplit(".", 1)[-1]
    assert "additional properties" in r.stderr.lower() or "not allowed" in r.stderr.lower(), (
        r.stderr
    )
    assert bad_key in r.stderr, r.stderr


@pytest.mark.parametrize(
    "bad", ["logLevel=verbose", "sidecars.provisioner.image.tag=latest", "workers=0"]
)
def test_schema_rejects_bad_values(render: RenderFn, bad: str) -> None:
    r = render("--set", bad)
    assert r.returncode != 0, f"--set {bad} was accepted"


def test_storage_and_snapshot_classes(default_render: HelmResult, full_render: HelmResult) -> None:
    assert not default_render.of_kind("StorageClass")
    assert not default_render.of_kind("VolumeSnapshotClass")
    scs = {sc["metadata"]["name"]: sc for sc in full_render.of_kind("StorageClass")}
    assert set(scs) == {"linstor-r3-ha", "linstor-replicated-sc"}
    for sc in scs.values():
        assert sc["provisioner"] == "linstor.csi.linbit.com"
        assert all(isinstance(v, str) for v in sc["parameters"].values())
    assert scs["linstor-r3-ha"]["reclaimPolicy"] == "Retain"
    assert (
        scs["linstor-replicated-sc"]["parameters"]["linstor.csi.linbit.com/placementCount"] == "2"
    )
    assert scs["linstor-replicated-sc"]["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
    (vsc,) = full_render.of_kind("VolumeSnapshotClass")
    assert vsc["driver"] == "linstor.csi.linbit.com" and vsc["deletionPolicy"] == "Delete"


def test_full_values_file_exists() -> None:
    assert FULL_VALUES.is_file()


def effective_uid(w: dict, c: dict) -> int | None:
    sc = c.get("securityContext", {})
    if "runAsUser" in sc:
        return sc["runAsUser"]
    return pod_spec(w).get("securityContext", {}).get("runAsUser")


def test_sidecars_run_as_the_socket_owner(any_render: HelmResult) -> None:
    """The driver creates its CSI socket with mode 0600: every container that connects to it
    must run as the driver's uid (set explicitly, not left to the image's USER)."""
    for w in workloads(any_render):
        uid = effective_uid(w, container(w, DRIVER))
        assert uid is not None, f"{w['kind']}: driver uid is not set"
        for c in containers(w):
            assert effective_uid(w, c) == uid, f"{w['kind']}/{c['name']} runs as another uid"

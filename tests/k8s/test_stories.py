"""User stories through a real kube-apiserver, controller-manager, scheduler and the real CSI
sidecars, each with bounded waits and a check of LINSTOR's state afterwards.

On the simulator (3 nodes, DRBD modelled) every story runs; on the real LINSTOR 1.33.3 (1 node,
storage layer only) the stories that need no DRBD run: provisioning, attach on the replica's node,
expansion, snapshots/restore/clone, deletes. What a kubelet does (stage, publish, grow the
filesystem) cannot run here; tests/e2e does it with a kubelet-shaped harness.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import yaml

from tests.k8s.cluster import DRIVER, REPO, wait_for
from tests.k8s.conftest import Kube

GI = 1024 ** 3
NS = "default"
EXAMPLES = REPO / "deploy" / "examples"
SNAP = ("snapshot.storage.k8s.io", "v1")
GROUP = ("groupsnapshot.storage.k8s.io", "v1beta2")


@pytest.fixture(scope="module", params=["sim", "real"])
def kube(request: pytest.FixtureRequest) -> Kube:
    return request.getfixturevalue(f"{request.param}_kube")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def storage_class(kube: Kube, name: str, params: dict[str, str], *, binding: str = "Immediate",
                  reclaim: str = "Delete") -> str:
    if kube.backend == "real":  # one node, no DRBD: the storage layer on the reflink pool
        params = {"placementCount": "1", "storagePool": "xfspool", "layerList": "storage",
                  **{k: v for k, v in params.items()
                     if k not in ("placementCount", "storagePool")}}
    kube.cluster.storage.create_storage_class({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": DRIVER, "parameters": params,
        "allowVolumeExpansion": True, "reclaimPolicy": reclaim,
        "volumeBindingMode": binding})
    return name


def pvc(kube: Kube, name: str, sc: str, size: str = "1Gi", *, mode: str = "Filesystem",
        source: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> str:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "storageClassName": sc,
                            "volumeMode": mode, "resources": {"requests": {"storage": size}}}
    if source:
        spec["dataSource"] = source
    kube.cluster.core.create_namespaced_persistent_volume_claim(NS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels or {}}, "spec": spec})
    return name


def events(kube: Kube) -> str:
    """The namespace's events, oldest first: what a user reads with kubectl describe."""
    evs = sorted(kube.cluster.core.list_namespaced_event(NS).items,
                 key=lambda e: str(e.last_timestamp or e.event_time or ""))
    return "\n".join(f"{e.involved_object.kind}/{e.involved_object.name}: {e.reason}: "
                     f"{e.message}" for e in evs[-30:])


def bound(kube: Kube, claim: str, seconds: float = 60) -> Any:
    def check() -> Any:
        c = kube.cluster.core.read_namespaced_persistent_volume_claim(claim, NS)
        return c if c.status.phase == "Bound" else None
    try:
        return wait_for(check, seconds, f"PVC {claim} Bound")
    except AssertionError as e:
        raise AssertionError(f"{e}\nevents:\n{events(kube)}") from None


def volume_id(kube: Kube, claim: Any) -> str:
    pv = kube.cluster.core.read_persistent_volume(claim.spec.volume_name)
    return str(pv.spec.csi.volume_handle)


def pod(kube: Kube, name: str, claim: str, node: str | None = None) -> str:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}
    if node:
        spec["nodeName"] = node
    kube.cluster.core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod",
                                                 "metadata": {"name": name}, "spec": spec})
    return name


def delete_pod(kube: Kube, name: str) -> None:
    # no kubelet confirms a graceful stop: delete at once
    kube.cluster.core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
    wait_for(lambda: not [p for p in kube.cluster.core.list_namespaced_pod(NS).items
                          if p.metadata.name == name], 30, f"pod {name} gone")


def delete_claim(kube: Kube, claim: str) -> None:
    kube.cluster.core.delete_namespaced_persistent_volume_claim(claim, NS)


def attachments(kube: Kube, pv: str) -> list[Any]:
    return [va for va in kube.cluster.storage.list_volume_attachment().items
            if va.spec.source.persistent_volume_name == pv]


def example_classes(kube: Kube) -> list[dict[str, Any]]:
    out = []
    for f in sorted(EXAMPLES.glob("storageclass-*.yaml")):
        obj = yaml.safe_load(f.read_text())
        obj["metadata"]["name"] = _name(obj["metadata"]["name"])
        out.append(obj)
    return out


def no_leftovers(kube: Kube, before: list[str]) -> None:
    wait_for(lambda: kube.rds() == before, 60,
             f"LINSTOR back to {before} (has {kube.rds()})")


# ---------------------------------------------------------------------------------------------


def test_story1_example_classes_provision_as_they_say(kube: Kube) -> None:
    """The StorageClasses of deploy/examples, as a user applies them (WaitForFirstConsumer: a
    pod triggers binding): PVC -> PV bound, replicas and pool as the class says."""
    if kube.backend == "real":
        pytest.skip("the example classes ask for 2 and 3 DRBD replicas; real LINSTOR here has one "
                    "node and no DRBD (the other stories run there)")
    import requests

    for sc in example_classes(kube):
        if sc["parameters"].get("encryption") == "true":
            # what storageclass-encrypted.yaml tells the administrator to do first
            # (`linstor encryption create-passphrase`); once per simulator
            status = kube.linstor("/v1/encryption/passphrase")
            if status and status[0]["status"] == "unset":
                r = requests.post(kube.linstor_url + "/v1/encryption/passphrase",
                                  json={"new_passphrase": "k8s-story"}, timeout=30)
                assert r.status_code == 200, r.text
        kube.cluster.apply([sc])
        name = sc["metadata"]["name"]
        claim = pvc(kube, _name("pvc-ex"), name)
        pod(kube, _name("app"), claim)
        c = bound(kube, claim)
        rd = volume_id(kube, c)
        params = {k.rsplit("/", 1)[-1]: v for k, v in sc["parameters"].items()}
        replicas = kube.diskful(rd)
        assert len(replicas) == int(params["placementCount"]), replicas
        assert set(replicas.values()) == {params["storagePool"]}, replicas


def test_story2_wait_for_first_consumer_places_data_where_the_scheduler_puts_the_pod(
        kube: Kube) -> None:
    sc = storage_class(kube, _name("sc-wffc"), {"placementCount": "1"},
                       binding="WaitForFirstConsumer")
    claim = pvc(kube, _name("pvc-wffc"), sc)
    time.sleep(1.0)
    assert kube.cluster.core.read_namespaced_persistent_volume_claim(
        claim, NS).status.phase == "Pending", "WaitForFirstConsumer bound before any pod"
    app = pod(kube, _name("app"), claim)
    c = bound(kube, claim)
    node = wait_for(lambda: kube.cluster.core.read_namespaced_pod(app, NS).spec.node_name, 30,
                    "the scheduler to place the pod")
    selected = c.metadata.annotations.get("volume.kubernetes.io/selected-node")
    assert selected == node
    assert list(kube.diskful(volume_id(kube, c))) == [node], "the replica is not on the pod's node"
    # remote access is allowed by default (DRBD diskless clients), so the PV is usable anywhere:
    # no node affinity; without DRBD (real LINSTOR here) it is pinned to the replica's node
    pv = kube.cluster.core.read_persistent_volume(c.spec.volume_name)
    if kube.backend == "sim":
        assert pv.spec.node_affinity is None
    else:
        terms = pv.spec.node_affinity.required.node_selector_terms
        assert any(node in (e.values or []) for t in terms for e in t.match_expressions)


def test_story3_attach_through_a_volume_attachment_and_detach_on_pod_delete(kube: Kube) -> None:
    sc = storage_class(kube, _name("sc-att"), {"placementCount": "1"})
    claim = pvc(kube, _name("pvc-att"), sc)
    c = bound(kube, claim)
    rd = volume_id(kube, c)
    replica = next(iter(kube.diskful(rd)))
    # on the simulator attach where there is no replica (a diskless DRBD client); on real
    # LINSTOR (no DRBD) only the replica's node can use the volume
    node = replica if kube.backend == "real" else next(n for n in kube.nodes if n != replica)
    app = pod(kube, _name("app"), claim, node=node)
    va = wait_for(lambda: [v for v in attachments(kube, c.spec.volume_name)
                           if v.status and v.status.attached], 60, "VolumeAttachment attached")[0]
    assert va.spec.node_name == node and va.spec.attacher == DRIVER
    assert "linstor.csi.linbit.com/device-path" in (va.status.attachment_metadata or {})
    assert node in kube.resources(rd), "no LINSTOR resource on the attached node"
    delete_pod(kube, app)
    wait_for(lambda: not attachments(kube, c.spec.volume_name), 90, "VolumeAttachment deleted")
    if node != replica:
        wait_for(lambda: node not in kube.resources(rd), 30, "the diskless attachment removed")


def test_story3b_io_qos_limits_reach_the_volume_attachment_metadata(kube: Kube) -> None:
    """Issue 17: the real external-attacher copies the publish context into the
    VolumeAttachment, where nri-volume-qos reads the limits with LINBIT's keys; the driver
    records the attachment on the node's LINSTOR resource while it lasts."""
    sc = storage_class(kube, _name("sc-qos"), {"placementCount": "1",
                                               "qos.linbit.com/rbps": "100Mi",
                                               "qos.linbit.com/wiops": "1000"})
    claim = pvc(kube, _name("pvc-qos"), sc)
    c = bound(kube, claim)
    rd = volume_id(kube, c)
    node = next(iter(kube.diskful(rd)))
    app = pod(kube, _name("app"), claim, node=node)
    va = wait_for(lambda: [v for v in attachments(kube, c.spec.volume_name)
                           if v.status and v.status.attached], 60, "VolumeAttachment attached")[0]
    meta = va.status.attachment_metadata or {}
    assert meta.get("qos.linbit.com/rbps") == str(100 * 1024 ** 2), meta
    assert meta.get("qos.linbit.com/wiops") == "1000", meta
    assert meta.get("qos.linbit.com/device") == meta["linstor.csi.linbit.com/device-path"], meta
    recorded = kube.linstor(f"/v1/resource-definitions/{rd}/resources/{node}")
    assert recorded["props"].get("Aux/csi-attached") == "rw", recorded
    delete_pod(kube, app)
    wait_for(lambda: not attachments(kube, c.spec.volume_name), 90, "VolumeAttachment deleted")
    recorded = kube.linstor(f"/v1/resource-definitions/{rd}/resources/{node}")
    assert "Aux/csi-attached" not in (recorded.get("props") or {}), recorded


def test_story4_expansion_grows_the_pv_and_linstor(kube: Kube) -> None:
    sc = storage_class(kube, _name("sc-grow"), {"placementCount": "1"})
    claim = pvc(kube, _name("pvc-grow"), sc, "1Gi")
    c = bound(kube, claim)
    rd = volume_id(kube, c)
    kube.cluster.core.patch_namespaced_persistent_volume_claim(
        claim, NS, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
    wait_for(lambda: kube.cluster.core.read_persistent_volume(c.spec.volume_name)
             .spec.capacity["storage"] == "2Gi", 60, "the PV to show 2Gi")
    size = kube.linstor(f"/v1/resource-definitions/{rd}/volume-definitions/0")["size_kib"]
    assert size * 1024 == 2 * GI
    # the node half (the filesystem) is kubelet's: the claim waits for it
    conds = wait_for(lambda: kube.cluster.core.read_namespaced_persistent_volume_claim(
        claim, NS).status.conditions, 30, "a resize condition on the PVC")
    assert {x.type for x in conds} & {"FileSystemResizePending", "Resizing"}


def _snapshot(kube: Kube, name: str, claim: str, cls: str) -> dict[str, Any]:
    kube.cluster.custom.create_namespaced_custom_object(*SNAP, NS, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"volumeSnapshotClassName": cls,
                 "source": {"persistentVolumeClaimName": claim}}})
    return wait_for(lambda: (lambda s: s if (s.get("status") or {}).get("readyToUse") else None)(
        kube.cluster.custom.get_namespaced_custom_object(*SNAP, NS, "volumesnapshots", name)),
        90, f"VolumeSnapshot {name} readyToUse")


def _snapshot_class(kube: Kube) -> str:
    obj = yaml.safe_load((EXAMPLES / "snapshotclass.yaml").read_text())
    obj["metadata"]["name"] = _name("vsc")
    kube.cluster.apply([obj])
    return str(obj["metadata"]["name"])


def test_story5_snapshot_restore_and_clone(kube: Kube) -> None:
    sc = storage_class(kube, _name("sc-snap"), {"placementCount": "1"})
    cls = _snapshot_class(kube)
    claim = pvc(kube, _name("pvc-src"), sc, "1Gi")
    src = bound(kube, claim)
    snap = _snapshot(kube, _name("snap"), claim, cls)
    assert snap["status"]["restoreSize"] in ("1Gi", str(GI))
    restored = pvc(kube, _name("pvc-restore"), sc, "2Gi", source={
        "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
        "name": snap["metadata"]["name"]})
    clone = pvc(kube, _name("pvc-clone"), sc, "1Gi", source={
        "kind": "PersistentVolumeClaim", "name": claim})
    for name, size in ((restored, 2 * GI), (clone, GI)):
        c = bound(kube, name, 120)
        assert c.status.capacity["storage"] in (f"{size // GI}Gi", str(size))
        rd = volume_id(kube, c)
        got = kube.linstor(f"/v1/resource-definitions/{rd}/volume-definitions/0")["size_kib"]
        assert got * 1024 == size
    assert volume_id(kube, src) in kube.rds()


def group_snapshot(kube: Kube, labels: dict[str, str]) -> tuple[str, str]:
    """A VolumeGroupSnapshotClass and a VolumeGroupSnapshot of the claims with ``labels``,
    waited for until readyToUse; (class, group snapshot) names."""
    cls = _name("vgsc")
    kube.cluster.custom.create_cluster_custom_object(*GROUP, "volumegroupsnapshotclasses", {
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2",
        "kind": "VolumeGroupSnapshotClass", "metadata": {"name": cls}, "driver": DRIVER,
        "deletionPolicy": "Delete"})
    grp = _name("vgs")
    kube.cluster.custom.create_namespaced_custom_object(*GROUP, NS, "volumegroupsnapshots", {
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshot",
        "metadata": {"name": grp},
        "spec": {"volumeGroupSnapshotClassName": cls,
                 "source": {"selector": {"matchLabels": labels}}}})
    wait_for(lambda: (kube.cluster.custom.get_namespaced_custom_object(
        *GROUP, NS, "volumegroupsnapshots", grp).get("status") or {}).get("readyToUse"),
        90, "VolumeGroupSnapshot readyToUse")
    return cls, grp


def test_story6_group_snapshot_modify_volume_and_capacity(kube: Kube) -> None:
    if kube.backend == "real":
        pytest.skip("ModifyVolume of placementCount needs more than the one node real LINSTOR "
                    "has here")
    sc = storage_class(kube, _name("sc-grp"), {"placementCount": "2"})
    label = {"app": _name("grp")}
    claims = [pvc(kube, _name("pvc-grp"), sc, labels=label) for _ in range(2)]
    rds = [volume_id(kube, bound(kube, c)) for c in claims]
    group_snapshot(kube, label)
    snaps = kube.linstor("/v1/view/snapshots", resources=rds)
    assert {s["resource_name"] for s in snaps} == set(rds)
    assert len({s["name"] for s in snaps}) == 1, "one LINSTOR snapshot name for the whole group"
    # VolumeAttributesClass: placementCount 2 -> 3 through ControllerModifyVolume
    vac = _name("vac")
    kube.cluster.apply([{"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass",
                         "metadata": {"name": vac}, "driverName": DRIVER,
                         "parameters": {"placementCount": "3"}}])
    kube.cluster.core.patch_namespaced_persistent_volume_claim(
        claims[0], NS, {"spec": {"volumeAttributesClassName": vac}})
    wait_for(lambda: len(kube.diskful(rds[0])) == 3, 90, "3 replicas after ModifyVolume")
    wait_for(lambda: kube.cluster.core.read_namespaced_persistent_volume_claim(
        claims[0], NS).status.current_volume_attributes_class_name == vac, 60,
        "the PVC to report the new VolumeAttributesClass")


def test_story6b_storage_capacity_is_published_and_used_by_the_scheduler(kube: Kube) -> None:
    """--enable-capacity: CSIStorageCapacity per topology segment of every WaitForFirstConsumer
    class, and the scheduler places a pod only where the class's pool has room."""
    sc = storage_class(kube, _name("sc-cap"), {"placementCount": "1"},
                       binding="WaitForFirstConsumer")
    caps = wait_for(lambda: [c for c in kube.cluster.storage.list_namespaced_csi_storage_capacity(
        "linstor").items if c.storage_class_name == sc], 120, "CSIStorageCapacity objects")
    sizes = [_bytes(c.capacity) for c in caps if c.capacity]
    assert sizes and max(sizes) > 0, [(c.node_topology, c.capacity) for c in caps]
    too_big = pvc(kube, _name("pvc-huge"), sc, f"{max(sizes) // GI + 64}Gi")
    app = pod(kube, _name("app"), too_big)
    wait_for(lambda: "enough free storage" in events(kube), 60,
             "the scheduler to refuse the pod for want of storage")
    assert not kube.cluster.core.read_namespaced_pod(app, NS).spec.node_name
    assert kube.cluster.core.read_namespaced_persistent_volume_claim(
        too_big, NS).status.phase == "Pending"


def _bytes(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
             "k": 1000, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12}
    for u, f in units.items():
        if q.endswith(u):
            return int(float(q[: -len(u)]) * f)
    return int(q)


def test_story7_delete_and_retain(kube: Kube) -> None:
    before = kube.rds()
    sc_del = storage_class(kube, _name("sc-del"), {"placementCount": "1"})
    sc_ret = storage_class(kube, _name("sc-ret"), {"placementCount": "1"}, reclaim="Retain")
    gone = bound(kube, pvc(kube, _name("pvc-del"), sc_del))
    kept = bound(kube, pvc(kube, _name("pvc-ret"), sc_ret))
    kept_rd = volume_id(kube, kept)
    delete_claim(kube, gone.metadata.name)
    delete_claim(kube, kept.metadata.name)
    wait_for(lambda: not [p for p in kube.cluster.core.list_persistent_volume().items
                          if p.metadata.name == gone.spec.volume_name], 60,
             "the Delete PV to be deleted")
    wait_for(lambda: kube.cluster.core.read_persistent_volume(kept.spec.volume_name)
             .status.phase == "Released", 60, "the Retain PV to be Released")
    assert kept_rd in kube.rds(), "Retain must keep the LINSTOR volume"
    no_leftovers(kube, sorted([*before, kept_rd]))


def test_no_sidecar_or_driver_died(kube: Kube) -> None:
    kube.csi.procs.check_alive()
    kube.cluster.procs.check_alive()

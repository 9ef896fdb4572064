"""Issue 17: a ReadWriteMany raw block disk handed between the virt-launcher pods of one KubeVirt
VM (live migration), through the real attach-detach controller and external-attacher. The driver
reads the pods over the Kubernetes API with the chart's service account and RBAC, so this check
runs here and not in the controller tests. Simulator only: two nodes and DRBD's two primaries
(the real LINSTOR here has one node and no DRBD)."""

from __future__ import annotations

from typing import Any

import yaml

from tests.k8s.cluster import REPO, wait_for
from tests.k8s.conftest import Kube
from tests.k8s.test_stories import (
    NS,
    _name,
    attachments,
    bound,
    delete_claim,
    delete_pod,
    no_leftovers,
    storage_class,
)

TWO = "DrbdOptions/Net/allow-two-primaries"
EXAMPLE = REPO / "deploy" / "examples" / "kubevirt-rwx-block.yaml"


def rwx_block_claim(kube: Kube, name: str, sc: str) -> str:
    kube.cluster.core.create_namespaced_persistent_volume_claim(NS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": sc,
                 "volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}}})
    return name


def vm_pod(kube: Kube, name: str, claim: str, node: str, vm: str | None) -> str:
    """A virt-launcher-shaped pod: the disk as a raw device, the VM's label when ``vm``."""
    labels = {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": vm} if vm else {}
    kube.cluster.core.create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node,
                 "containers": [{"name": "compute", "image": "busybox",
                                 "command": ["sleep", "3600"],
                                 "volumeDevices": [{"name": "disk", "devicePath": "/dev/vda"}]}],
                 "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": claim}}]}})
    return name


def on(kube: Kube, pv: str, node: str) -> Any:
    return next((va for va in attachments(kube, pv) if va.spec.node_name == node), None)


def attached(kube: Kube, pv: str, node: str) -> Any:
    return wait_for(lambda: (lambda va: va if va and va.status and va.status.attached
                             else None)(on(kube, pv, node)), 60, f"attached on {node}")


def refused(kube: Kube, pv: str, node: str) -> str:
    def error() -> str | None:
        va = on(kube, pv, node)
        err = va and va.status and va.status.attach_error
        return str(err.message) if err else None
    msg = wait_for(error, 60, f"the attach on {node} refused")
    assert not on(kube, pv, node).status.attached
    return msg


def detached(kube: Kube, pv: str, node: str, *, failed: bool = False) -> None:
    if failed:
        # the attach-detach controller retries a failed attach with a growing backoff and
        # detaches only after it: the operator's way out is deleting the VolumeAttachment
        # (the external-attacher then unpublishes, which must answer OK)
        va = on(kube, pv, node)
        if va is not None:
            kube.cluster.storage.delete_volume_attachment(va.metadata.name)
    wait_for(lambda: on(kube, pv, node) is None, 90, f"VolumeAttachment on {node} deleted")


def test_live_migration_shares_the_disk_between_one_vms_pods_only(sim_kube: Kube) -> None:
    kube = sim_kube
    before = kube.rds()
    example = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] ==
                   "StorageClass")
    sc = storage_class(kube, _name("sc-vm"), example["parameters"])  # Immediate: no kubelet
    claim = rwx_block_claim(kube, _name("disk"), sc)
    c = bound(kube, claim)
    pv, rd = c.spec.volume_name, kube.cluster.core.read_persistent_volume(
        c.spec.volume_name).spec.csi.volume_handle
    a, b, third = kube.nodes[:3]

    source = vm_pod(kube, _name("virt-launcher-vm1"), claim, a, "vm1")
    attached(kube, pv, a)
    assert TWO not in (kube.linstor(f"/v1/resource-definitions/{rd}").get("props") or {})
    target = vm_pod(kube, _name("virt-launcher-vm1"), claim, b, "vm1")  # the migration target
    attached(kube, pv, b)
    assert kube.linstor(f"/v1/resource-definitions/{rd}")["props"][TWO] == "yes"

    extra = vm_pod(kube, _name("virt-launcher-vm1"), claim, third, "vm1")
    msg = refused(kube, pv, third)  # never three primaries
    assert a in msg and b in msg, msg
    delete_pod(kube, extra)
    detached(kube, pv, third, failed=True)

    delete_pod(kube, source)  # the migration finishes: the source pod goes
    detached(kube, pv, a)
    wait_for(lambda: TWO not in (kube.linstor(f"/v1/resource-definitions/{rd}").get("props")
                                 or {}), 30, "back to one DRBD primary")

    stranger = vm_pod(kube, _name("web"), claim, a, None)  # not part of the VM
    msg = refused(kube, pv, a)
    assert "no KubeVirt VM" in msg and stranger in msg, msg
    assert TWO not in (kube.linstor(f"/v1/resource-definitions/{rd}").get("props") or {})
    delete_pod(kube, stranger)
    detached(kube, pv, a, failed=True)

    delete_pod(kube, target)
    detached(kube, pv, b)
    delete_claim(kube, claim)
    no_leftovers(kube, before)

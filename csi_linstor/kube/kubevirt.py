"""Which pods use a claim, and whether they are all one KubeVirt VM (the RWX block check).

A ReadWriteMany raw block volume may be Primary on two nodes at once (mapping/multiattach.py).
That is safe for KubeVirt live migration, where the source and target virt-launcher pods of one
VM hand the disk over, and unsafe for any two writers that do not coordinate. LINBIT's driver
(since 1.11, its RWXBlockValidator) allows the second attachment only when every pod using the
claim carries the same ``vm.kubevirt.io/name`` label; a hotplugged disk is used by a
``kubevirt.io=hotplug-disk`` pod owned by the VM's virt-launcher pod, which carries the label.
This module does the same:

- the claim is the one CreateVolume recorded (``csi.storage.k8s.io/pvc/*`` parameters), else the
  PersistentVolume whose ``spec.csi.volumeHandle`` is the volume id (one LIST of PVs);
- the pods are those of the claim's namespace that mount it and have not finished (phase
  Succeeded or Failed do not count);
- one pod (or none) is always fine; two or more must name one VM, else FAILED_PRECONDITION naming
  the pods; a volume whose claim cannot be found is allowed with a warning (as LINBIT's driver:
  e.g. a statically provisioned PV being deleted);
- the Kubernetes API unreachable or refusing: UNAVAILABLE (the attacher retries), with the cause.
"""

from __future__ import annotations

import logging
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition, Unavailable
from csi_linstor.kube.api import (
    PVS_PATH,
    KubeApi,
    KubeConfigError,
    KubeError,
    LazyKubeApi,
    pods_path,
)

log = logging.getLogger(__name__)

VM_LABEL = "vm.kubevirt.io/name"
HOTPLUG_LABEL = ("kubevirt.io", "hotplug-disk")
FINISHED = ("Succeeded", "Failed")
DISABLE_HINT = ("(--disable-rwx-block-validation, chart value rwxBlockValidation=false, turns "
                "this check off)")


def claim_of_volume(api: KubeApi, volume_id: str, deadline: Deadline) -> tuple[str, str] | None:
    for pv in api.list(PVS_PATH, deadline):
        spec = pv.get("spec") or {}
        if (spec.get("csi") or {}).get("volumeHandle") != volume_id:
            continue
        ref = spec.get("claimRef") or {}
        if ref.get("namespace") and ref.get("name"):
            return str(ref["namespace"]), str(ref["name"])
    return None


def users(pods: list[dict[str, Any]], claim: str) -> list[dict[str, Any]]:
    """The pods that mount ``claim`` and have not finished."""
    out = []
    for p in pods:
        if (p.get("status") or {}).get("phase") in FINISHED:
            continue
        for v in (p.get("spec") or {}).get("volumes") or []:
            if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                out.append(p)
                break
    return out


def vm_of(pod: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> str | None:
    """The KubeVirt VM a pod belongs to (a hotplug pod through its owner virt-launcher pod)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(VM_LABEL):
        return str(labels[VM_LABEL])
    if labels.get(HOTPLUG_LABEL[0]) == HOTPLUG_LABEL[1]:
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
            owner = by_name.get(ref.get("name", "")) if ref.get("kind") == "Pod" else None
            if owner is not None:
                return vm_of(owner, {})
    return None


def check_one_vm(pods: list[dict[str, Any]], volume_id: str, ns: str, claim: str) -> None:
    using = users(pods, claim)
    if len(using) <= 1:
        return
    by_name = {(p.get("metadata") or {}).get("name", ""): p for p in pods}
    vms = {(p.get("metadata") or {}).get("name", "?"): vm_of(p, by_name) for p in using}
    if None not in vms.values() and len(set(vms.values())) == 1:
        return
    desc = ", ".join(f"{name} ({'VM ' + vm if vm else 'no KubeVirt VM'})"
                     for name, vm in sorted(vms.items()))
    raise FailedPrecondition(
        f"volume {volume_id} (claim {ns}/{claim}) would be writable on two nodes at once, which "
        f"is safe only for the pods of one KubeVirt VM during live migration; it is used by "
        f"{desc}. Run one pod at a time, or use a filesystem volume {DISABLE_HINT}")


class KubeVirtCheck:
    """``(volume id, pvc namespace, pvc name, deadline)`` → None or an error (multiattach)."""

    def __init__(self, api: LazyKubeApi) -> None:
        self.api = api

    def __call__(self, volume_id: str, ns: str | None, claim: str | None,
                 deadline: Deadline) -> None:
        try:
            api = self.api()
            if not ns or not claim:
                found = claim_of_volume(api, volume_id, deadline)
                if found is None:
                    log.warning("volume %s: no PersistentVolume names it; the second attachment "
                                "is allowed without the KubeVirt check", volume_id)
                    return
                ns, claim = found
            check_one_vm(api.list(pods_path(ns), deadline), volume_id, ns, claim)
        except KubeConfigError as err:
            raise FailedPrecondition(
                f"volume {volume_id}: attaching a ReadWriteMany block volume to a second node "
                f"needs the Kubernetes API to check that one KubeVirt VM uses it: {err} "
                f"{DISABLE_HINT}") from err
        except KubeError as err:
            raise Unavailable(f"volume {volume_id}: the KubeVirt check before a second "
                              f"attachment could not read Kubernetes: {err}") from err

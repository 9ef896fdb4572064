"""The consistency group a claim asks for: its ``linstor.csi.linbit.com/consistency-group`` label.

CreateVolume learns the claim from the parameters csi-provisioner adds with
``--extra-create-metadata`` (``csi.storage.k8s.io/pvc/name`` and ``.../pvc/namespace``) and GETs
it (RBAC: ``get persistentvolumeclaims``, granted by the chart) only when the controller runs
with ``--enable-consistency-groups``.

Errors: no Kubernetes configuration → FAILED_PRECONDITION (nothing to retry until the controller
is reconfigured); the API unreachable or refusing → UNAVAILABLE (the provisioner retries); the
claim gone → FAILED_PRECONDITION (it was deleted while being provisioned).
"""

from __future__ import annotations

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition, Unavailable
from csi_linstor.kube.api import KubeConfigError, KubeError, LazyKubeApi, pvc_path

LABEL = "linstor.csi.linbit.com/consistency-group"


class GroupLabel:
    """``(namespace, claim) -> group`` (None: no label, an ordinary volume)."""

    def __init__(self, api: LazyKubeApi) -> None:
        self.api = api

    def __call__(self, namespace: str, name: str, deadline: Deadline) -> str | None:
        try:
            pvc = self.api().get(pvc_path(namespace, name), deadline)
        except KubeConfigError as err:
            raise FailedPrecondition(
                f"--enable-consistency-groups needs the Kubernetes API to read the labels of "
                f"claim {namespace}/{name}, and it is not configured: {err}; give the "
                "controller --kubeconfig or run it in the cluster") from err
        except KubeError as err:
            raise Unavailable(f"reading claim {namespace}/{name} for its "
                              f"{LABEL} label failed: {err}") from err
        if pvc is None:
            raise FailedPrecondition(f"claim {namespace}/{name} does not exist (deleted while it "
                                     "was being provisioned?); nothing was created")
        labels = (pvc.get("metadata") or {}).get("labels") or {}
        group = labels.get(LABEL)
        return group or None

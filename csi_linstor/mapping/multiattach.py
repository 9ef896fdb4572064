"""Attachments to more than one node: single-node modes, RWX raw block and DRBD's two primaries.

DRBD lets one node be Primary (the node whose device is open for writing) unless the resource's
``net`` section allows two: ``DrbdOptions/Net/allow-two-primaries=yes``, a LINSTOR property. KubeVirt
live migration needs exactly that for a moment: the VM's ReadWriteMany raw block disk is open on
the source node and the target node at once, until the source pod stops. Two primaries with a
filesystem on top, or with two writers that do not coordinate, destroy data; so:

- a SINGLE_NODE_* publish to a node while another node holds an attachment record (see
  attachment_records.py) is FAILED_PRECONDITION, as the CSI spec asks ("published at another node
  and does not have MULTI_NODE volume capability");
- a MULTI_NODE_* publish to a second node of a volume without a DRBD layer is FAILED_PRECONDITION:
  its "replicas" would be independent disks;
- MULTI_NODE_MULTI_WRITER raw block: at most two nodes at once (a third is FAILED_PRECONDITION
  naming the two); the second publish sets ``allow-two-primaries=yes`` on the resource definition
  (with our marker ``Aux/csi-two-primaries``) before LINSTOR makes the volume available there, and
  the unpublish that leaves one attachment removes both again (only when the marker says we set
  it: an operator's own setting on the resource definition is left alone). Both attached nodes'
  resources carry the marker too (written with the attachment record), so an unpublish reads
  the resource definition only when it may have to undo two primaries: an ordinary unpublish
  costs no extra call. Before the second
  attach, unless ``--disable-rwx-block-validation``, the pods using the claim must all belong to
  one KubeVirt VM (kube/kubevirt.py), as LINBIT's driver checks since 1.11.

Crash safety: the property is set before make-available and removed after the detach; a crash in
between leaves it set with two records or one. A retried publish sets it again; the unpublish that
the CO sends for an abandoned attach removes it. The per-volume RPC lock serializes publishes of
one volume, so two publishes cannot both see one attachment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping.attachment import require_node
from csi_linstor.mapping.attachment_records import PROP_TWO_PRIMARIES_HINT, recorded
from csi_linstor.mapping.volume_model import PROP_PVC_NAME, PROP_PVC_NAMESPACE

log = logging.getLogger(__name__)

PROP_TWO_PRIMARIES = "DrbdOptions/Net/allow-two-primaries"
# "yes" on the RD: this driver set PROP_TWO_PRIMARIES there; on a resource: attached while two
# primaries were allowed (the record's companion, see attachment_records.py)
PROP_MARKER = PROP_TWO_PRIMARIES_HINT
MAX_WRITERS = 2

# The KubeVirt check: (volume id, PVC namespace, PVC name, deadline) -> None, or an error
# (the claim comes from the RD props CreateVolume stored; None when unknown).
PodCheck = Callable[[str, str | None, str | None, Deadline], None]


def attached_elsewhere(resources: list[Resource], node: str) -> list[str]:
    """Nodes other than ``node`` whose resource carries an attachment record, sorted."""
    return sorted(r.node_name for r in resources
                  if recorded(r) and r.node_name.upper() != node.upper())


class MultiAttach:
    def __init__(self, client: LinstorClient, pod_check: PodCheck | None) -> None:
        self.client = client
        self.pod_check = pod_check  # None: --disable-rwx-block-validation

    def before_publish(self, rd: str, node: str, *, multi_node: bool, multi_writer_block: bool,
                       resources: list[Resource], rd_props: dict[str, str],
                       deadline: Deadline) -> dict[str, str]:
        """Refuse what must not be attached to one more node; allow two primaries when this
        publish makes the second writer of an RWX block volume. Returns the properties to
        write with this node's attachment record."""
        if any(recorded(r) and r.node_name.upper() == node.upper() for r in resources):
            return {}  # an idempotent re-publish: checked when it was first published
        others = attached_elsewhere(resources, node)
        if not others:
            return {}
        require_node(self.client, node, deadline)  # an unknown node is NOT_FOUND before any refusal
        where = ", ".join(others)
        if not multi_node:
            raise FailedPrecondition(
                f"volume {rd} is published to node {where} and its access mode is single-node; "
                f"it cannot be published to {node} as well: the workload using it must stop "
                "there first (the attachment is removed when its VolumeAttachment is deleted)")
        if not any(r.top_layer == "DRBD" for r in resources):
            raise FailedPrecondition(
                f"volume {rd} has no DRBD layer, so its copies on different nodes are "
                f"independent disks; it is published to {where} and cannot be shared with "
                f"{node}. Use a StorageClass with the drbd layer for ReadWriteMany volumes")
        if not multi_writer_block:
            return {}  # readers (and single writers) need no second primary
        if len(others) >= MAX_WRITERS:
            raise FailedPrecondition(
                f"volume {rd} is already attached read-write to {MAX_WRITERS} nodes ({where}); "
                f"DRBD allows at most two primaries, so it cannot be attached to {node} until "
                "one of them detaches (a KubeVirt live migration finishes by detaching the "
                "source)")
        if self.pod_check is not None:
            self.pod_check(rd, rd_props.get(PROP_PVC_NAMESPACE), rd_props.get(PROP_PVC_NAME),
                           deadline)
        if rd_props.get(PROP_TWO_PRIMARIES) != "yes":
            log.info("volume %s: attached to %s, attaching to %s: allowing two DRBD primaries",
                     rd, where, node)
            self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                            body={"override_props": {PROP_TWO_PRIMARIES: "yes",
                                                     PROP_MARKER: "yes"}})
        for res in resources:
            if res.node_name in others and res.props.get(PROP_MARKER) != "yes":
                self.client.put(f"/v1/resource-definitions/{rd}/resources/{res.node_name}",
                                deadline=deadline, body={"override_props": {PROP_MARKER: "yes"}})
        return {PROP_MARKER: "yes"}

    def after_unpublish(self, rd: str, rd_props: dict[str, str],
                        remaining: list[Resource], deadline: Deadline) -> None:
        """Back to one attachment (or none): one primary again, if we allowed two."""
        attached = [r.node_name for r in remaining if recorded(r)]
        if len(attached) >= MAX_WRITERS:
            return
        if rd_props.get(PROP_MARKER) == "yes":
            log.info("volume %s: attached to %s only: one DRBD primary again", rd,
                     ", ".join(attached) or "no node")
            self.client.put(f"/v1/resource-definitions/{rd}", deadline=deadline,
                            body={"delete_props": [PROP_TWO_PRIMARIES, PROP_MARKER]})
        for res in remaining:
            if res.props.get(PROP_MARKER) and not res.deleting:
                self.client.put(f"/v1/resource-definitions/{rd}/resources/{res.node_name}",
                                deadline=deadline, body={"delete_props": [PROP_MARKER]})

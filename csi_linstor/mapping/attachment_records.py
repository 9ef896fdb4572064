"""Attachments: which node a volume is published to, read-only or not, and how many per node.

LINSTOR keeps no record of a CSI attachment: a publish to a node holding a diskful replica leaves
no trace, and a diskless resource may also be a quorum tiebreaker. So ControllerPublishVolume
records every attachment as a property on the node's LINSTOR resource (diskful or diskless):

- ``Aux/csi-attached`` = ``rw`` or ``ro`` (the request's ``readonly``).

From that record:

- an idempotent re-publish (same node, same ``readonly``) succeeds without a limit check;
  a re-publish with a different ``readonly`` is ALREADY_EXISTS (CSI: "volume published but is
  incompatible"), so PUBLISH_READONLY can be advertised;
- ``published_node_ids`` in ListVolumes / ControllerGetVolume are the resources carrying it
  (LIST_VOLUMES_PUBLISHED_NODES);
- the attach limit counts the resources on the node that carry it: one
  ``GET /v1/view/resources?nodes=<node>`` per publish (a node-filtered view, never the whole
  cluster). A node that already has ``--max-volumes-per-node`` attached volumes answers
  RESOURCE_EXHAUSTED.

Unpublish drops the record (a diskless resource goes with its record; a diskful replica keeps
its data and loses only the property; a diskless attachment LINSTOR keeps as the quorum
tiebreaker keeps the property, which does not count on a tiebreaker). A publish interrupted between LINSTOR's make-available and
the record leaves an unrecorded resource: the CO retries the publish (which records it) or
unpublishes (which removes it), and the external-attacher's ListVolumes reconcile re-publishes a
VolumeAttachment whose node is missing from ``published_node_ids`` (e.g. attachments made by an
older driver without records).

Publishes of different volumes to one node run under different per-volume locks; a
process-local reservation per node keeps two concurrent publishes from both taking the last
slot (the controller runs as one leader-elected instance).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from csi_linstor.deadline import Deadline
from csi_linstor.errors import AlreadyExists, ResourceExhausted
from csi_linstor.linstor import queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping import ids

log = logging.getLogger(__name__)

PROP_ATTACHED = "Aux/csi-attached"
UNLIMITED = 1 << 62
READ_WRITE = "rw"
READ_ONLY = "ro"


def mode(readonly: bool) -> str:
    return READ_ONLY if readonly else READ_WRITE


def recorded(res: Resource) -> str:
    """The resource's attachment record ("" when none counts).

    A record on a quorum tiebreaker does not count: unpublish removes a diskless attachment with
    ``keep_tiebreaker=true``, and LINSTOR may keep that resource as the tiebreaker instead of
    deleting it (props included); a tiebreaker is never in use by a pod.
    """
    if res.deleting or res.is_tiebreaker:
        return ""
    return res.props.get(PROP_ATTACHED, "")


def published_nodes(resources: Iterable[Resource]) -> list[str]:
    """Nodes whose resource carries an attachment record, sorted."""
    return sorted(r.node_name for r in resources if recorded(r))


class Attachments:
    def __init__(self, client: LinstorClient, max_per_node: int) -> None:
        self.client = client
        self.max_per_node = max_per_node
        self._lock = threading.Lock()
        self._reserved: dict[str, set[str]] = {}  # node (upper) -> volumes being published

    @contextmanager
    def attach(self, rd: str, node: str, readonly: bool, deadline: Deadline) -> Iterator[None]:
        """Around the publish: check compatibility and the limit, then record on success."""
        if not ids.is_valid_name(rd) or not ids.is_valid_node_name(node):
            # not a plain resource (e.g. a consistency-group member) or a node that cannot
            # exist: nothing to record; the publish itself answers
            yield
            return
        want = mode(readonly)
        on_node = queries.view_resources(self.client, deadline, nodes=[node])
        mine = next((r for r in on_node if r.name.upper() == rd.upper()
                     and r.node_name.upper() == node.upper()), None)
        have = recorded(mine) if mine is not None else ""
        if have and have != want:
            raise AlreadyExists(
                f"volume {rd} is already published to node {node} "
                f"{'read-only' if have == READ_ONLY else 'read-write'}; a "
                f"{'read-only' if readonly else 'read-write'} publish is incompatible: unpublish "
                "it from that node first")
        if have:
            yield  # idempotent re-publish: already counted
            return
        key = node.upper()
        with self._lock:
            attached = {r.name.upper() for r in on_node if recorded(r)}
            busy = attached | self._reserved.get(key, set())
            busy.discard(rd.upper())
            if len(busy) >= self.max_per_node:
                raise ResourceExhausted(
                    f"node {node} already has {len(busy)} volumes of this driver attached, the "
                    f"limit is {self.max_per_node} (--max-volumes-per-node); detach a volume "
                    "from that node, schedule the workload on another node, or raise the limit "
                    "on the controller and the node plugin together")
            self._reserved.setdefault(key, set()).add(rd.upper())
        try:
            yield
            self.record(rd, node, want, deadline)
        finally:
            with self._lock:
                left = self._reserved.get(key, set())
                left.discard(rd.upper())
                if not left:
                    self._reserved.pop(key, None)

    def record(self, rd: str, node: str, value: str, deadline: Deadline) -> None:
        self.client.put(f"/v1/resource-definitions/{rd}/resources/{node}", deadline=deadline,
                        body={"override_props": {PROP_ATTACHED: value}})

    def forget(self, rd: str, resources: Iterable[Resource], deadline: Deadline) -> None:
        """Drop the record from the resources still carrying it (after the detach)."""
        for res in resources:
            if not res.props.get(PROP_ATTACHED):
                continue
            try:
                self.client.put(f"/v1/resource-definitions/{rd}/resources/{res.node_name}",
                                deadline=deadline, body={"delete_props": [PROP_ATTACHED]})
            except LinstorError as err:
                if not err.is_not_found():
                    raise

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
  ``GET /v1/view/resources?nodes=<node>&props=Aux/csi-attached`` per publish. LINSTOR applies
  the props filter to each resource's own properties before it builds the reply (1.33.3:
  CtrlVlmListApiCallHandler, ReadOnlyProps.contains), so the reply holds the node's recorded
  attachments only (this volume's among them when it is recorded), never every resource placed
  on the node: its size follows the attachments, bounded by the limit, not the cluster (issue
  19); a second read with ``props=Aux/csi-attached-volumes`` finds the shared resources of
  consistency-group members (below). A node that already has ``--max-volumes-per-node``
  attached volumes answers
  RESOURCE_EXHAUSTED.

Unpublish drops the record (a diskless resource goes with its record; a diskful replica keeps
its data and loses only the property; a diskless attachment LINSTOR keeps as the quorum
tiebreaker keeps the property, which does not count on a tiebreaker). A publish interrupted between LINSTOR's make-available and
the record leaves an unrecorded resource: the CO retries the publish (which records it) or
unpublishes (which removes it), and the external-attacher's ListVolumes reconcile re-publishes a
VolumeAttachment whose node is missing from ``published_node_ids`` (e.g. attachments made by an
older driver without records).

A consistency-group member (``cg-…/<vnr>``, mapping/consistency_group_create.py) shares one
LINSTOR resource per node with the other members: its record is
``Aux/csi-attached-volume/<vnr>`` on that resource, so two members published to one node are two
records (two attached volumes for the limit, each in its own ``published_node_ids``), and
unpublishing one drops only its record; the shared diskless resource goes with the last record.
Such a resource also carries ``Aux/csi-attached-volumes=yes``, the key the limit's second
filtered read selects on.

Publishes of different volumes to one node run under different per-volume locks; a
process-local reservation per node keeps two concurrent publishes from both taking the last
slot (the controller runs as one leader-elected instance). The node's view is read under a
per-node lock, and a reservation ends under that lock only after its record is written, so a
publish never judges the limit on a view older than another publish's finished record.
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
# Written with the record and removed with it (mapping/multiattach.py: two DRBD primaries).
PROP_TWO_PRIMARIES_HINT = "Aux/csi-two-primaries"
PROPS_WITH_RECORD = (PROP_TWO_PRIMARIES_HINT,)
# + "<vnr>": the record of consistency-group member <vnr> on the group's shared resource
PROP_ATTACHED_MEMBER = "Aux/csi-attached-volume/"
# "yes" on a shared resource that holds (or held) member records: the key the node's second
# filtered read asks for (LINSTOR's props filter matches exact keys only). Never removed: a
# resource keeping it after its last member record costs one element in that read, while
# removing it could race with another member's new record (different per-volume locks).
PROP_MEMBER_RECORDS = "Aux/csi-attached-volumes"
UNLIMITED = 1 << 62
READ_WRITE = "rw"
READ_ONLY = "ro"


def mode(readonly: bool) -> str:
    return READ_ONLY if readonly else READ_WRITE


def record_key(volume_id: str) -> tuple[str, str]:
    """``(resource, record property)`` of a volume id: the RD and ``Aux/csi-attached``, or for a
    consistency-group member the group's RD and its member record."""
    member = ids.parse_member_volume_id(volume_id)
    if member is not None:
        return member[0], f"{PROP_ATTACHED_MEMBER}{member[1]}"
    return volume_id, PROP_ATTACHED


def attached_volumes(res: Resource) -> set[str]:
    """The volumes (ids, upper case) whose records on ``res`` count: the volume itself, or the
    consistency-group members recorded on the shared resource."""
    if res.deleting or res.is_tiebreaker:
        return set()
    out = {res.name.upper()} if res.props.get(PROP_ATTACHED) else set()
    out |= {f"{res.name}/{k[len(PROP_ATTACHED_MEMBER):]}".upper() for k, v in res.props.items()
            if k.startswith(PROP_ATTACHED_MEMBER) and v}
    return out


def recorded(res: Resource, prop: str = PROP_ATTACHED) -> str:
    """The resource's attachment record ("" when none counts).

    A record on a quorum tiebreaker does not count: unpublish removes a diskless attachment with
    ``keep_tiebreaker=true``, and LINSTOR may keep that resource as the tiebreaker instead of
    deleting it (props included); a tiebreaker is never in use by a pod.
    """
    if res.deleting or res.is_tiebreaker:
        return ""
    return res.props.get(prop, "")


def published_nodes(resources: Iterable[Resource], volume_id: str | None = None) -> list[str]:
    """Nodes whose resource carries an attachment record (of member ``volume_id`` when it is
    a consistency-group member id), sorted."""
    prop = record_key(volume_id)[1] if volume_id is not None else PROP_ATTACHED
    return sorted(r.node_name for r in resources if recorded(r, prop))


class Attachments:
    def __init__(self, client: LinstorClient, max_per_node: int) -> None:
        self.client = client
        self.max_per_node = max_per_node
        self._lock = threading.Lock()
        self._reserved: dict[str, set[str]] = {}  # node (upper) -> volumes being published
        self._node_locks: dict[str, threading.Lock] = {}  # one per node, never removed

    @contextmanager
    def attach(self, rd: str, node: str, readonly: bool,
               deadline: Deadline) -> Iterator[dict[str, str]]:
        """Around the publish: check compatibility and the limit, then record on success. The
        publish may add properties to the record (the dict yielded)."""
        extra: dict[str, str] = {}
        volume_id = rd
        rd, prop = record_key(volume_id)
        if not ids.is_valid_name(rd) or not ids.is_valid_node_name(node):
            # not a plain resource (e.g. a consistency-group member) or a node that cannot
            # exist: nothing to record; the publish itself answers
            yield extra
            return
        want = mode(readonly)
        key = node.upper()
        # The node's view is read and the slot reserved under the node's lock, and a reservation
        # is dropped under it only after the record is written: a concurrent publish to the node
        # therefore sees every other publish either in its view (recorded) or as a reservation.
        with self._node_lock(key):
            on_node = self._recorded_on(node, deadline)
            mine = next((r for r in on_node if r.name.upper() == rd.upper()
                         and r.node_name.upper() == key), None)
            have = recorded(mine, prop) if mine is not None else ""
            if have and have != want:
                raise AlreadyExists(
                    f"volume {volume_id} is already published to node {node} "
                    f"{'read-only' if have == READ_ONLY else 'read-write'}; a "
                    f"{'read-only' if readonly else 'read-write'} publish is incompatible: "
                    "unpublish it from that node first")
            if not have:
                attached = set().union(*(attached_volumes(r) for r in on_node))
                busy = attached | self._reserved.get(key, set())
                busy.discard(volume_id.upper())
                if len(busy) >= self.max_per_node:
                    raise ResourceExhausted(
                        f"node {node} already has {len(busy)} volumes of this driver attached, "
                        f"the limit is {self.max_per_node} (--max-volumes-per-node); detach a "
                        "volume from that node, schedule the workload on another node, or raise "
                        "the limit on the controller and the node plugin together")
                self._reserved.setdefault(key, set()).add(volume_id.upper())
        if have:
            yield extra  # idempotent re-publish: already counted
            return
        try:
            yield extra
            self.record(volume_id, node, want, deadline, extra)
        finally:
            with self._node_lock(key):
                left = self._reserved.get(key, set())
                left.discard(volume_id.upper())
                if not left:
                    self._reserved.pop(key, None)

    def _recorded_on(self, node: str, deadline: Deadline) -> list[Resource]:
        """The node's resources carrying attachment records: one filtered read for plain
        records, one for the shared resources of consistency-group members."""
        out: dict[tuple[str, str], Resource] = {}
        for key in (PROP_ATTACHED, PROP_MEMBER_RECORDS):
            for res in queries.view_resources(self.client, deadline, nodes=[node], props=[key]):
                out[(res.name.upper(), res.node_name.upper())] = res
        return list(out.values())

    def _node_lock(self, key: str) -> threading.Lock:
        with self._lock:
            lock = self._node_locks.get(key)
            if lock is None:
                lock = self._node_locks[key] = threading.Lock()
            return lock

    def record(self, volume_id: str, node: str, value: str, deadline: Deadline,
               extra: dict[str, str] | None = None) -> None:
        rd, prop = record_key(volume_id)
        marker = {PROP_MEMBER_RECORDS: "yes"} if prop != PROP_ATTACHED else {}
        self.client.put(f"/v1/resource-definitions/{rd}/resources/{node}", deadline=deadline,
                        body={"override_props": {prop: value, **marker, **(extra or {})}})

    def forget(self, volume_id: str, resources: Iterable[Resource], deadline: Deadline) -> None:
        """Drop the record from the resources still carrying it (after the detach)."""
        rd, prop = record_key(volume_id)
        with_record = PROPS_WITH_RECORD if prop == PROP_ATTACHED else ()
        for res in resources:
            if not res.props.get(prop):
                continue
            try:
                gone = [k for k in (prop, *with_record) if k in res.props]
                self.client.put(f"/v1/resource-definitions/{rd}/resources/{res.node_name}",
                                deadline=deadline, body={"delete_props": gone})
            except LinstorError as err:
                if not err.is_not_found():
                    raise

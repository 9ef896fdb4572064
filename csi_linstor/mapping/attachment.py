"""Attachment: ControllerPublish/Unpublish (a replica or diskless client on the node) and the
remote-access policy behind accessible topology.
"""

from __future__ import annotations

import time

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError, FailedPrecondition, NotFound, Unavailable
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping import ids
from csi_linstor.mapping.attachment_records import attached_volumes
from csi_linstor.mapping.remote_access import RemoteAccessPolicy, prune_patterns
from csi_linstor.mapping.topology import NodeIndex
from csi_linstor.mapping.volume_model import BAD_RESOURCE_FLAGS, VolumeLookups, log, remote_capable

STATE_WAIT_SECONDS = 5.0  # a new resource's first state report from its satellite
STATE_POLL_SECONDS = 0.2


def require_node(client: LinstorClient, node: str, deadline: Deadline) -> None:
    """NOT_FOUND naming ``node`` when LINSTOR has no such node (checked before a refusal that
    would otherwise hide it)."""
    try:
        queries.node(client, node, deadline)
    except CsiError as err:
        if err.code == NotFound.code:
            raise NotFound(f"node {node} does not exist in LINSTOR") from err
        raise


class Attachment(VolumeLookups):
    """Make a volume available on a node, take it away, and say where it is reachable."""

    def accessible_topology(self, rd: str, policy: RemoteAccessPolicy, deadline: Deadline,
                            resources: list[Resource] | None = None) -> list[dict[str, str]]:
        """Segments from which the volume is reachable; [] means everywhere (Go: nil)."""
        if policy.anywhere:
            return []
        if resources is None:
            resources = self.resources(rd, deadline)
        keys = {k for rule in policy.rules for k in rule}
        nodes = NodeIndex(self.client, self.ns, deadline)
        out: list[dict[str, str]] = []
        for res in resources:
            if res.is_diskless or any(f in res.flags for f in BAD_RESOURCE_FLAGS):
                continue
            segs = nodes.segments_of(res.node_name, keys)
            out.extend(policy.accessible_segments(segs))
        return prune_patterns([s for s in out if s])

    def publish(self, rd: str, node: str, policy: RemoteAccessPolicy,
                deadline: Deadline, resources: list[Resource] | None = None) -> str:
        """Make ``rd`` available on ``node``; returns the device path there. ``resources``:
        the RD's resources when the caller has just read them."""
        if not ids.is_valid_node_name(node):
            # Checked before any call: the name becomes a REST path component.
            raise NotFound(f"node {node!r} does not exist: it is not a valid LINSTOR node name "
                           "(RFC 1123 host name); NodeGetInfo reports the LINSTOR node name")
        volume_id = rd
        rd, vnr = self.attach_target(volume_id, deadline)
        self.require_supported(deadline)
        if resources is None:
            resources = self.resources(rd, deadline)
        if not resources:
            vol = self.find(volume_id, deadline)
            if vol is None:
                raise NotFound(f"volume {volume_id} does not exist")
            raise FailedPrecondition(f"volume {rd} has no replica in LINSTOR; it cannot be "
                                     "attached (check `linstor resource list -r {rd}`)")
        mine = next((r for r in resources if r.node_name.upper() == node.upper()), None)
        # LINSTOR's quorum tiebreaker holds no data: its node is a node without a replica, so
        # the remote-access policy decides as for any other; make-available below converts it.
        if mine is not None and not mine.deleting and not mine.reported:
            resources = self._await_state(rd, node, deadline)
            mine = next((r for r in resources if r.node_name.upper() == node.upper()), None)
        if mine is not None and not mine.deleting and not mine.is_tiebreaker:
            path = mine.device_path(vnr)
            if path:
                return path
            return self._volume_device_path(rd, node, deadline, vnr)
        if not remote_capable(resources):
            self._require_node(node, deadline)  # an unknown node is NOT_FOUND first
            on = ", ".join(r.node_name for r in resources if not r.is_diskless)
            raise FailedPrecondition(
                f"volume {rd} has no DRBD layer (layers: {resources[0].top_layer or 'unknown'}"
                f" on top), so only the nodes holding its data can use it: {on}; node {node} "
                "holds none, and attaching it there would give it a new, empty disk. Schedule "
                "the workload on one of those nodes (use WaitForFirstConsumer), or use a "
                "StorageClass with the drbd layer")
        if not policy.anywhere:
            keys = {k for rule in policy.rules for k in rule}
            nodes = NodeIndex(self.client, self.ns, deadline)
            replicas = [nodes.segments_of(r.node_name, keys) for r in resources
                        if not r.is_diskless]
            if not policy.allows(replicas, nodes.segments_of(node, keys)):
                on = ", ".join(r.node_name for r in resources if not r.is_diskless)
                raise FailedPrecondition(
                    f"volume {rd} has no replica on node {node} and its StorageClass does not "
                    f"allow remote access from there (allowRemoteVolumeAccess: "
                    f"{policy.render().strip()}); replicas are on {on}")
        self._make_available(rd, node, deadline)
        for res in resources:
            path = res.device_path(vnr)
            if path and res.top_layer == "DRBD":
                return path  # DRBD device paths are the same on every node
        return self._volume_device_path(rd, node, deadline, vnr)

    def attach_target(self, volume_id: str, deadline: Deadline) -> tuple[str, int]:
        """``(resource, volume number)`` a publish makes available: ``(rd, 0)`` for a volume,
        the shared resource and the member's number for a consistency-group member (the whole
        resource attaches on the node; the device is volume N's). NOT_FOUND for a member that
        does not exist."""
        if ids.is_valid_name(volume_id) and not ids.may_be_consistency_group(volume_id):
            return volume_id, 0
        member = self.consistency_group_member(volume_id, deadline)  # type: ignore[attr-defined]
        if member is not None:
            return member[0], member[1]
        if ids.parse_member_volume_id(volume_id) is not None:
            raise NotFound(f"volume {volume_id} does not exist")
        return volume_id, 0

    def _await_state(self, rd: str, node: str, deadline: Deadline) -> list[Resource]:
        """The RD's resources once LINSTOR has the satellite's state for the one on ``node``.

        A resource just created has none until its satellite reports (real LINSTOR: a moment
        after the create returns, seconds on a loaded controller). After STATE_WAIT_SECONDS
        the node's connection decides: a node LINSTOR does not see ONLINE fails at once
        (FAILED_PRECONDITION: nothing will report until it is back); an online node's
        satellite is only slow, so the wait goes on to the RPC deadline and ends UNAVAILABLE
        (retry) if it still has not reported.
        """
        patient_until = time.monotonic() + STATE_WAIT_SECONDS
        online_checked = False
        while True:
            resources = self.resources(rd, deadline)
            mine = next((r for r in resources if r.node_name.upper() == node.upper()), None)
            if mine is None or mine.deleting or mine.reported:
                return resources
            running_out = deadline.remaining() - STATE_POLL_SECONDS < 1.0
            if (running_out or time.monotonic() >= patient_until) and not online_checked:
                found = queries.node(self.client, node, deadline)
                if not found.online:
                    raise FailedPrecondition(
                        f"LINSTOR has no state for {rd} on node {node}: the node is offline "
                        f"(connection status {found.connection_status or 'unknown'}); bring "
                        "its satellite online and retry")
                online_checked = True
            if running_out:
                raise Unavailable(
                    f"LINSTOR has no state yet for {rd} on node {node}, though the node is "
                    "online: its satellite has not reported the new resource; retry (if this "
                    "repeats, check the satellite's log and `linstor resource list -r "
                    f"{rd}`)")
            time.sleep(STATE_POLL_SECONDS)

    def _require_node(self, node: str, deadline: Deadline) -> None:
        require_node(self.client, node, deadline)

    def _make_available(self, rd: str, node: str, deadline: Deadline) -> None:
        try:
            rcs = self.client.post(
                f"/v1/resource-definitions/{rd}/resources/{node}/make-available",
                deadline=deadline, body={"diskful": False})
        except LinstorError as err:
            if err.has(consts.FAIL_NOT_FOUND_NODE):
                raise NotFound(f"node {node} does not exist in LINSTOR") from err
            if err.has(consts.FAIL_NOT_FOUND_RSC_DFN):
                raise NotFound(f"volume {rd} does not exist") from err
            if err.has(consts.FAIL_NOT_CONNECTED):
                raise FailedPrecondition(f"node {node} is offline: {err.message}") from err
            if err.has(consts.FAIL_NOT_ENOUGH_NODES):
                raise FailedPrecondition(f"volume {rd} cannot be attached on {node}: "
                                         f"{err.message}") from err
            raise
        if any(rc.is_(consts.WARN_NOT_CONNECTED) and
               str(rc.obj_refs.get("Node", "")).upper() == node.upper() for rc in rcs):
            try:
                self.client.delete(f"/v1/resource-definitions/{rd}/resources/{node}",
                                   deadline=deadline, params={"keep_tiebreaker": "true"})
            except CsiError as err:  # best effort: the error below says what to do
                log.warning("could not undo the attach of %s on offline node %s: %s",
                            rd, node, err)
            raise FailedPrecondition(f"node {node} is offline in LINSTOR; volume {rd} cannot be "
                                     "attached there until its satellite is back")

    def _volume_device_path(self, rd: str, node: str, deadline: Deadline, vnr: int = 0) -> str:
        path = queries.volume(self.client, rd, node, vnr, deadline).device_path
        if not path:
            raise Unavailable(f"LINSTOR reports no device path for {rd} on {node} yet; retry")
        return path

    def unpublish(self, rd: str, node: str | None, deadline: Deadline,
                  resources: list[Resource] | None = None) -> None:
        """Remove diskless attachments (never a diskful replica); missing → OK.

        A consistency-group member shares one resource with the other members: its diskless
        attachment is removed unless another member is still published there (its attachment
        record) or uses it (LINSTOR refuses: in use, for groups made by LINBIT's driver, which
        records nothing), in which case the last member's unpublish removes it.
        """
        if node is not None and not ids.is_valid_node_name(node):
            return  # a node that cannot exist has nothing attached
        volume_id = rd
        shared = False
        if not ids.is_valid_name(rd) or ids.may_be_consistency_group(rd):
            member = self.consistency_group_member(rd, deadline)
            if member is not None:
                rd, shared = member[0], True
            elif not ids.is_valid_name(rd):
                return  # a volume that cannot exist is not attached anywhere
        if resources is None or shared:  # issue 17: the caller may pass what it fetched
            resources = self.resources(rd, deadline, node=node)
        for res in resources:
            if not res.is_diskless or res.is_tiebreaker:
                continue
            name = res.node_name
            others = attached_volumes(res) - {volume_id.upper()}
            if shared and others:
                log.info("consistency group %s stays attached on %s for the members still "
                         "published there: %s", rd, name, ", ".join(sorted(others)))
                continue
            try:
                self.client.delete(f"/v1/resource-definitions/{rd}/resources/{name}",
                                   deadline=deadline, params={"keep_tiebreaker": "true"})
            except LinstorError as err:
                if err.has(consts.FAIL_IN_USE) and shared:
                    log.info("consistency group %s is still in use on %s by another member; "
                             "its attachment stays until the last member is unpublished",
                             rd, name)
                    continue
                if err.has(consts.FAIL_IN_USE):
                    raise FailedPrecondition(f"volume {rd} is still in use on {name}; unmount "
                                             f"it there first: {err.message}") from err
                if not err.is_not_found():
                    raise

"""``csi-linstor doctor PVC [-n NS]``: the troubleshooting handbook, for one claim.

The checks, in the order an operator would make them by hand:

1. the claim, its StorageClass, the class's provisioner and parameters (an unknown storage pool,
   fewer nodes with the pool than ``placementCount``), LINSTOR reachability;
2. a Pending claim: the binding mode and the provisioning events (``ProvisioningFailed``);
3. a bound claim: its PV and the LINSTOR resource definition behind it, the replicas' states;
4. each pod using it: the node's CSINode (is our node plugin registered?), the VolumeAttachment
   (``attachError``), the LINSTOR satellite of that node, the DRBD state of the resource there
   (diskful not UpToDate; diskless with no connection to a diskful replica; no quorum), and the
   pod's ``FailedAttachVolume`` / ``FailedMount`` events;
5. expansion: the claim's resize conditions and the resizer's events;
6. snapshots of the claim: ``VolumeSnapshot`` errors and the LINSTOR snapshot's state.

``inspect`` is a pure function of the objects read (``ClaimObjects``), unit-testable on dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping import ids
from csi_linstor.mapping.params import parse_volume_parameters
from csi_linstor.ops.advice import attach_advice, provisioning_advice, snapshot_advice
from csi_linstor.ops.common import FAIL, INFO, PASS, WARN, Finding
from csi_linstor.ops.linstor_view import LinstorState
from csi_linstor.ops.status import quorum

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


@dataclass
class ClaimObjects:
    """Everything read for one claim. ``None`` for a list means "not allowed to read it"."""

    namespace: str
    name: str
    pvc: dict[str, Any] | None = None
    storage_class: dict[str, Any] | None = None
    default_classes: list[str] = field(default_factory=list)
    pv: dict[str, Any] | None = None
    pvc_events: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] | None = field(default_factory=list)
    pod_events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    csinodes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] | None = field(default_factory=list)
    snapshot_contents: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot_events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    linstor: LinstorState | None = None
    linstor_error: str = ""


def _g(obj: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = obj or {}
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def _warnings(events: list[dict[str, Any]], reasons: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "Warning"
            and (not reasons or e.get("reason") in reasons)]


def _ev(e: dict[str, Any]) -> str:
    count = e.get("count") or 1
    return f"{e.get('reason')}: {e.get('message', '').strip()}" + (
        f" (x{count})" if count and count > 1 else "")


def claim_pods(pods: list[dict[str, Any]], claim: str) -> list[dict[str, Any]]:
    return [p for p in pods if any(
        _g(v, "persistentVolumeClaim", "claimName") == claim
        for v in _g(p, "spec", "volumes") or [])]


class Doctor:
    def __init__(self, driver: str, o: ClaimObjects) -> None:
        self.driver = driver
        self.o = o
        self.class_level = FAIL
        self.findings: list[Finding] = []

    def add(self, level: str, check: str, message: str, advice: str = "", subject: str = ""
            ) -> None:
        self.findings.append(Finding(level, check, message, advice, subject))

    # -- 1. claim and class ------------------------------------------------------------------

    def inspect(self) -> list[Finding]:
        o = self.o
        if o.pvc is None:
            self.add(FAIL, "claim", f"PersistentVolumeClaim {o.namespace}/{o.name} not found",
                     f"check the name and namespace: kubectl get pvc -n {o.namespace}")
            return self.findings
        if o.linstor is None:
            self.add(FAIL, "linstor", f"LINSTOR is unreachable: {o.linstor_error}",
                     "check --linstor-endpoint / LS_CONTROLLERS and that the LINSTOR controller "
                     "runs; the driver cannot create, attach or delete volumes meanwhile")
        else:
            self.add(PASS, "linstor", f"LINSTOR {o.linstor.version} answers; "
                     f"{sum(n.online for n in o.linstor.nodes)}/{len(o.linstor.nodes)} "
                     "nodes online")
        phase = _g(o.pvc, "status", "phase") or "Pending"
        # a class problem blocks a Pending claim; for a bound one it only affects new claims
        self.class_level = FAIL if phase == "Pending" else WARN
        class_ok = self._storage_class()
        if phase == "Pending":
            self._pending(class_ok)
        elif phase == "Lost":
            self.add(FAIL, "claim", f"the claim is Lost: its PV {_g(o.pvc, 'spec', 'volumeName')}"
                     " no longer exists", "restore the data from a snapshot or backup into a "
                     "new claim; delete this one")
        else:
            self._bound()
        self._pods()
        self._expansion()
        self._snapshots()
        return self.findings

    def _storage_class(self) -> bool:
        o = self.o
        cls = _g(o.pvc, "spec", "storageClassName")
        if cls is None or cls == "":
            if _g(o.pvc, "spec", "volumeName"):
                self.add(INFO, "storage-class", "the claim names no StorageClass; it was bound "
                         "to a PV directly")
                return False
            self.add(FAIL, "storage-class",
                     "the claim names no StorageClass" + (
                         f" (and the default class is {', '.join(o.default_classes)})"
                         if o.default_classes and cls is None else
                         " and no StorageClass is marked default" if cls is None else
                         ' (storageClassName: "" asks for a pre-created PV)'),
                     "set spec.storageClassName to a class whose provisioner is "
                     f"{self.driver}, or mark one default ({DEFAULT_CLASS}=true); a claim's "
                     "class cannot be changed: re-create the claim")
            return False
        if o.storage_class is None:
            self.add(FAIL, "storage-class", f"StorageClass {cls} does not exist",
                     "create it (see deploy/examples) or re-create the claim naming an existing "
                     "class: kubectl get storageclass")
            return False
        prov = o.storage_class.get("provisioner")
        if prov != self.driver:
            self.add(FAIL, "provisioner", f"StorageClass {cls} is provisioned by {prov!r}, not "
                     f"by this driver ({self.driver})",
                     f"use a class with provisioner: {self.driver} (a wrong name, e.g. a typo or "
                     "another driver, leaves the claim Pending forever)")
            return False
        self.add(PASS, "storage-class", f"StorageClass {cls}, provisioner {prov}")
        return self._parameters(cls, o.storage_class.get("parameters") or {})

    def _parameters(self, cls: str, params: dict[str, str]) -> bool:
        try:
            p = parse_volume_parameters(params)
        except InvalidArgument as err:
            self.add(FAIL, "parameters", f"StorageClass {cls} has an invalid parameter: {err}",
                     "fix the class (parameters cannot be edited: delete and re-create it with "
                     "the same name), then re-create the claim")
            return False
        state = self.o.linstor
        if state is None:
            return True
        online = {n.name.lower() for n in state.nodes if n.online}
        pools = state.pools
        ok = True
        if p.storage_pools:
            known = {x.storage_pool_name.lower() for x in pools}
            missing = [sp for sp in p.storage_pools if sp.lower() not in known]
            if missing:
                ok = False
                have = sorted({x.storage_pool_name for x in pools if not x.is_diskless})
                self.add(self.class_level, "storage-pool", f"StorageClass {cls} names storage pool(s) "
                         f"{', '.join(missing)}, which no LINSTOR node has "
                         f"(pools: {', '.join(have) or 'none'})",
                         "fix storagePool in the class (re-create it), or create the pool: "
                         "linstor storage-pool create ...")
            wanted = {sp.lower() for sp in p.storage_pools}
            hosts = {x.node_name.lower() for x in pools
                     if x.storage_pool_name.lower() in wanted and not x.is_diskless}
        else:
            hosts = {x.node_name.lower() for x in pools if not x.is_diskless}
        if p.node_list:
            hosts &= {n.lower() for n in p.node_list}
        usable = hosts & online
        if ok and p.placement_count > len(usable) and not p.manual:
            ok = False
            self.add(self.class_level, "placement", f"StorageClass {cls} asks for {p.placement_count} "
                     f"replicas, but only {len(usable)} online node(s) have "
                     f"{'pool ' + '/'.join(p.storage_pools) if p.storage_pools else 'storage'}"
                     f"{': ' + ', '.join(sorted(usable)) if usable else ''}"
                     + (f" ({len(hosts - online)} more offline)" if hosts - online else ""),
                     "lower placementCount (a new class), add the pool on more nodes, or bring "
                     "the offline satellites back")
        if ok:
            self.add(PASS, "parameters", f"placementCount {p.placement_count}, "
                     f"{len(usable)} online node(s) with "
                     f"{'pool ' + '/'.join(p.storage_pools) if p.storage_pools else 'storage'}")
        return ok

    # -- 2. pending ----------------------------------------------------------------------------

    def _pending(self, class_ok: bool) -> None:
        o = self.o
        failed = _warnings(o.pvc_events, ("ProvisioningFailed",)) or _warnings(o.pvc_events)
        mode = (o.storage_class or {}).get("volumeBindingMode") or "Immediate"
        selected = _g(o.pvc, "metadata", "annotations", "volume.kubernetes.io/selected-node")
        if failed:
            last = failed[-1]
            self.add(FAIL, "provisioning", f"provisioning failed: {_ev(last)}",
                     provisioning_advice(last.get("message") or ""))
            return
        if mode == "WaitForFirstConsumer" and not selected:
            users = claim_pods(o.pods or [], o.name)
            if not users:
                self.add(INFO, "binding", "the class binds on first use "
                         "(WaitForFirstConsumer) and no pod uses the claim yet",
                         "nothing is wrong: the volume is created when a pod using the claim "
                         "is scheduled")
                return
            self.add(WARN, "binding", "a pod uses the claim but the scheduler has not picked a "
                     "node yet", f"kubectl describe pod -n {o.namespace} "
                     f"{_g(users[0], 'metadata', 'name')} (FailedScheduling events)")
            return
        if class_ok:
            self.add(WARN, "provisioning", "the claim is Pending without a provisioning error",
                     "provisioning may still be running; if it stays Pending, check that the "
                     "controller pod (csi-provisioner container) runs and its log")

    # -- 3. bound ------------------------------------------------------------------------------

    def _bound(self) -> None:
        o = self.o
        pv_name = _g(o.pvc, "spec", "volumeName")
        if o.pv is None:
            self.add(FAIL, "pv", f"the claim is bound to PV {pv_name}, which does not exist",
                     "the PV was deleted by hand: restore the data into a new claim")
            return
        csi = _g(o.pv, "spec", "csi") or {}
        if csi.get("driver") != self.driver:
            self.add(INFO, "pv", f"PV {pv_name} belongs to driver {csi.get('driver')!r}; "
                     "nothing of this driver to check")
            return
        handle = str(csi.get("volumeHandle"))
        state = o.linstor
        if state is None:
            return
        rd = state.rd(handle)
        if rd is None:
            self.add(FAIL, "linstor-volume", f"PV {pv_name} names LINSTOR resource {handle}, "
                     "which does not exist", "the data is gone from LINSTOR (deleted by hand?): "
                     "restore from a snapshot or backup into a new claim")
            return
        reps = state.replicas_of(handle)
        diskful = [r for r in reps if not r.diskless]
        self.add(PASS, "linstor-volume", f"PV {pv_name} -> LINSTOR resource {handle}: "
                 + ", ".join(f"{r.node} {r.disk_state if r.reported else 'unknown'}"
                             for r in sorted(diskful, key=lambda r: r.node)))
        offline = {n.name.lower() for n in state.nodes if not n.online}
        for r in diskful:
            if r.node.lower() in offline:
                self.add(WARN, "replica", f"replica of {handle} on {r.node}: that LINSTOR "
                         "satellite is offline", f"bring the satellite on {r.node} back; the "
                         "volume runs on the other replicas meanwhile",
                         subject=f"resource/{handle}@{r.node}")
            elif r.reported and r.drbd and r.disk_state != "UpToDate":
                self.add(WARN, "replica", f"replica of {handle} on {r.node} is {r.disk_state}",
                         "it resyncs from an UpToDate peer when connected; see "
                         f"`linstor resource list -r {handle}`",
                         subject=f"resource/{handle}@{r.node}")

    # -- 4. pods, attachments, nodes -----------------------------------------------------------

    def _pods(self) -> None:
        o = self.o
        if o.pods is None:
            self.add(INFO, "pods", "not allowed to list pods: the attach checks use the "
                     "VolumeAttachments only")
        users = claim_pods(o.pods or [], o.name)
        pv_name = _g(o.pvc, "spec", "volumeName")
        vas = [va for va in o.attachments
               if _g(va, "spec", "source", "persistentVolumeName") == pv_name]
        nodes = sorted({str(_g(p, "spec", "nodeName")) for p in users if _g(p, "spec", "nodeName")}
                       | {str(_g(va, "spec", "nodeName")) for va in vas})
        for node in nodes:
            self._node(node, [va for va in vas if _g(va, "spec", "nodeName") == node])
        for p in users:
            name = _g(p, "metadata", "name")
            for e in _warnings(o.pod_events.get(name, []),
                               ("FailedAttachVolume", "FailedMount", "FailedMapVolume")):
                self.add(FAIL, "pod-events", f"pod {name}: {_ev(e)}",
                         attach_advice(e.get("message") or ""), subject=f"pod/{name}")

    def _node(self, node: str, vas: list[dict[str, Any]]) -> None:
        o = self.o
        csinode = o.csinodes.get(node)
        drivers = [d for d in _g(csinode, "spec", "drivers") or [] if d.get("name") == self.driver]
        linstor_node = str(drivers[0].get("nodeID")) if drivers else node
        if not drivers:
            self.add(FAIL, "node-plugin", f"the node plugin of {self.driver} is not registered "
                     f"on node {node} (its CSINode lists "
                     f"{', '.join(d.get('name', '?') for d in _g(csinode, 'spec', 'drivers') or []) or 'no driver'})",
                     f"check the node DaemonSet's pod on {node} (kubectl get pods -o wide; its "
                     "node-driver-registrar log); a node whose LINSTOR satellite is missing "
                     "never registers", subject=f"node/{node}")
        else:
            self.add(PASS, "node-plugin", f"node plugin registered on {node} "
                     f"(LINSTOR node {linstor_node})")
        for va in vas:
            st = va.get("status") or {}
            err = _g(st, "attachError", "message")
            name = _g(va, "metadata", "name")
            if err:
                self.add(FAIL, "attach", f"VolumeAttachment {name} to {node} failed: {err}",
                         attach_advice(err), subject=f"volumeattachment/{name}")
            elif not st.get("attached"):
                self.add(WARN, "attach", f"VolumeAttachment {name} to {node} is not attached "
                         "yet", "csi-attacher is working on it; if it stays, check the "
                         "controller pod's csi-attacher log", subject=f"volumeattachment/{name}")
            else:
                self.add(PASS, "attach", f"attached to {node} ({name})")
            derr = _g(st, "detachError", "message")
            if derr:
                self.add(FAIL, "detach", f"VolumeAttachment {name} on {node} cannot detach: "
                         f"{derr}", attach_advice(derr), subject=f"volumeattachment/{name}")
        self._drbd_on(node, linstor_node)

    def _drbd_on(self, node: str, linstor_node: str) -> None:
        state = self.o.linstor
        handle = _g(self.o.pv, "spec", "csi", "volumeHandle")
        if state is None or not handle or state.rd(str(handle)) is None:
            return
        n = state.node(linstor_node)
        if n is None:
            self.add(FAIL, "satellite", f"node {node} has no LINSTOR node named {linstor_node}",
                     "register the satellite (linstor node create) or map the names "
                     "(node.linstorNodeNames in the chart's values)", subject=f"node/{node}")
            return
        if not n.online:
            self.add(FAIL, "satellite", f"the LINSTOR satellite on {linstor_node} is "
                     f"{n.connection_status or 'not connected'}",
                     f"start the satellite on {linstor_node} (systemctl status "
                     "linstor-satellite); nothing can be attached there until it is back",
                     subject=f"node/{linstor_node}")
            return
        self.add(PASS, "satellite", f"LINSTOR satellite {linstor_node} is online")
        reps = state.replicas_of(str(handle))
        rep = next((r for r in reps if r.node.lower() == linstor_node.lower()), None)
        if rep is None:
            self.add(WARN, "drbd", f"no LINSTOR resource of {handle} on {linstor_node} yet",
                     "ControllerPublish creates it (diskless) on attach; if the VolumeAttachment "
                     "says attached, the resource was deleted by hand: detach and re-attach",
                     subject=f"resource/{handle}@{linstor_node}")
            return
        subject = f"resource/{handle}@{linstor_node}"
        if not rep.reported:
            self.add(FAIL, "drbd", f"{handle} on {linstor_node}: no state reported",
                     f"check the satellite's log on {linstor_node}", subject=subject)
            return
        if not rep.drbd:
            self.add(PASS, "drbd", f"{handle} on {linstor_node}: storage layer only (no DRBD)")
            return
        problems = 0
        if not rep.diskless and rep.disk_state != "UpToDate":
            problems += 1
            self.add(FAIL, "drbd", f"{handle} on {linstor_node} is {rep.disk_state}, not "
                     "UpToDate", "the pod's node has a stale copy: it resyncs once connected "
                     "to an UpToDate peer; check `linstor resource list -r "
                     f"{handle}` and the peers' satellites", subject=subject)
        if rep.diskless and not rep.tiebreaker:
            diskful = sorted(r.node for r in reps if not r.diskless)
            connected = [d for d in diskful if rep.peers.get(d)]
            if diskful and not connected:
                problems += 1
                self.add(FAIL, "drbd", f"{handle} on {linstor_node} is diskless and connected "
                         f"to none of its diskful replicas ({', '.join(diskful)})",
                         "a diskless node reads over the network: bring a diskful replica's "
                         "satellite back or fix the DRBD network between the nodes",
                         subject=subject)
        if len(reps) > 1 and rep.peers:
            has, seen, voters = quorum(rep, reps)
            if not has:
                problems += 1
                self.add(FAIL, "drbd", f"{handle} on {linstor_node} has no quorum (sees "
                         f"{seen} of {voters} voting nodes)",
                         "IO there is suspended or fails (on-no-quorum); reconnect the "
                         "peers (their satellites, the DRBD ports)", subject=subject)
        if not problems:
            self.add(PASS, "drbd", f"{handle} on {linstor_node}: {rep.role} "
                     f"{rep.disk_state}" + (", in use" if rep.in_use else ""))

    # -- 5. expansion --------------------------------------------------------------------------

    def _expansion(self) -> None:
        o = self.o
        conds = {c.get("type"): c for c in _g(o.pvc, "status", "conditions") or []}
        want = _g(o.pvc, "spec", "resources", "requests", "storage")
        have = _g(o.pvc, "status", "capacity", "storage")
        resize_status = _g(o.pvc, "status", "allocatedResourceStatuses", "storage") or ""
        failed = _warnings(o.pvc_events, ("VolumeResizeFailed", "FileSystemResizeFailed",
                                          "ExternalExpanding"))
        failed = [e for e in failed if e.get("reason") != "ExternalExpanding"]
        if "Infeasible" in resize_status or "Failed" in resize_status:
            self.add(FAIL, "expansion", f"expansion to {want} failed ({resize_status})"
                     + (f": {_ev(failed[-1])}" if failed else ""),
                     "a pool without free space cannot grow the volume: free space, or set the "
                     "request back to the current size (Kubernetes allows it after a failure)")
        elif "FileSystemResizePending" in conds:
            self.add(WARN, "expansion", f"the volume was grown to {want}; the filesystem "
                     "grows when a pod next mounts it (FileSystemResizePending)",
                     "start (or restart) a pod using the claim; kubelet then grows the "
                     "filesystem through the node plugin")
        elif failed and ("Resizing" in conds or "InProgress" in resize_status):
            self.add(FAIL, "expansion", f"expansion to {want} is failing: {_ev(failed[-1])}",
                     "fix what the message says (often: not enough free space in the pool); "
                     "csi-resizer retries")
        elif "Resizing" in conds:
            self.add(WARN, "expansion", f"expansion from {have} to {want} is in progress "
                     "(controller side)", "csi-resizer is growing the LINSTOR volume; if it "
                     "stays, read the controller pod's csi-resizer log")
        elif failed:
            self.add(WARN, "expansion", f"an earlier expansion failed: {_ev(failed[-1])}")

    # -- 6. snapshots --------------------------------------------------------------------------

    def _snapshots(self) -> None:
        o = self.o
        if o.snapshots is None:
            return
        for vs in o.snapshots:
            if _g(vs, "spec", "source", "persistentVolumeClaimName") != o.name:
                continue
            name = _g(vs, "metadata", "name")
            st = vs.get("status") or {}
            err = _g(st, "error", "message")
            subject = f"volumesnapshot/{o.namespace}/{name}"
            if st.get("readyToUse") is True:
                self.add(PASS, "snapshot", f"VolumeSnapshot {name} is ready", subject=subject)
                continue
            events = _warnings(o.snapshot_events.get(name, []))
            if err or events:
                self.add(FAIL, "snapshot", f"VolumeSnapshot {name} is not ready: "
                         f"{err or _ev(events[-1])}", snapshot_advice(err or events[-1].get(
                             "message", "")), subject=subject)
            content = o.snapshot_contents.get(st.get("boundVolumeSnapshotContentName") or "")
            handle = _g(content, "status", "snapshotHandle")
            cerr = _g(content, "status", "error", "message")
            if cerr and cerr != err:
                self.add(FAIL, "snapshot", f"VolumeSnapshotContent of {name}: {cerr}",
                         snapshot_advice(cerr), subject=subject)
            if handle and o.linstor is not None:
                sid = ids.parse_snapshot_id(str(handle))
                snap = next((s for s in o.linstor.snapshots_of(sid.resource)
                             if s.name.lower() == sid.snapshot.lower()), None) if sid else None
                if snap is None:
                    self.add(FAIL, "snapshot", f"VolumeSnapshot {name}: LINSTOR snapshot "
                             f"{handle} does not exist", "delete the VolumeSnapshot and take "
                             "a new one", subject=subject)
                elif snap.failed:
                    self.add(FAIL, "snapshot", f"VolumeSnapshot {name}: LINSTOR snapshot "
                             f"{snap.resource_name}/{snap.name} failed ({', '.join(snap.flags)})",
                             "a satellite could not take it (offline node, pool without "
                             "snapshot support): delete the VolumeSnapshot and take a new one",
                             subject=subject)
                elif not snap.successful:
                    self.add(WARN, "snapshot", f"VolumeSnapshot {name}: LINSTOR snapshot "
                             f"{snap.resource_name}/{snap.name} is still being taken "
                             f"({', '.join(snap.flags) or 'no flags yet'})", subject=subject)
            elif not err and not events:
                self.add(WARN, "snapshot", f"VolumeSnapshot {name} is not ready yet and "
                         "reports no error", "check that snapshot-controller and the "
                         "csi-snapshotter container run", subject=subject)


def diagnosis(findings: list[Finding]) -> str:
    """The one line to read first: the first failure, else the first warning."""
    for level in (FAIL, WARN):
        hit = next((f for f in findings if f.level == level), None)
        if hit is not None:
            return hit.message
    return "no problem found"

"""The operator commands' joins and judgements on hand-made objects (csi_linstor/ops): the
report's StorageClass -> PVC -> PV -> LINSTOR join and its orphans both ways, the quorum rule,
the unexpected-node check, and the doctor's verdicts. The same commands run against a real
kube-apiserver in tests/k8s/test_operate.py."""

from __future__ import annotations

from typing import Any

from csi_linstor.linstor.models import Node, ResourceDefinition, Snapshot, StoragePool
from csi_linstor.ops import common, doctor, report, status
from csi_linstor.ops.linstor_view import LinstorState, Replica, replica_from_json

D = "linstor.csi.linbit.com"
OWNED = {"Aux/csi-volume-name": "pvc-x", "Aux/csi-provisioning-completed-by": "linstor-csi/x"}


def rd(name: str, props: dict[str, str] | None = None, size: int = 1048576) -> ResourceDefinition:
    return ResourceDefinition.from_json({"name": name, "props": OWNED if props is None else props,
                                         "volume_definitions": [{"volume_number": 0,
                                                                 "size_kib": size}]})


def rep(rdn: str, node: str, *, diskless: bool = False, tb: bool = False, disk: str = "",
        peers: dict[str, bool] | None = None, in_use: bool = False, reported: bool = True
        ) -> Replica:
    return Replica(rd=rdn, node=node, diskless=diskless or tb, tiebreaker=tb, drbd=True,
                   reported=reported, in_use=in_use,
                   disk_states=(disk or ("Diskless" if diskless or tb else "UpToDate"),),
                   sync=(), peers=peers or {}, pools=("DfltStorPool",) if not diskless else (),
                   flags=("TIE_BREAKER",) if tb else ())


def pv(name: str, handle: str, claim: tuple[str, str] | None = None, cls: str = "sc",
       driver: str = D) -> dict[str, Any]:
    spec: dict[str, Any] = {"csi": {"driver": driver, "volumeHandle": handle},
                            "storageClassName": cls, "capacity": {"storage": "1Gi"},
                            "accessModes": ["ReadWriteOnce"]}
    if claim:
        spec["claimRef"] = {"namespace": claim[0], "name": claim[1]}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Bound"}}


def pvc(ns: str, name: str, cls: str, volume: str = "", phase: str = "Bound") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"storageClassName": cls, "volumeName": volume,
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": phase, "capacity": {"storage": "1Gi"} if volume else {}}}


def nodes(*names: str, offline: tuple[str, ...] = ()) -> list[Node]:
    return [Node.from_json({"name": n, "type": "SATELLITE",
                            "connection_status": "OFFLINE" if n in offline else "ONLINE"})
            for n in names]


# -- report: the join and the orphans ------------------------------------------------------------


def test_report_joins_class_claim_pv_and_linstor_and_finds_orphans_both_ways():
    state = LinstorState(
        nodes=nodes("n1", "n2", "n3"),
        rds=[rd("pvc-a"), rd("pvc-orphan"), rd("pvc-kept", {**OWNED, "Aux/csi-deleted": "x"}),
             rd("not-ours", {})],
        replicas=[rep("pvc-a", "n1", in_use=True), rep("pvc-a", "n2"),
                  rep("pvc-a", "n3", tb=True), rep("pvc-orphan", "n2"), rep("not-ours", "n1")],
        snapshots=[Snapshot.from_json({"name": "snap-1", "resource_name": "pvc-a",
                                       "flags": ["SUCCESSFUL"]}),
                   Snapshot.from_json({"name": "s", "resource_name": "pvc-kept",
                                       "flags": ["SUCCESSFUL"]})])
    k = report.KubeObjects(
        storage_classes=[{"metadata": {"name": "sc"}, "provisioner": D,
                          "parameters": {"placementCount": "2"}},
                         {"metadata": {"name": "other"}, "provisioner": "ebs.csi.aws.com"}],
        pvcs=[pvc("app", "data", "sc", "pv-a"), pvc("app", "ebs", "other", "pv-ebs"),
              pvc("app", "waiting", "sc", phase="Pending")],
        pvs=[pv("pv-a", "pvc-a", ("app", "data")), pv("pv-gone", "pvc-gone", ("app", "old")),
             pv("pv-ebs", "vol-123", ("app", "ebs"), cls="other", driver="ebs.csi.aws.com")],
        attachments=[{"spec": {"attacher": D, "nodeName": "n1",
                               "source": {"persistentVolumeName": "pv-a"}},
                      "status": {"attached": True}}],
        snapshot_contents=[{"spec": {"driver": D, "volumeSnapshotRef": {
            "namespace": "app", "name": "vs1"}}, "status": {
            "snapshotHandle": "InCluster:///pvc-a/snap-1"}},
            {"spec": {"driver": D, "volumeSnapshotRef": {"namespace": "app", "name": "vs2"}},
             "status": {"snapshotHandle": "InCluster:///pvc-a/snap-gone"}}])
    out = report.build(D, k, state)
    classes = {c["name"]: c for c in out["storage_classes"]}
    assert set(classes) == {"sc"}, "another driver's class or claim was reported"
    claims = {c["claim"]: c for c in classes["sc"]["claims"]}
    assert set(claims) == {"data", "waiting", "old"}
    data = claims["data"]["linstor"]
    assert [(r["node"], r["role"], r["disk_state"]) for r in data["replicas"]] == [
        ("n1", "diskful", "UpToDate"), ("n2", "diskful", "UpToDate"),
        ("n3", "tiebreaker", "Diskless")]
    assert data["attached_to"] == ["n1"] and data["in_use_on"] == ["n1"]
    assert data["snapshots"] == [{"name": "snap-1", "state": "ready",
                                  "volume_snapshot": "app/vs1"}]
    assert claims["waiting"]["linstor"] is None and claims["waiting"]["pv"] is None
    assert claims["old"]["claim_missing"] and claims["old"]["linstor"] is None
    o = out["orphans"]
    assert [x["resource"] for x in o["linstor_without_pv"]] == ["pvc-orphan"]
    assert o["linstor_without_pv"][0]["nodes"] == ["n2"]
    assert [x["pv"] for x in o["pv_without_linstor"]] == ["pv-gone"]
    assert o["pv_without_linstor"][0]["claim"] == "app/old"
    assert [x["resource"] for x in o["retained_for_snapshots"]] == ["pvc-kept"]
    assert o["snapshot_content_without_linstor"] == [
        {"resource": "pvc-a", "snapshot": "snap-gone", "volume_snapshot": "app/vs2"}]
    findings = report.report_findings(out)
    assert common.exit_code(findings) == common.ABNORMAL
    text = report.report_text(out)
    assert "pv-gone" in text and "pvc-orphan" in text and "n1:UpToDate" in text


def test_report_without_orphans_exits_zero_and_ignores_foreign_volumes():
    state = LinstorState(rds=[rd("pvc-a"), rd("manual-volume", {})],
                         replicas=[rep("pvc-a", "n1")])
    k = report.KubeObjects(pvs=[pv("pv-a", "pvc-a")], pvcs=[pvc("ns", "c", "sc", "pv-a")])
    out = report.build(D, k, state)
    assert not any(out["orphans"][key] for key in ("linstor_without_pv", "pv_without_linstor"))
    assert common.exit_code(report.report_findings(out)) == common.OK


def test_an_unfinished_volume_without_pv_is_reported_as_such():
    state = LinstorState(rds=[rd("pvc-new", {"Aux/csi-volume-name": "pvc-new"})])
    out = report.build(D, report.KubeObjects(), state)
    f = report.report_findings(out)
    assert len(f) == 1 and "never completed" in f[0].message


# -- status: quorum, states, unexpected node -----------------------------------------------------


def test_quorum_follows_drbd_majority_with_the_tiebreaker_voting_for_even_counts():
    reps = [rep("r", "a", peers={"b": False, "t": True}), rep("r", "b"),
            rep("r", "t", tb=True)]
    assert status.quorum(reps[0], reps) == (True, 2, 3)
    alone = rep("r", "a", peers={"b": False, "t": False})
    assert status.quorum(alone, [alone, reps[1], reps[2]]) == (False, 1, 3)
    two = [rep("r", "a", peers={"b": False}), rep("r", "b")]
    assert status.quorum(two[0], two)[0] is False
    client = rep("r", "c", diskless=True, peers={"a": True, "b": True, "d": False})
    three = [rep("r", "a"), rep("r", "b"), rep("r", "d"), client]
    assert status.quorum(client, three) == (True, 2, 3)


def test_status_reports_offline_nodes_bad_disks_lost_quorum_and_unexpected_use():
    state = LinstorState(
        nodes=nodes("a", "b", "c", "d", offline=("d",)),
        rds=[rd("r1"), rd("r2"), rd("r3")],
        replicas=[rep("r1", "a", disk="Outdated", peers={"b": True}),
                  rep("r1", "b", peers={"a": True}, in_use=True),
                  rep("r2", "a", peers={"b": False, "c": False}),
                  rep("r2", "b", peers={"a": False, "c": True}),
                  rep("r2", "c", peers={"a": False, "b": True}),
                  rep("r3", "d", reported=False),
                  rep("r3", "c", diskless=True, peers={"d": False})])
    rows, findings = status.status_findings(state, {"r1": {"a"}})
    msgs = [f.message for f in findings if f.abnormal]
    assert "LINSTOR node d is OFFLINE" in msgs
    assert "r1 on a is Outdated" in msgs
    assert any(m.startswith("r2 on a has no quorum: it sees 1 of 3") for m in msgs)
    assert not any(m.startswith("r2 on b has no quorum") for m in msgs)
    assert "r3 on d: state unknown, the satellite is offline" in msgs
    assert any("diskless r3 on c is connected to none" in m for m in msgs)
    assert any(m == "r1 is in use on b, but Kubernetes attached it to a" for m in msgs)
    assert common.exit_code(findings) == common.ABNORMAL


def test_status_of_a_healthy_cluster_exits_zero():
    state = LinstorState(
        nodes=nodes("a", "b"), rds=[rd("r")],
        pools=[StoragePool.from_json({"storage_pool_name": "p", "node_name": "a",
                                      "provider_kind": "LVM_THIN", "free_capacity": 900,
                                      "total_capacity": 1000})],
        replicas=[rep("r", "a", peers={"b": True}), rep("r", "b", peers={"a": True})])
    rows, findings = status.status_findings(state, {"r": set()})
    assert common.exit_code(findings) == common.OK, findings
    text = status.status_text(state, rows, findings)
    assert "no problems found" in text and "2/2 nodes online" in text


def test_a_nearly_full_thin_pool_is_reported_with_its_overprovisioning():
    state = LinstorState(
        nodes=nodes("a"), rds=[rd("r", size=4000)], replicas=[rep("r", "a")],
        pools=[StoragePool.from_json({"storage_pool_name": "DfltStorPool", "node_name": "a",
                                      "provider_kind": "LVM_THIN", "free_capacity": 50,
                                      "total_capacity": 1000})])
    rows, findings = status.status_findings(state, None)
    assert rows[0].overprovision == 4.0
    assert any(f.check == "pool" and "thin pool nearly full" in f.message for f in findings)


def test_replica_from_the_view_reads_drbd_connections_and_resync():
    r = replica_from_json({
        "name": "r", "node_name": "a", "flags": [], "state": {"in_use": False},
        "layer_object": {"type": "DRBD", "drbd": {"connections": {
            "b": {"connected": True, "message": "Connected"},
            "c": {"connected": False, "message": "Connecting"}}}},
        "volumes": [{"volume_number": 0, "storage_pool_name": "p",
                     "layer_data_list": [{"type": "DRBD"}, {"type": "STORAGE"}],
                     "state": {"disk_state": "Inconsistent", "replication_states": {
                         "b": {"replication_state": "SyncTarget", "done_percentage": 41.6}}}}]})
    assert r.peers == {"b": True, "c": False} and r.drbd and r.reported
    assert r.disk_state == "Inconsistent" and r.sync == ("SyncTarget from/to b 42%",)
    storage_only = replica_from_json({"name": "r", "node_name": "a", "state": {},
                                      "layer_object": {"type": "STORAGE"},
                                      "volumes": [{"layer_data_list": [{"type": "STORAGE"}]}]})
    assert not storage_only.drbd and storage_only.disk_state == "n/a (no DRBD)"


# -- doctor ----------------------------------------------------------------------------------------


def _claim(**kw: Any) -> doctor.ClaimObjects:
    o = doctor.ClaimObjects("ns", "c", **kw)
    return o


def _pools(*pairs: tuple[str, str]) -> list[StoragePool]:
    return [StoragePool.from_json({"storage_pool_name": p, "node_name": n,
                                   "provider_kind": "LVM_THIN"}) for n, p in pairs]


def test_doctor_names_the_unknown_pool_and_too_few_nodes():
    state = LinstorState(nodes=nodes("a", "b", "c", offline=("c",)),
                         pools=_pools(("a", "fast"), ("b", "slow"), ("c", "fast")))
    sc = {"metadata": {"name": "sc"}, "provisioner": D,
          "parameters": {"storagePool": "nope"}}
    f = doctor.Doctor(D, _claim(pvc=pvc("ns", "c", "sc", phase="Pending"), storage_class=sc,
                                linstor=state)).inspect()
    assert doctor.diagnosis(f).startswith("StorageClass sc names storage pool(s) nope, which no")
    sc["parameters"] = {"storagePool": "fast", "placementCount": "2"}
    f = doctor.Doctor(D, _claim(pvc=pvc("ns", "c", "sc", phase="Pending"), storage_class=sc,
                                linstor=state)).inspect()
    assert doctor.diagnosis(f) == ("StorageClass sc asks for 2 replicas, but only 1 online "
                                   "node(s) have pool fast: a (1 more offline)")


def test_doctor_on_a_diskless_attachment_whose_replica_is_gone():
    state = LinstorState(nodes=nodes("a", "b", offline=("a",)), rds=[rd("pvc-1")],
                         pools=_pools(("a", "pool1")),
                         replicas=[rep("pvc-1", "a", reported=False),
                                   rep("pvc-1", "b", diskless=True, peers={"a": False})])
    sc = {"metadata": {"name": "sc"}, "provisioner": D, "parameters": {}}
    o = _claim(pvc=pvc("ns", "c", "sc", "pv-1"), storage_class=sc, pv=pv("pv-1", "pvc-1"),
               pods=[{"metadata": {"name": "app"}, "spec": {"nodeName": "b", "volumes": [
                   {"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]}}],
               csinodes={"b": {"spec": {"drivers": [{"name": D, "nodeID": "b"}]}}},
               attachments=[{"metadata": {"name": "csi-1"}, "spec": {
                   "nodeName": "b", "source": {"persistentVolumeName": "pv-1"}},
                   "status": {"attached": True}}], linstor=state)
    f = doctor.Doctor(D, o).inspect()
    fails = [x.message for x in f if x.level == common.FAIL]
    assert fails == ["pvc-1 on b is diskless and connected to none of its diskful replicas (a)",
                     "pvc-1 on b has no quorum (sees 0 of 1 voting nodes)"]
    warns = [x.message for x in f if x.level == common.WARN]
    assert warns == ["StorageClass sc asks for 1 replicas, but only 0 online node(s) have "
                     "storage (1 more offline)",
                     "replica of pvc-1 on a: that LINSTOR satellite is offline"]


def test_doctor_with_nothing_wrong_says_so():
    state = LinstorState(nodes=nodes("a"), pools=_pools(("a", "pool1")), rds=[rd("pvc-1")],
                         replicas=[rep("pvc-1", "a")])
    sc = {"metadata": {"name": "sc"}, "provisioner": D, "parameters": {"storagePool": "pool1"}}
    f = doctor.Doctor(D, _claim(pvc=pvc("ns", "c", "sc", "pv-1"), storage_class=sc,
                                pv=pv("pv-1", "pvc-1"), linstor=state)).inspect()
    assert doctor.diagnosis(f) == "no problem found" and common.exit_code(f) == common.OK

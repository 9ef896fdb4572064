"""The operator commands (csi-linstor status | report | doctor) against a real kube-apiserver,
controller-manager and the chart's CSI sidecars, as an operator runs them from a laptop: a
kubeconfig and the LINSTOR URL, a subprocess per command, its output and exit code checked.

Every handbook case is built for real where the control plane can produce it (a class naming an
unknown pool, too many replicas, an injected LINSTOR failure during provisioning, an offline
satellite during attach, a node without our node plugin, an Outdated replica, a diskless
attachment cut off from its data, an expansion refused by LINSTOR, a failed LINSTOR snapshot),
then ``doctor`` must name it (the diagnosis line and the advice) and exit 1. No kubelet runs
here, so pods are API objects bound to a node by ``nodeName``; the attach-detach controller and
csi-attacher make the VolumeAttachments.

status and report also run on the real LINSTOR 1.33.3 (one node, storage layer only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.k8s.cluster import DRIVER, REPO, kubeconfig, wait_for
from tests.k8s.conftest import Kube
from tests.k8s.test_stories import (
    NS,
    SNAP,
    _name,
    _snapshot_class,
    attachments,
    bound,
    pod,
    pvc,
    storage_class,
    volume_id,
)
from tests.real_linstor import free_port


@pytest.fixture(scope="module", params=["sim", "real"])
def kube(request: pytest.FixtureRequest) -> Kube:
    return request.getfixturevalue(f"{request.param}_kube")


@pytest.fixture
def sim(sim_kube: Kube) -> Iterator[Kube]:
    """The simulator's cluster with every fault knob off before and after the test."""
    _sim(sim_kube, "reset-faults")
    yield sim_kube
    _sim(sim_kube, "reset-faults")


def _sim(kube: Kube, path: str, body: dict[str, Any] | None = None) -> None:
    r = requests.post(f"{kube.linstor_url}/sim/{path}", json=body or {}, timeout=30)
    r.raise_for_status()


def run(kube: Kube, *args: str, linstor: str | None = None, kubecfg: Path | None = None,
        ) -> tuple[int, str, str]:
    """One operator command as a user runs it; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "LS_CONTROLLERS", "KUBERNETES_SERVICE_HOST")}
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "csi_linstor.cli", *args,
            "--linstor-endpoint", linstor or kube.linstor_url,
            "--kubeconfig", str(kubecfg or kube.cluster.admin_kubeconfig)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                         check=False, cwd=REPO)
    return out.returncode, out.stdout, out.stderr


def doctor(kube: Kube, claim: str) -> tuple[int, dict[str, Any], str]:
    """doctor's JSON and its text, from two runs; both must agree on the exit code."""
    code, out, err = run(kube, "doctor", claim, "-n", NS, "--json")
    assert not err.strip(), err
    code2, text, _ = run(kube, "doctor", f"{NS}/{claim}")
    assert code == code2, (code, code2, text)
    return code, json.loads(out), text


def fails(result: dict[str, Any]) -> list[str]:
    return [f"{f['check']}: {f['message']}" for f in result["findings"] if f["level"] == "fail"]


def finding(result: dict[str, Any], check: str, level: str = "fail") -> dict[str, Any]:
    hits = [f for f in result["findings"] if f["check"] == check and f["level"] == level]
    assert hits, f"no {level} {check} finding in {json.dumps(result, indent=1)}"
    return hits[0]


def pvc_events(kube: Kube, claim: str, reason: str) -> list[Any]:
    return [e for e in kube.cluster.core.list_namespaced_event(NS).items
            if e.involved_object.name == claim and e.reason == reason]


def replica_node(kube: Kube, claim: Any) -> str:
    return next(iter(kube.diskful(volume_id(kube, claim))))


def attached_va(kube: Kube, pv: str) -> Any:
    return wait_for(lambda: [v for v in attachments(kube, pv) if v.status and v.status.attached],
                    90, f"a VolumeAttachment of {pv} attached")[0]


# -- status ----------------------------------------------------------------------------------------


def test_status_shows_nodes_pools_and_exits_zero_when_healthy(kube: Kube) -> None:
    if kube.backend == "sim":
        _sim(kube, "reset-faults")
    code, out, err = run(kube, "status", "--json")
    data = json.loads(out)
    assert code == 0, data["findings"]
    assert {n["name"]: n["connection_status"] for n in data["nodes"]} == {
        n: "ONLINE" for n in kube.nodes}
    pools = {(p["node"], p["pool"]): p for p in data["storage_pools"]}
    truth = kube.linstor("/v1/view/storage-pools")
    for sp in truth:
        if sp["provider_kind"] == "DISKLESS":
            continue
        row = pools[(sp["node_name"], sp["storage_pool_name"])]
        # free space is live on a real filesystem: only the total is compared exactly
        assert row["total_kib"] == sp.get("total_capacity")
        assert 0 <= row["free_kib"] <= row["total_kib"]
    code, text, _ = run(kube, "status")
    assert code == 0 and "no problems found" in text
    assert f"{len(kube.nodes)}/{len(kube.nodes)} nodes online" in text


def test_status_reports_an_offline_satellite_and_a_volume_in_use_on_an_unexpected_node(
        sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-st"), {"placementCount": "2"})
    c = bound(sim, pvc(sim, _name("pvc-st"), sc))
    rd = volume_id(sim, c)
    replicas = sorted(sim.diskful(rd))
    pod(sim, _name("app"), c.metadata.name, node=replicas[0])
    attached_va(sim, c.spec.volume_name)
    # DRBD says Primary on the other replica's node: something outside Kubernetes opened it
    _sim(sim, f"resources/{rd}/{replicas[1]}", {"in_use": True})
    code, text, _ = run(sim, "status")
    assert code == 1, text
    assert (f"FAIL  in-use: {rd} is in use on {replicas[1]}, but Kubernetes attached it to "
            f"{replicas[0]}") in text
    _sim(sim, "reset-faults")
    _sim(sim, "nodes/node-3/online", {"online": False})
    code, text, _ = run(sim, "status")
    assert code == 1
    assert "! node-3  SATELLITE  OFFLINE" in text
    assert "FAIL  node: LINSTOR node node-3 is OFFLINE" in text
    assert "start or fix the satellite on node-3" in text


def test_status_watch_refreshes_until_interrupted(sim: Kube, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    out_file = tmp_path / "watch.out"
    with open(out_file, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "csi_linstor.cli", "status", "--no-kube",
                                 "--watch", "0.2", "--linstor-endpoint", sim.linstor_url],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=REPO)
    try:
        wait_for(lambda: out_file.read_text().count("LINSTOR 1.33.3:") >= 2, 60,
                 "two refreshes of status --watch")
        proc.send_signal(2)  # ^C
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out_file.read_text()[-2000:]
    assert "Traceback" not in out_file.read_text()


# -- report ----------------------------------------------------------------------------------------


def test_report_joins_claims_with_linstor_and_finds_orphans_both_ways(kube: Kube) -> None:
    sc = storage_class(kube, _name("sc-rep"), {"placementCount": "1"}, reclaim="Retain")
    cls = _snapshot_class(kube)
    claim = bound(kube, pvc(kube, _name("pvc-rep"), sc))
    rd = volume_id(kube, claim)
    snap = _name("snap")
    kube.cluster.custom.create_namespaced_custom_object(*SNAP, NS, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": snap}, "spec": {"volumeSnapshotClassName": cls, "source": {
            "persistentVolumeClaimName": claim.metadata.name}}})
    wait_for(lambda: (kube.cluster.custom.get_namespaced_custom_object(
        *SNAP, NS, "volumesnapshots", snap).get("status") or {}).get("readyToUse"), 90,
        "the VolumeSnapshot ready")
    code, out, err = run(kube, "report", "--json")
    data = json.loads(out)
    ours = next(s for s in data["storage_classes"] if s["name"] == sc)
    row = next(c for c in ours["claims"] if c["claim"] == claim.metadata.name)
    assert row["namespace"] == NS and row["phase"] == "Bound" and row["size"] == "1Gi"
    assert row["access_modes"] == ["ReadWriteOnce"] and row["pv"] == claim.spec.volume_name
    ls = row["linstor"]
    assert ls["resource"] == rd and ls["size_kib"] == 1024 * 1024
    assert [r["node"] for r in ls["replicas"] if r["role"] == "diskful"] == list(
        kube.diskful(rd))
    assert [s["volume_snapshot"] for s in ls["snapshots"]] == [f"{NS}/{snap}"]
    assert all(s["state"] == "ready" for s in ls["snapshots"])
    # orphans: the Retain PV deleted by hand (LINSTOR keeps the volume), and a PV whose
    # LINSTOR volume never existed
    kube.cluster.custom.delete_namespaced_custom_object(*SNAP, NS, "volumesnapshots", snap)
    kube.cluster.core.delete_namespaced_persistent_volume_claim(claim.metadata.name, NS)
    wait_for(lambda: kube.cluster.core.read_persistent_volume(claim.spec.volume_name)
             .status.phase == "Released", 60, "the Retain PV Released")
    kube.cluster.core.delete_persistent_volume(claim.spec.volume_name)
    ghost = _name("pv-ghost")
    kube.cluster.core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": ghost},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": sc,
                 "csi": {"driver": DRIVER, "volumeHandle": f"pvc-{ghost}"}}})
    try:
        wait_for(lambda: not [p for p in kube.cluster.core.list_persistent_volume().items
                              if p.metadata.name == claim.spec.volume_name], 30, "PV deleted")
        wait_for(lambda: not kube.linstor(f"/v1/resource-definitions/{rd}/snapshots"), 60,
                 "the LINSTOR snapshot deleted")
        code, out, _ = run(kube, "report", "--json")
        data = json.loads(out)
        assert code == 1
        orphans = data["orphans"]
        assert rd in [o["resource"] for o in orphans["linstor_without_pv"]]
        assert [o["pv"] for o in orphans["pv_without_linstor"]] == [ghost]
        code, text, _ = run(kube, "report")
        assert code == 1
        assert f"WARN  orphan: LINSTOR volume {rd} (1.0 GiB on" in text
        assert f"FAIL  orphan: PersistentVolume {ghost} (claim none) names LINSTOR volume " \
               f"pvc-{ghost}, which does not exist" in text
        assert f"linstor resource-definition delete {rd}" in text
    finally:
        kube.cluster.core.delete_persistent_volume(ghost)
        requests.delete(f"{kube.linstor_url}/v1/resource-definitions/{rd}", timeout=60)
    code, out, _ = run(kube, "report", "--json")
    assert not json.loads(out)["orphans"]["linstor_without_pv"], out


# -- doctor: the handbook, case by case ------------------------------------------------------------


def test_doctor_a_healthy_attached_claim_exits_zero(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-ok"), {"placementCount": "2"})
    c = bound(sim, pvc(sim, _name("pvc-ok"), sc))
    node = replica_node(sim, c)
    pod(sim, _name("app"), c.metadata.name, node=node)
    attached_va(sim, c.spec.volume_name)
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 0, text
    assert res["diagnosis"] == "no problem found"
    assert f"ok    attach: attached to {node}" in text
    assert f"ok    satellite: LINSTOR satellite {node} is online" in text


def test_doctor_pending_claim_without_a_storage_class(sim: Kube) -> None:
    claim = _name("pvc-nocls")
    sim.cluster.core.create_namespaced_persistent_volume_claim(NS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {
            "storage": "1Gi"}}}})
    code, res, text = doctor(sim, claim)
    assert code == 1
    assert res["diagnosis"] == ("the claim names no StorageClass and no StorageClass is "
                                "marked default")
    assert "-> set spec.storageClassName to a class whose provisioner is " \
           "linstor.csi.linbit.com" in text


def test_doctor_pending_claim_of_another_provisioner(sim: Kube) -> None:
    sc = _name("sc-typo")
    sim.cluster.storage.create_storage_class({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": sc},
        "provisioner": "linstor.csi.linbit.co", "parameters": {"placementCount": "1"}})
    claim = pvc(sim, _name("pvc-typo"), sc)
    code, res, text = doctor(sim, claim)
    assert code == 1
    assert res["diagnosis"] == (f"StorageClass {sc} is provisioned by 'linstor.csi.linbit.co', "
                                "not by this driver (linstor.csi.linbit.com)")
    assert "a wrong name, e.g. a typo" in text


def test_doctor_pending_claim_whose_class_names_an_unknown_pool(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-nopool"), {"placementCount": "1",
                                                  "storagePool": "nosuchpool"})
    claim = pvc(sim, _name("pvc-nopool"), sc)
    # the real provisioner tries too, and fails: the event is part of what doctor shows
    wait_for(lambda: pvc_events(sim, claim, "ProvisioningFailed"), 60, "ProvisioningFailed")
    code, res, text = doctor(sim, claim)
    assert code == 1
    assert res["diagnosis"] == (f"StorageClass {sc} names storage pool(s) nosuchpool, which no "
                                "LINSTOR node has (pools: DfltStorPool, sp1)")
    assert "FAIL  provisioning: provisioning failed: ProvisioningFailed:" in text


def test_doctor_pending_claim_asking_for_more_replicas_than_nodes(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-r5"), {"placementCount": "5"})
    claim = pvc(sim, _name("pvc-r5"), sc)
    code, res, text = doctor(sim, claim)
    assert code == 1
    assert res["diagnosis"] == (f"StorageClass {sc} asks for 5 replicas, but only 3 online "
                                "node(s) have storage: node-1, node-2, node-3")
    assert "-> lower placementCount (a new class)" in text


def test_doctor_pending_claim_with_a_provisioning_error_event(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-err"), {"placementCount": "1"})
    _sim(sim, "failure-rate", {"rate": 1.0, "route": "^POST "})  # LINSTOR refuses every write
    claim = pvc(sim, _name("pvc-err"), sc)
    wait_for(lambda: pvc_events(sim, claim, "ProvisioningFailed"), 60, "ProvisioningFailed")
    code, res, text = doctor(sim, claim)
    assert code == 1
    assert res["diagnosis"].startswith("provisioning failed: ProvisioningFailed: ")
    assert "Injected failure" in res["diagnosis"]
    assert "ok    parameters: placementCount 1, 3 online node(s) with storage" in text


def test_doctor_failed_attach_on_a_node_whose_satellite_is_offline(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-att"), {"placementCount": "1"})
    c = bound(sim, pvc(sim, _name("pvc-att"), sc))
    other = next(n for n in sim.nodes if n != replica_node(sim, c))
    _sim(sim, f"nodes/{other}/online", {"online": False})
    pod(sim, _name("app"), c.metadata.name, node=other)
    wait_for(lambda: [v for v in attachments(sim, c.spec.volume_name)
                      if v.status and v.status.attach_error], 90, "an attach error")
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 1
    attach = finding(res, "attach")["message"]
    assert attach.startswith("VolumeAttachment csi-") and f" to {other} failed: " in attach
    sat = finding(res, "satellite")
    assert sat["message"] == f"the LINSTOR satellite on {other} is OFFLINE"
    assert sat["advice"].startswith(f"start the satellite on {other}")


def test_doctor_claim_used_on_a_node_without_our_node_plugin(sim: Kube) -> None:
    node = _name("node-x")
    sim.cluster.core.create_node({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "annotations": {
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"taints": [{"key": "test", "effect": "NoSchedule"}]}})
    try:
        sc = storage_class(sim, _name("sc-reg"), {"placementCount": "1"})
        c = bound(sim, pvc(sim, _name("pvc-reg"), sc))
        pod(sim, _name("app"), c.metadata.name, node=node)
        code, res, text = doctor(sim, c.metadata.name)
        assert code == 1
        plugin = finding(res, "node-plugin")
        assert plugin["message"] == (f"the node plugin of {DRIVER} is not registered on node "
                                     f"{node} (its CSINode lists no driver)")
        assert "node-driver-registrar" in plugin["advice"]
        assert finding(res, "satellite")["message"] == \
            f"node {node} has no LINSTOR node named {node}"
    finally:
        sim.cluster.core.delete_node(node)


def test_doctor_replica_on_the_pods_node_is_not_up_to_date(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-out"), {"placementCount": "2"})
    c = bound(sim, pvc(sim, _name("pvc-out"), sc))
    rd = volume_id(sim, c)
    node = replica_node(sim, c)
    pod(sim, _name("app"), c.metadata.name, node=node)
    attached_va(sim, c.spec.volume_name)
    _sim(sim, f"resources/{rd}/{node}", {"disk_state": "Outdated"})
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 1
    assert res["diagnosis"] == f"{rd} on {node} is Outdated, not UpToDate"
    assert "the pod's node has a stale copy" in text


def test_doctor_diskless_attachment_cut_off_from_its_data(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-dl"), {"placementCount": "1"})
    c = bound(sim, pvc(sim, _name("pvc-dl"), sc))
    rd = volume_id(sim, c)
    replica = replica_node(sim, c)
    node = next(n for n in sim.nodes if n != replica)
    pod(sim, _name("app"), c.metadata.name, node=node)
    attached_va(sim, c.spec.volume_name)
    _sim(sim, f"nodes/{replica}/online", {"online": False})
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 1
    drbd = [f["message"] for f in res["findings"] if f["check"] == "drbd"]
    assert drbd == [f"{rd} on {node} is diskless and connected to none of its diskful "
                    f"replicas ({replica})",
                    f"{rd} on {node} has no quorum (sees 0 of 1 voting nodes)"]
    assert finding(res, "replica", "warn")["message"] == \
        f"replica of {rd} on {replica}: that LINSTOR satellite is offline"


def test_doctor_expansion_waiting_for_the_node(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-grow"), {"placementCount": "1"})
    c = bound(sim, pvc(sim, _name("pvc-grow"), sc))
    sim.cluster.core.patch_namespaced_persistent_volume_claim(
        c.metadata.name, NS, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
    wait_for(lambda: {x.type for x in sim.cluster.core.read_namespaced_persistent_volume_claim(
        c.metadata.name, NS).status.conditions or []} & {"FileSystemResizePending"}, 60,
        "FileSystemResizePending")
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 1
    assert res["diagnosis"] == ("the volume was grown to 2Gi; the filesystem grows when a pod "
                                "next mounts it (FileSystemResizePending)")
    assert "-> start (or restart) a pod using the claim" in text


def test_doctor_expansion_refused_by_linstor(sim: Kube) -> None:
    sc = storage_class(sim, _name("sc-nogrow"), {"placementCount": "2"})
    c = bound(sim, pvc(sim, _name("pvc-nogrow"), sc))
    rd = volume_id(sim, c)
    _sim(sim, f"resources/{rd}/{replica_node(sim, c)}", {"disk_state": "Outdated"})
    sim.cluster.core.patch_namespaced_persistent_volume_claim(
        c.metadata.name, NS, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
    wait_for(lambda: pvc_events(sim, c.metadata.name, "VolumeResizeFailed"), 90,
             "VolumeResizeFailed")
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 1
    exp = finding(res, "expansion")
    # LINSTOR's own words (CtrlVlmDfnModifyApiCallHandler), which the simulator now answers
    assert "VolumeResizeFailed" in exp["message"] and "non-UpToDate DRBD device" in \
        exp["message"], exp
    assert finding(res, "replica", "warn")["message"].endswith("is Outdated")


def test_doctor_snapshot_not_ready(sim: Kube) -> None:
    """Two snapshots of one claim: one whose LINSTOR snapshot failed (the driver reports it
    not ready, csi-snapshotter keeps polling), one whose class does not exist (the
    VolumeSnapshot's status.error)."""
    sc = storage_class(sim, _name("sc-vs"), {"placementCount": "1"})
    cls = _snapshot_class(sim)
    c = bound(sim, pvc(sim, _name("pvc-vs"), sc))
    rd = volume_id(sim, c)
    _sim(sim, "snapshot-failure", {"fail": True})
    failed, orphan = _name("snap"), _name("snap-nocls")
    for name, klass in ((failed, cls), (orphan, "no-such-class")):
        sim.cluster.custom.create_namespaced_custom_object(*SNAP, NS, "volumesnapshots", {
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name}, "spec": {"volumeSnapshotClassName": klass, "source": {
                "persistentVolumeClaimName": c.metadata.name}}})
    wait_for(lambda: [s for s in sim.linstor(f"/v1/resource-definitions/{rd}/snapshots")
                      if "FAILED_DEPLOYMENT" in (s.get("flags") or [])], 60,
             "the failed LINSTOR snapshot")
    wait_for(lambda: (sim.cluster.custom.get_namespaced_custom_object(
        *SNAP, NS, "volumesnapshots", orphan).get("status") or {}).get("error"), 60,
        "the VolumeSnapshot error of the missing class")
    code, res, text = doctor(sim, c.metadata.name)
    assert code == 1
    msgs = {f["subject"]: f for f in res["findings"] if f["check"] == "snapshot"}
    bad = msgs[f"volumesnapshot/{NS}/{failed}"]
    assert bad["level"] == "fail" and bad["message"].startswith(
        f"VolumeSnapshot {failed}: LINSTOR snapshot {rd}/snapshot-")
    assert bad["message"].endswith(" failed (FAILED_DEPLOYMENT)")
    assert bad["advice"].startswith("a satellite could not take it")
    nocls = msgs[f"volumesnapshot/{NS}/{orphan}"]
    assert nocls["level"] == "fail" and nocls["message"].startswith(
        f"VolumeSnapshot {orphan} is not ready: ") and "no-such-class" in nocls["message"]
    assert nocls["advice"] == "create the VolumeSnapshotClass (deploy/examples/snapshotclass.yaml)"
    assert f"FAIL  snapshot: VolumeSnapshot {failed}: LINSTOR snapshot" in text


def test_every_command_works_as_the_controller_pods_service_account(sim: Kube) -> None:
    """What `kubectl exec` into the controller pod runs as: the chart's ServiceAccount (its
    RBAC must let every check read what it needs) and LS_CONTROLLERS from the pod's env."""
    sa = sim.csi.work / "controller-sa.kubeconfig"
    sc = storage_class(sim, _name("sc-sa"), {"placementCount": "1"})
    c = bound(sim, pvc(sim, _name("pvc-sa"), sc))
    node = replica_node(sim, c)
    pod(sim, _name("app"), c.metadata.name, node=node)
    attached_va(sim, c.spec.volume_name)
    for cmd in (["status"], ["report"]):
        code, out, err = run(sim, *cmd, "--json", kubecfg=sa)
        assert code in (0, 1) and not err.strip(), (cmd, err)
        assert "not allowed" not in out
    code, out, err = run(sim, "doctor", c.metadata.name, "-n", NS, "--json", kubecfg=sa)
    res = json.loads(out)
    assert code == 0, res
    assert not [f for f in res["findings"] if "not allowed" in f["message"]]
    assert finding(res, "attach", "ok")["message"].startswith(f"attached to {node}")


# -- unreachable, and no secret printed ------------------------------------------------------------


def test_unreachable_linstor_and_kubernetes_exit_3_and_4_without_printing_secrets(
        sim: Kube, tmp_path: Path) -> None:
    dead_linstor = f"http://127.0.0.1:{free_port()}"
    token = "s3cr3t-" + _name("tok")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    code, out, err = run(sim, "status", "--bearer-token", str(token_file), linstor=dead_linstor)
    assert code == 3 and out == ""
    assert err.startswith("csi-linstor status: LINSTOR: no LINSTOR controller reachable "
                          f"({dead_linstor})"), err
    assert "connection refused" in err and "--linstor-endpoint" in err, err
    assert token not in err
    sc = storage_class(sim, _name("sc-un"), {"placementCount": "1"})
    claim = pvc(sim, _name("pvc-un"), sc)
    code, out, err = run(sim, "doctor", claim, "-n", NS, "--json", linstor=dead_linstor)
    res = json.loads(out)
    assert code == 3
    assert finding(res, "linstor")["message"].startswith("LINSTOR is unreachable: ")
    dead_kube = kubeconfig(tmp_path / "dead.kubeconfig", f"https://127.0.0.1:{free_port()}",
                           sim.cluster.pki / "ca.crt", token=token)
    for cmd in (["report"], ["doctor", claim], ["status", "--json"]):
        code, out, err = run(sim, *cmd, kubecfg=dead_kube)
        if cmd[0] == "status":  # Kubernetes is optional for status: noted, not fatal
            assert code == 0 and "Kubernetes not read" in json.loads(out)["note"]
            continue
        assert code == 4, (cmd, out, err)
        assert f"csi-linstor {cmd[0]}: Kubernetes: cannot reach the Kubernetes API at " \
               "https://127.0.0.1:" in err
        assert token not in out + err

"""Story 6: when something fails, the sidecar gets the gRPC code it acts on and a one-line message
a person can act on (also in the driver's log), and nothing is left half-created in LINSTOR and no
mount is left on the node."""

from __future__ import annotations

import copy
import socket

import grpc
import pytest

from tests.e2e.cluster import (
    Cluster,
    Provisioner,
    Story,
    Tracker,
    iter_lines,
    manifest,
    mounts_under,
    rpc_error,
)

Code = grpc.StatusCode
# kubelet and the sidecars treat these as "the operation may still be in progress" (they keep
# the volume in an uncertain state); a definite failure must not use them.
NON_FINAL = {Code.CANCELLED, Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED,
             Code.ABORTED}


def _claim(name: str, size: str = "1Gi") -> dict:
    return {"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


def _one_line(err: grpc.RpcError, *words: str) -> str:
    msg = err.details() or ""
    assert msg and "\n" not in msg and "Traceback" not in msg, repr(msg)
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return msg


def _new_rds(cluster: Cluster, before: dict) -> list[str]:
    return sorted(set(cluster.sim_state()["resource_definitions"])
                  - set(before["resource_definitions"]))


def test_missing_storage_pool(story: Story, cluster: Cluster) -> None:
    sc = copy.deepcopy(manifest("storageclass-r2.yaml", "StorageClass"))
    sc["parameters"]["linstor.csi.linbit.com/storagePool"] = "no-such-pool"
    before = cluster.sim_state()
    err = rpc_error(story.provisioner.create, sc, _claim("pool-typo"), selected_node="node-1")
    assert err.code() == Code.INVALID_ARGUMENT, err
    _one_line(err, "no-such-pool", "storagePool")
    assert _new_rds(cluster, before) == []
    log = cluster.proc("controller").log_text()
    assert any(iter_lines(log, "CreateVolume", "no-such-pool")), "the driver log must say it too"


def test_linstor_unreachable(story: Story, cluster: Cluster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    stubs = cluster.start_controller("controller-dead-linstor", f"http://127.0.0.1:{dead}",
                                     wait=True)
    sc = manifest("storageclass-r3.yaml", "StorageClass")
    prov = Provisioner(cluster, Tracker())
    req = prov.request(sc, _claim("no-linstor"), selected_node="node-1")
    err = rpc_error(stubs.controller.CreateVolume, req, timeout=60)
    assert err.code() == Code.UNAVAILABLE, err
    _one_line(err, "LINSTOR")
    log = cluster.proc("controller-dead-linstor").log_text()
    assert any(iter_lines(log, "CreateVolume", "UNAVAILABLE")), log[-2000:]
    cluster.proc("controller-dead-linstor").stop()




def _create_while_linstor_fails(story: Story, cluster: Cluster) -> grpc.RpcError:
    sc = manifest("storageclass-r3.yaml", "StorageClass")
    before = cluster.sim_state()
    cluster.admin("POST", "failure-rate", {"rate": 1.0, "route": "autoplace|spawn"})
    try:
        err = rpc_error(story.provisioner.create, sc, _claim("linstor-500"),
                        selected_node="node-1")
    finally:
        cluster.reset_faults()
    assert _new_rds(cluster, before) == [], "a failed create must leave no resource definition"
    # the provisioner retries the same request once LINSTOR works again: it succeeds
    vol = story.provisioner.create(sc, _claim("linstor-500"), selected_node="node-1")
    assert len(cluster.diskful(vol.volume_id)) == 3
    story.provisioner.delete(vol)
    return err


def test_linstor_failing_requests_leave_nothing(story: Story, cluster: Cluster) -> None:
    err = _create_while_linstor_fails(story, cluster)
    assert err.code() not in (Code.UNKNOWN, Code.OK), err
    _one_line(err, "LINSTOR")


def test_linstor_500_is_unavailable(story: Story, cluster: Cluster) -> None:
    err = _create_while_linstor_fails(story, cluster)
    assert err.code() == Code.UNAVAILABLE, err


@pytest.mark.parametrize("class_file", ["storageclass-r3.yaml", "storageclass-r2.yaml"])
def test_publish_to_a_node_without_satellite(story: Story, cluster: Cluster,
                                             class_file: str) -> None:
    sc = manifest(class_file, "StorageClass")
    vol = story.provisioner.create(sc, _claim("offline-target"), selected_node="node-1")
    replicas = cluster.replicas(vol.volume_id)
    diskful = cluster.diskful(vol.volume_id)
    # r3: the node holds a replica; r2: a node without one (it would get a diskless attachment)
    dead = "node-3" if class_file == "storageclass-r3.yaml" else \
        next(n for n in cluster.node_names if n not in diskful)
    cluster.set_online(dead, False)
    try:
        err = rpc_error(story.attacher.attach, vol, dead)
        # the attacher retries with backoff; the message must say which node and what to do
        assert err.code() in (Code.FAILED_PRECONDITION, Code.UNAVAILABLE), err
        _one_line(err, dead)
        assert cluster.replicas(vol.volume_id) == replicas or \
            {r["node_name"] for r in cluster.replicas(vol.volume_id)} == \
            {r["node_name"] for r in replicas}, "a failed attach must not leave a resource"
        # the node comes back: the retried attach succeeds, detach works
    finally:
        cluster.set_online(dead, True)
    story.attacher.attach(vol, dead)
    story.attacher.detach(vol, dead)

    # a node that does not exist at all: NOT_FOUND (CSI: "Node does not exist")
    err = rpc_error(story.attacher.attach, vol, "node-9")
    assert err.code() == Code.NOT_FOUND, err
    _one_line(err, "node-9")
    story.tracker.attachments.discard((vol.volume_id, "node-9"))
    story.attacher.detach(vol, "node-9")  # unknown node: already unpublished, OK
    story.provisioner.delete(vol)




def _bad_mount(story: Story, cluster: Cluster) -> grpc.RpcError:
    sc = copy.deepcopy(manifest("storageclass-r2.yaml", "StorageClass"))
    sc["parameters"]["linstor.csi.linbit.com/mountOpts"] = "no_such_mount_option"
    before = cluster.sim_state()
    vol = story.provisioner.create(sc, _claim("bad-mount"), selected_node="node-1")
    ctx = story.attacher.attach(vol, "node-1")
    kubelet = story.kubelets["node-1"]
    err = rpc_error(kubelet.stage, vol, ctx)
    assert not mounts_under(kubelet.root)
    # kubelet's retry loop keeps failing the same way; the user fixes the class and deletes
    # the claim: unstage (nothing staged: OK), detach, delete leave nothing behind
    kubelet.staged[vol.volume_id] = (vol, ctx)
    kubelet.unstage(vol)
    story.attacher.detach(vol, "node-1")
    story.provisioner.delete(vol)
    assert _new_rds(cluster, before) == []
    assert not mounts_under(kubelet.root)
    return err


def test_mount_error(story: Story, cluster: Cluster) -> None:
    err = _bad_mount(story, cluster)
    assert err.code() not in NON_FINAL | {Code.UNKNOWN, Code.OK}, err
    assert "no_such_mount_option" in err.details() and "mount" in err.details(), err.details()
    log = cluster.proc("node-1").log_text()
    assert any(iter_lines(log, "NodeStageVolume", "no_such_mount_option")), log[-2000:]


def test_mount_error_is_one_line(story: Story, cluster: Cluster) -> None:
    err = _bad_mount(story, cluster)
    _one_line(err, "no_such_mount_option")

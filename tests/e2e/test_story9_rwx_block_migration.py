"""Story 9 (issue 17): a KubeVirt VM's ReadWriteMany raw block disk live-migrates
(``kubevirt-rwx-block.yaml``). The source node has the disk open for writing (DRBD Primary, the
simulator sees the real open); the target node attaches and opens it too, which DRBD allows only
with two primaries; then the source lets go and the disk is back to one Primary. The story's
cleanup fails it if the disk was ever open on two nodes while DRBD would have refused that.

The KubeVirt pod check needs the Kubernetes API (tests/k8s/test_rwx_block.py runs it); here the
default controller has none and says so, and a controller with the check turned off migrates."""

from __future__ import annotations

import copy
import os
import random

import grpc

from csi_linstor._gen import csi_pb2
from tests.e2e.cluster import RPC_TIMEOUT, Cluster, Story, manifest, rpc_error

A, B, C = "node-1", "node-2", "node-3"
TWO = "DrbdOptions/Net/allow-two-primaries"


def _primary(cluster: Cluster, rd: str) -> list[str]:
    return sorted(r["node_name"] for r in cluster.replicas(rd)
                  if (r.get("state") or {}).get("in_use"))


def _two_primaries(cluster: Cluster, rd: str) -> bool:
    return (cluster.get(f"/v1/resource-definitions/{rd}").get("props") or {}).get(TWO) == "yes"


def test_live_migration_hands_the_disk_over_with_two_primaries(story: Story,
                                                               cluster: Cluster) -> None:
    sc = manifest("kubevirt-rwx-block.yaml", "StorageClass")
    pvc = copy.deepcopy(manifest("kubevirt-rwx-block.yaml", "PersistentVolumeClaim"))
    pvc["spec"]["resources"]["requests"]["storage"] = "1Gi"
    vol = story.provisioner.create(sc, pvc, selected_node=A)
    assert vol.capability.access_mode.mode == \
        csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
    vm_on_a, dev_a = story.run_pod(vol, A)

    err = rpc_error(story.attacher.attach, vol, B)  # no Kubernetes API: cannot check the pods
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--disable-rwx-block-validation" in (err.details() or "")
    migrator = cluster.start_controller("controller-rwx", cluster.url, wait=True,
                                        extra=("--disable-rwx-block-validation",))

    def attach(node: str) -> dict[str, str]:
        reply = migrator.controller.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(
                volume_id=vol.volume_id, node_id=node, volume_capability=vol.capability,
                volume_context=vol.volume_context), timeout=RPC_TIMEOUT)
        story.tracker.attachments.add((vol.volume_id, node))
        return dict(reply.publish_context)

    before = random.Random(9).randbytes(1024 * 1024)
    during = random.Random(10).randbytes(1024 * 1024)
    with open(dev_a, "r+b") as fa:  # the VM runs on A
        fa.write(before)
        fa.flush()
        os.fsync(fa.fileno())
        assert _primary(cluster, vol.volume_id) == [A]
        vm_on_b, dev_b = story.kubelets[B].mount(vol, attach(B))  # the migration target
        assert _two_primaries(cluster, vol.volume_id)
        with open(dev_b, "r+b") as fb:  # the target opens the disk while A still has it
            assert _primary(cluster, vol.volume_id) == [A, B]
            assert fb.read(len(before)) == before
            err = rpc_error(attach, C)  # never a third node
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert A in (err.details() or "") and B in (err.details() or "")
            fb.seek(4 * 1024 * 1024)
            fb.write(during)  # the VM resumes on B
            fb.flush()
            os.fsync(fb.fileno())
    story.delete_pod(vol, A, vm_on_a)  # the source pod ends: one Primary again
    assert not _two_primaries(cluster, vol.volume_id)
    with open(dev_b, "rb") as fb:
        fb.seek(4 * 1024 * 1024)
        assert fb.read(len(during)) == during
    story.delete_pod(vol, B, vm_on_b)
    story.provisioner.delete(vol)
    assert cluster.replicas(vol.volume_id) == []

"""Story 2: a pod writes to its claim (``app-with-ha-storage.yaml``) on node A; A is drained, or
dies; the replacement pod on node B reads back every byte written on A."""

from __future__ import annotations

import copy
import hashlib
import os
import random

from tests.e2e.cluster import (
    Cluster,
    Story,
    checksums,
    force_unmount_all,
    manifest,
    mounts_under,
    write_files,
)

A, B = "node-1", "node-2"


def _start_app(story: Story) -> tuple:
    sc = manifest("storageclass-r3.yaml", "StorageClass")
    pvc = manifest("app-with-ha-storage.yaml", "PersistentVolumeClaim")
    pod = manifest("app-with-ha-storage.yaml", "Pod")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == \
        pvc["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == sc["metadata"]["name"]
    vol = story.provisioner.create(sc, pvc, selected_node=A)
    pod_uid, target = story.run_pod(vol, A)
    (target / "log.txt").write_text("started on node-1\n")
    sums = write_files(target, "on-a", count=6)
    sums.update(checksums(target, ["log.txt"]))
    stats = story.kubelets[A].stats(vol, pod_uid)
    assert not stats.volume_condition.abnormal, stats.volume_condition.message
    assert stats.usage and stats.usage[0].used > 6 * 256 * 1024
    return vol, pod_uid, target, sums


def _primary(cluster: Cluster, rd: str) -> list[str]:
    """Nodes LINSTOR reports the volume in use on: DRBD auto-promotes the node whose kubelet
    mounted or opened the device for writing (the simulator sees the real mounts and opens)."""
    return sorted(r["node_name"] for r in cluster.replicas(rd)
                  if (r.get("state") or {}).get("in_use"))


def _may_promote(cluster: Cluster, rd: str, node: str) -> bool:
    (res,) = [r for r in cluster.replicas(rd) if r["node_name"] == node]
    return bool(res["layer_object"]["drbd"].get("may_promote"))


def _read_on_b(story: Story, vol, sums: dict[str, str]) -> None:
    pod_b, target_b = story.run_pod(vol, B)
    assert checksums(target_b, sums) == sums, "data written on node A differs on node B"
    story.delete_pod(vol, B, pod_b)


def test_drain_moves_the_pod_and_its_data(story: Story, cluster: Cluster) -> None:
    vol, pod_uid, target, sums = _start_app(story)
    # the pod's mount on A made A Primary: B cannot be promoted until A lets go
    assert _primary(cluster, vol.volume_id) == [A]
    assert not _may_promote(cluster, vol.volume_id, B)
    # kubectl drain A: the pod is deleted, kubelet unmounts, the attacher detaches
    story.delete_pod(vol, A, pod_uid)
    assert not mounts_under(story.kubelets[A].root)
    assert _primary(cluster, vol.volume_id) == []
    assert _may_promote(cluster, vol.volume_id, B)
    _read_on_b(story, vol, sums)
    story.provisioner.delete(vol)  # reclaimPolicy Retain: the admin deletes the PV by hand
    assert cluster.replicas(vol.volume_id) == []


def test_node_failure_force_detach_and_failover(story: Story, cluster: Cluster) -> None:
    vol, pod_uid, target, sums = _start_app(story)
    # A dies: no kubelet cleanup there. After the out-of-service taint (or the 6 minute
    # force-detach timeout) the attacher calls ControllerUnpublish for A. The spec: when the
    # volume can be regarded as unpublished from the node the plugin SHOULD answer OK, and the
    # attacher removes the VolumeAttachment only on OK; A holds a diskful replica, nothing
    # needs undoing on A's side for B to take over.
    cluster.set_online(A, False)
    # All "machines" share this kernel: A's machine powering off takes its mounts with it.
    # (Left mounted, A's mounts would be seen by node B's process, which shares the kernel.)
    gone = force_unmount_all(story.kubelets[A].root)
    assert len(gone) == 2, gone  # the staging mount and the pod's bind mount
    try:
        story.attacher.detach(vol, A)
        _read_on_b(story, vol, sums)
    finally:
        cluster.set_online(A, True)
    # A reboots: its kubelet cleans up the orphaned pod (paths no longer mounted: OK)
    story.kubelets[A].unmount(vol, pod_uid)
    assert not mounts_under(story.kubelets[A].root)
    story.provisioner.delete(vol)
    assert cluster.replicas(vol.volume_id) == []


def test_block_volume_moves_with_its_bytes(story: Story, cluster: Cluster) -> None:
    """The same story for ``volumeMode: Block``: raw bytes written on A read back on B."""
    sc = manifest("storageclass-r3.yaml", "StorageClass")
    pvc = copy.deepcopy(manifest("app-with-ha-storage.yaml", "PersistentVolumeClaim"))
    pvc["spec"]["volumeMode"] = "Block"
    vol = story.provisioner.create(sc, pvc, selected_node=A)
    pod, dev = story.run_pod(vol, A)
    payload = random.Random(7).randbytes(3 * 1024 * 1024 + 512)
    with open(dev, "r+b") as f:
        assert _primary(cluster, vol.volume_id) == [A], "a write open promotes A"
        f.seek(5 * 1024 * 1024)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    assert _primary(cluster, vol.volume_id) == []
    story.delete_pod(vol, A, pod)
    pod_b, dev_b = story.run_pod(vol, B)
    with open(dev_b, "rb") as f:
        f.seek(5 * 1024 * 1024)
        assert hashlib.sha256(f.read(len(payload))).digest() == hashlib.sha256(payload).digest()
    story.delete_pod(vol, B, pod_b)
    story.provisioner.delete(vol)

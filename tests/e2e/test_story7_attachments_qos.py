"""Story 7 (issue 17): attachments the driver records in LINSTOR.

- A node may hold ``--max-volumes-per-node`` of the driver's volumes; the next attach is refused
  with RESOURCE_EXHAUSTED naming the node and the limit, and succeeds once a volume is detached.
- ``pvc-readonly-many.yaml``: a ReadOnlyMany copy of a snapshot is attached read-only to two
  nodes; both are reported as published nodes, a read-write attach to one of them is refused as
  incompatible, and the pod reads the snapshot's data through a read-only mount.
- ``storageclass-qos.yaml``: the class's IO limits reach the VolumeAttachment metadata with
  LINBIT's keys (what nri-volume-qos reads), with the device the pod's node uses.
"""

from __future__ import annotations

import copy

import grpc

from csi_linstor._gen import csi_pb2
from tests.e2e.cluster import (
    RPC_TIMEOUT,
    Cluster,
    Story,
    checksums,
    manifest,
    quantity,
    rpc_error,
    sync_fs,
    write_files,
)


def _claim(name: str, sc: dict) -> dict:
    return {"metadata": {"name": name},
            "spec": {"storageClassName": sc["metadata"]["name"], "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def _published(story: Story, volume_id: str) -> list[str]:
    got = story.attacher.stub.ControllerGetVolume(
        csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id), timeout=RPC_TIMEOUT)
    return sorted(got.status.published_node_ids)


def test_attach_limit_per_node(story: Story, cluster: Cluster) -> None:
    sc = manifest("storageclass-r2.yaml", "StorageClass")
    limited = cluster.start_controller("controller-limit2", cluster.url, wait=True,
                                       extra=("--max-volumes-per-node", "2"))
    vols = [story.provisioner.create(sc, _claim(f"limit-{i}", sc), selected_node="node-1")
            for i in range(3)]

    def attach(vol):
        reply = limited.controller.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(
                volume_id=vol.volume_id, node_id="node-3", volume_capability=vol.capability,
                volume_context=vol.volume_context), timeout=RPC_TIMEOUT)
        story.tracker.attachments.add((vol.volume_id, "node-3"))
        return reply

    attach(vols[0])
    attach(vols[1])
    attach(vols[0])  # the attacher retries an attach it already made: still fine
    err = rpc_error(attach, vols[2])
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "node-3" in err.details() and "limit is 2" in err.details(), err.details()
    assert _published(story, vols[2].volume_id) == []
    story.attacher.detach(vols[1], "node-3")
    attach(vols[2])
    assert _published(story, vols[2].volume_id) == ["node-3"]
    for vol in vols:
        story.attacher.detach(vol, "node-3")
        story.provisioner.delete(vol)


def test_readonly_many_copy_of_a_snapshot(story: Story, cluster: Cluster) -> None:
    sc = manifest("storageclass-r3.yaml", "StorageClass")
    pvc = manifest("app-with-ha-storage.yaml", "PersistentVolumeClaim")
    snapclass = manifest("snapshotclass.yaml", "VolumeSnapshotClass")
    vs = manifest("snapshot.yaml", "VolumeSnapshot")
    rox = manifest("pvc-readonly-many.yaml", "PersistentVolumeClaim")
    readers = manifest("pvc-readonly-many.yaml", "Deployment")["spec"]["template"]["spec"]
    assert rox["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert rox["spec"]["dataSource"]["name"] == vs["metadata"]["name"]
    assert readers["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True

    src = story.provisioner.create(sc, pvc, selected_node="node-1")
    pod, target = story.run_pod(src, "node-1")
    data = write_files(target, "shared", count=3)
    sync_fs(target)
    snap = story.snapshotter.create(src, snapclass, vs["metadata"]["name"])
    story.delete_pod(src, "node-1", pod)

    copy_ = story.provisioner.create(sc, rox, selected_node="node-2", snapshot=snap)
    assert copy_.capability.access_mode.mode == \
        csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY
    assert copy_.capacity_bytes >= quantity(rox["spec"]["resources"]["requests"]["storage"])

    def attach(node: str, readonly: bool) -> dict[str, str]:
        reply = story.attacher.stub.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(
                volume_id=copy_.volume_id, node_id=node, volume_capability=copy_.capability,
                readonly=readonly, volume_context=copy_.volume_context), timeout=RPC_TIMEOUT)
        story.tracker.attachments.add((copy_.volume_id, node))
        return dict(reply.publish_context)

    ctx = attach("node-2", True)
    attach("node-3", True)
    assert _published(story, copy_.volume_id) == ["node-2", "node-3"]
    listed = {e.volume.volume_id: sorted(e.status.published_node_ids) for e in
              story.attacher.stub.ListVolumes(csi_pb2.ListVolumesRequest(),
                                              timeout=RPC_TIMEOUT).entries}
    assert listed[copy_.volume_id] == ["node-2", "node-3"]
    err = rpc_error(attach, "node-2", False)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err
    assert "read-only" in err.details(), err.details()

    kubelet = story.kubelets["node-2"]
    _uid, mounted = kubelet.mount(copy_, ctx)
    assert checksums(mounted, data) == data
    try:
        (mounted / "new.txt").write_text("x")
        raise AssertionError("a read-only volume accepted a write")
    except OSError:
        pass
    story.kubelets["node-2"].cleanup()
    for node in ("node-2", "node-3"):
        story.attacher.detach(copy_, node)
    assert _published(story, copy_.volume_id) == []
    story.snapshotter.delete(snap)
    story.provisioner.delete(copy_)
    story.provisioner.delete(src)


def test_qos_limits_reach_the_volume_attachment(story: Story, cluster: Cluster) -> None:
    sc = manifest("storageclass-qos.yaml", "StorageClass")
    params = sc["parameters"]
    vol = story.provisioner.create(sc, _claim("qos-claim", sc), selected_node="node-2")
    rd = cluster.get(f"/v1/resource-definitions/{vol.volume_id}")
    for key in ("rbps", "wbps", "riops", "wiops"):
        want = str(quantity(params[f"qos.linbit.com/{key}"]))
        assert rd["props"][f"Aux/qos.linbit.com/{key}"] == want
    # the external-attacher copies the publish context into VolumeAttachment.status
    # .attachmentMetadata, where nri-volume-qos finds the device and its limits
    metadata = story.attacher.attach(vol, "node-2")
    assert metadata["qos.linbit.com/device"] == metadata["linstor.csi.linbit.com/device-path"]
    assert metadata["qos.linbit.com/rbps"] == str(100 * 1024**2)
    assert metadata["qos.linbit.com/wiops"] == "1000"
    pod, target = story.kubelets["node-2"].mount(vol, metadata)
    sums = write_files(target, "limited", count=2)
    assert checksums(target, sums) == sums
    story.delete_pod(vol, "node-2", pod)
    bad = copy.deepcopy(sc)
    bad["parameters"]["qos.linbit.com/wbps"] = "fast"
    err = rpc_error(story.provisioner.create, bad, _claim("qos-bad", bad), selected_node="node-1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "qos.linbit.com/wbps" in \
        err.details(), err
    story.provisioner.delete(vol)

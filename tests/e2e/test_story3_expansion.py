"""Story 3: the claim is edited from 1Gi to 2Gi while its pod runs; the LINSTOR volume grows,
then the filesystem inside the pod (``df -h /data`` shows about 2G) without a restart."""

from __future__ import annotations

import copy

import grpc
import pytest

from tests.e2e.cluster import (
    Cluster,
    GiB,
    Story,
    checksums,
    fs_size,
    manifest,
    quantity,
    rpc_error,
    write_files,
)

NODE = "node-1"
CAP_SYS_RESOURCE = 24


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status", encoding="ascii") as f:
        eff = next(line for line in f if line.startswith("CapEff:")).split()[1]
    return bool(int(eff, 16) >> CAP_SYS_RESOURCE & 1)


def _class(fstype: str) -> dict:
    sc = copy.deepcopy(manifest("storageclass-r2.yaml", "StorageClass"))
    assert sc["allowVolumeExpansion"] is True
    sc["parameters"]["csi.storage.k8s.io/fstype"] = fstype
    return sc


@pytest.mark.parametrize("fstype", ["xfs", "ext4"])
def test_online_expansion(story: Story, cluster: Cluster, fstype: str) -> None:
    sc = _class(fstype)
    pvc = copy.deepcopy(manifest("app-with-ha-storage.yaml", "PersistentVolumeClaim"))
    old = quantity(pvc["spec"]["resources"]["requests"]["storage"])
    assert old == 1 * GiB
    vol = story.provisioner.create(sc, pvc, selected_node=NODE)
    pod, target = story.run_pod(vol, NODE)
    before = fs_size(target)
    assert 0.85 * old < before <= old
    sums = write_files(target, "before-resize", count=3)

    # the user edits the claim to 2Gi: external-resizer, then kubelet
    new = 2 * GiB
    reply = story.resizer.expand(vol, new)
    assert reply.capacity_bytes >= new
    assert reply.node_expansion_required, "a filesystem volume needs NodeExpandVolume"
    vd = cluster.get(f"/v1/resource-definitions/{vol.volume_id}/volume-definitions")
    assert vd[0]["size_kib"] * 1024 >= new, vd

    kubelet = story.kubelets[NODE]
    online = fstype == "xfs" or _has_cap_sys_resource()
    if online:
        grown = kubelet.expand(vol, pod, new)
        assert grown.capacity_bytes == 0 or grown.capacity_bytes >= new
    else:
        err = rpc_error(kubelet.expand, vol, pod, new)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        assert "CAP_SYS_RESOURCE" in err.details() and "\n" not in err.details(), err.details()
        assert fs_size(target) == before, "a refused online grow must not change the filesystem"
        # the offline path: the pod restarts, the volume is staged again and grows at stage
        kubelet.unmount(vol, pod)
        story.attacher.detach(vol, NODE)
        pod, target = story.run_pod(vol, NODE)
    after = fs_size(target)
    assert after > 0.9 * new, f"{fstype}: df shows {after} bytes after growing to {new}"
    stats = kubelet.stats(vol, pod)
    assert stats.usage[0].total == after
    assert checksums(target, sums) == sums
    write_files(target, "after-resize", count=2, size=1024 * 1024)

    story.delete_pod(vol, NODE, pod)
    story.provisioner.delete(vol)

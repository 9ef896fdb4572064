"""Story 4: ``snapshotclass.yaml`` + ``snapshot.yaml`` give a ready snapshot;
``pvc-restore-from-snapshot.yaml`` gives a new volume, mounted on another node, holding the data
written before the snapshot and none written after."""

from __future__ import annotations

import copy

import pytest

from tests.e2e.cluster import (
    Cluster,
    Story,
    checksums,
    manifest,
    quantity,
    sync_fs,
    write_files,
)

SOURCE_NODE, RESTORE_NODE = "node-1", "node-3"


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_snapshot_and_restore_on_another_node(story: Story, cluster: Cluster,
                                              fstype: str) -> None:
    sc = copy.deepcopy(manifest("storageclass-r3.yaml", "StorageClass"))
    sc["parameters"]["csi.storage.k8s.io/fstype"] = fstype
    pvc = manifest("app-with-ha-storage.yaml", "PersistentVolumeClaim")
    snapclass = manifest("snapshotclass.yaml", "VolumeSnapshotClass")
    vs = manifest("snapshot.yaml", "VolumeSnapshot")
    restore = manifest("pvc-restore-from-snapshot.yaml", "PersistentVolumeClaim")
    assert snapclass["driver"] == "linstor.csi.linbit.com"
    assert vs["spec"]["source"]["persistentVolumeClaimName"] == pvc["metadata"]["name"]
    assert vs["spec"]["volumeSnapshotClassName"] == snapclass["metadata"]["name"]
    assert restore["spec"]["dataSource"]["name"] == vs["metadata"]["name"]
    assert restore["spec"]["storageClassName"] == sc["metadata"]["name"]

    vol = story.provisioner.create(sc, pvc, selected_node=SOURCE_NODE)
    pod, target = story.run_pod(vol, SOURCE_NODE)
    before = write_files(target, "before", count=4)
    sync_fs(target)

    snap = story.snapshotter.create(vol, snapclass, vs["metadata"]["name"])
    assert snap.source_volume_id == vol.volume_id
    assert snap.size_bytes >= quantity(pvc["spec"]["resources"]["requests"]["storage"])
    snaps = cluster.sim_state()["snapshots"]
    assert any(s.startswith(vol.volume_id + "/") for s in snaps), snaps

    after = write_files(target, "after", count=3)
    (target / "before-0.bin").write_bytes(b"overwritten after the snapshot")
    sync_fs(target)
    # The source pod goes away before the restored copy is mounted: every "node" here shares
    # one kernel, and xfs refuses a second mount of the same filesystem UUID.
    story.delete_pod(vol, SOURCE_NODE, pod)

    restored = story.provisioner.create(sc, restore, selected_node=RESTORE_NODE, snapshot=snap)
    assert restored.volume_id != vol.volume_id
    assert restored.capacity_bytes >= quantity(restore["spec"]["resources"]["requests"]["storage"])
    pod2, target2 = story.run_pod(restored, RESTORE_NODE)
    assert checksums(target2, before) == before, "the restored volume lost pre-snapshot data"
    leaked = [name for name in after if (target2 / name).exists()]
    assert not leaked, f"data written after the snapshot is in the restored volume: {leaked}"
    write_files(target2, "restored-writable", count=1)
    story.delete_pod(restored, RESTORE_NODE, pod2)

    # Deleting in the order users do: the restored claim, the source claim (its snapshot still
    # exists), then the snapshot: nothing may stay behind in LINSTOR.
    story.provisioner.delete(restored)
    story.provisioner.delete(vol)
    story.snapshotter.delete(snap)
    state = cluster.sim_state()
    assert not any(vol.volume_id in x or restored.volume_id in x
                   for x in state["resource_definitions"] + state["snapshots"]), state

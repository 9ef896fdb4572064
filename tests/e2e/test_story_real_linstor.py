"""Stories 1, 3 and 4 on real LINSTOR 1.33.3: one node, the storage layer (no DRBD module here).

The other stories drive a three-node simulator cluster: failover, diskless attach on a node
without a replica, quorum and in-use need DRBD and several nodes, and the failure stories need
the simulator's fault knobs; they stay there. What needs neither runs here against the real
controller and satellite (tests/real_linstor.py): the example StorageClass adapted to the one
node (``placementCount: 1``, ``layerList: storage``, the reflink pool), a pod writing files,
online expansion, a snapshot, a restore of it (into a larger claim) mounted with the data, and
deletion in the order users do it, leaving LINSTOR empty. The controller and node plugin are
real driver processes; kubelet, the attacher, resizer and snapshotter are played as in the other
stories, and the volume is the loop device the satellite attached.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.co_retry import CoRetry
from tests.e2e.cluster import (
    Cluster,
    GiB,
    Story,
    Stubs,
    _driver_cmd,
    checksums,
    force_unmount_all,
    fs_size,
    manifest,
    mounts_under,
    sync_fs,
    write_files,
)
from tests.real_linstor import NODE, XFS_POOL, RealLinstor


class RealCluster(Cluster):
    """A controller and a node process of the driver on the session's real LINSTOR."""

    # the driver's default: a LINSTOR request may take the RPC's whole deadline. Real LINSTOR
    # on a busy 2-core machine answered a spawn after more than 10 s (CI, stop 24), and a
    # request cut short there leaves the CO to retry what LINSTOR may still be doing
    linstor_timeout = "60"

    def __init__(self, tmp: Path, real: RealLinstor) -> None:
        super().__init__(tmp, nodes=1)
        self.real = real
        self.node_names = [NODE]
        self.retried: list[str] = []

    def start(self) -> None:
        self.url = self.real.url
        self.controller = self.start_controller("controller", self.url)
        # the sidecars send an RPC that ran out of its deadline again (tests/co_retry.py)
        self.controller.controller = CoRetry(self.controller.controller, self.retried)
        self.nodes[NODE] = self._start_real_node()
        for stubs in [self.controller, *self.nodes.values()]:
            stubs.wait_ready()

    def _start_real_node(self) -> Stubs:
        sock = self.tmp / f"{NODE}.sock"
        self._spawn(NODE, _driver_cmd(
            "serve", "--mode", "node", "--node", NODE, "--linstor-endpoint", self.url,
            "--csi-endpoint", f"unix://{sock}", "--kubelet-dir", str(self.kubelet_root / NODE),
            "--log-level", "debug"))
        stubs = Stubs(sock)
        self._stubs.append(stubs)
        return stubs

    def sim_state(self) -> dict[str, list[str]]:
        """What the simulator's admin API reports, read from LINSTOR's REST API."""
        return {"resource_definitions": self.real.rds(), "snapshots": self.real.snapshots()}

    def reset_faults(self) -> None:
        """Real LINSTOR has no fault knobs."""


@pytest.fixture(scope="module")
def real_cluster(real_linstor_session: RealLinstor) -> Iterator[RealCluster]:
    tmp = Path(tempfile.mkdtemp(prefix="csi-e2e-real-"))
    real_linstor_session.reset()
    c = RealCluster(tmp, real_linstor_session)
    try:
        c.start()
        yield c
    finally:
        forced = force_unmount_all(tmp)
        codes = c.stop()
        logs = {p.name: p.log_text() for p in c.procs}
        left = real_linstor_session.leftovers()
        real_linstor_session.reset()
        if not (forced or left):
            shutil.rmtree(tmp, ignore_errors=True)
    if c.retried:
        warnings.warn(f"retried as the CO would after DEADLINE_EXCEEDED on real LINSTOR: "
                      f"{c.retried}", stacklevel=1)
    problems = []
    if forced:
        problems.append(f"mounts left at teardown: {forced}")
    if left:
        problems.append(f"left in real LINSTOR: {left}")
    bad_exit = {n: rc for n, rc in codes.items() if rc not in (0, -15)}
    if bad_exit:
        problems.append(f"processes did not stop cleanly on SIGTERM: {bad_exit}")
    tracebacks = [n for n, t in logs.items() if "Traceback" in t]
    if tracebacks:
        problems.append(f"tracebacks in driver logs: {tracebacks} (logs in {tmp})")
    assert not problems, "\n".join(problems)


@pytest.fixture
def story(real_cluster: RealCluster) -> Iterator[Story]:
    s = Story.on(real_cluster)
    try:
        yield s
    finally:
        problems = s.cleanup()
        left = real_cluster.real.leftovers()
        if left:
            problems.append(f"left in LINSTOR after the driver's own cleanup: {left}")
            real_cluster.real.reset()
        mounts = mounts_under(real_cluster.kubelet_root)
        if mounts:
            problems.append(f"mounts left: {mounts}")
            force_unmount_all(real_cluster.kubelet_root)
    assert not problems, "test did not clean up:\n" + "\n".join(problems)


def _one_node_class(fstype: str) -> dict[str, Any]:
    """The example class with expansion, on the one storage-layer node."""
    sc = copy.deepcopy(manifest("storageclass-r2.yaml", "StorageClass"))
    assert sc["allowVolumeExpansion"] is True
    p = sc["parameters"]
    for key in list(p):
        if key.endswith(("placementCount", "storagePool", "layerList", "autoPlace")):
            del p[key]
    p.update({"linstor.csi.linbit.com/placementCount": "1",
              "linstor.csi.linbit.com/storagePool": XFS_POOL,
              "linstor.csi.linbit.com/layerList": "storage",
              "csi.storage.k8s.io/fstype": fstype})
    return sc


@pytest.mark.parametrize("fstype", ["xfs", "ext4"])
def test_provision_grow_snapshot_restore_on_real_linstor(story: Story, real_cluster: RealCluster,
                                                         fstype: str) -> None:
    sc = _one_node_class(fstype)
    pvc = copy.deepcopy(manifest("app-with-ha-storage.yaml", "PersistentVolumeClaim"))
    snapclass = manifest("snapshotclass.yaml", "VolumeSnapshotClass")
    restore = copy.deepcopy(manifest("pvc-restore-from-snapshot.yaml", "PersistentVolumeClaim"))

    # story 1: the claim is provisioned, a pod writes
    vol = story.provisioner.create(sc, pvc, selected_node=NODE)
    assert real_cluster.diskful(vol.volume_id) == {NODE: [XFS_POOL]}
    pod, target = story.run_pod(vol, NODE)
    before = write_files(target, "before", count=3)
    sync_fs(target)

    # story 3: the claim grows to 2Gi while the pod runs
    reply = story.resizer.expand(vol, 2 * GiB)
    assert reply.capacity_bytes >= 2 * GiB and reply.node_expansion_required
    kubelet = story.kubelets[NODE]
    if fstype == "xfs":  # ext4 grows online only with CAP_SYS_RESOURCE (story 3 covers both)
        kubelet.expand(vol, pod, 2 * GiB)
        assert fs_size(target) > 0.9 * 2 * GiB

    # story 4: a snapshot; what is written afterwards is not in the restored copy
    snap = story.snapshotter.create(vol, snapclass, "snapshot-real")
    assert snap.source_volume_id == vol.volume_id  # the snapshotter waited for ready_to_use
    after = write_files(target, "after", count=2)
    (target / "before-0.bin").write_bytes(b"overwritten after the snapshot")
    sync_fs(target)
    story.delete_pod(vol, NODE, pod)  # one kernel: xfs refuses the same UUID mounted twice

    restore["spec"]["resources"]["requests"]["storage"] = "3Gi"  # larger than the snapshot
    restored = story.provisioner.create(sc, restore, selected_node=NODE, snapshot=snap)
    assert restored.capacity_bytes >= 3 * GiB
    pod2, target2 = story.run_pod(restored, NODE)
    assert checksums(target2, before) == before, "the restored volume lost pre-snapshot data"
    assert not [n for n in after if (target2 / n).exists()], "post-snapshot data restored"
    assert fs_size(target2) > 0.9 * 3 * GiB, "the restored filesystem was not grown at stage"
    write_files(target2, "restored-writable", count=1)
    story.delete_pod(restored, NODE, pod2)

    story.provisioner.delete(restored)
    story.provisioner.delete(vol)
    story.snapshotter.delete(snap)
    assert real_cluster.real.leftovers() == []

"""Fixtures: a module-scoped cluster of driver processes, a per-test story that cleans up after
itself (through the driver first, like the CO; by force only as a fallback) and leak checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi_linstor.sim.devices import leftover_loop_devices
from tests.contract.replies import reply_violations
from tests.contract.schema import spec_available
from tests.e2e.cluster import Cluster, Story, force_unmount_all, mounts_under
from tests.prerequisites import require

NEEDED = ("losetup", "mkfs.ext4", "mkfs.xfs", "blkid", "mount", "umount", "resize2fs",
          "xfs_growfs")

require(os.geteuid() == 0, "e2e stories need root (loop devices and mounts)")
_missing = [t for t in NEEDED if shutil.which(t) is None]
require(not _missing, f"e2e stories need {', '.join(_missing)}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # A short base path: unix socket paths are limited to 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="csi-e2e-"))
    c = Cluster(tmp)
    try:
        c.start()
        yield c
    finally:
        forced = force_unmount_all(tmp)
        alive = bool(c.url) and c.proc("sim").popen.poll() is None
        state = c.sim_state() if alive else None
        replies = c.sim_replies() if alive else []
        codes = c.stop()
        loops = leftover_loop_devices(c.state_dir)
        nodes = sorted(p.name for p in c.device_dir.glob("drbd*")) if c.device_dir.exists() \
            else []
        logs = {p.name: p.log_text() for p in c.procs}
        if not (forced or loops or nodes or (state and any(state.values()))):
            shutil.rmtree(tmp, ignore_errors=True)
    problems = []
    if forced:
        problems.append(f"mounts left at teardown: {forced}")
    if state and any(state.values()):
        problems.append(f"LINSTOR objects leaked: {state}")
    if loops:
        problems.append(f"loop devices left: {loops}")
    if nodes:
        problems.append(f"device nodes left in {c.device_dir}: {nodes}")
    bad_exit = {n: rc for n, rc in codes.items() if rc not in (0, -15)}
    if bad_exit:
        problems.append(f"processes did not stop cleanly on SIGTERM: {bad_exit}")
    tracebacks = {n: t for n, t in logs.items() if "Traceback" in t}
    if tracebacks:
        problems.append("tracebacks in driver logs: " + ", ".join(tracebacks)
                        + f" (logs in {tmp})")
    if replies and spec_available():
        _checked, bad = reply_violations(replies)
        problems += [f"LINSTOR reply off the OpenAPI spec: {line}" for line in bad[:20]]
    assert not problems, "\n".join(problems)


@pytest.fixture
def story(cluster: Cluster) -> Iterator[Story]:
    """The CO roles on the cluster; afterwards: everything undone, nothing leaked, no mount."""
    before = cluster.sim_state()
    opens_before = len(cluster.double_opens())
    s = Story.on(cluster)
    try:
        yield s
    finally:
        cluster.reset_faults()
        problems = s.cleanup()
        doubles = cluster.double_opens()[opens_before:]
        if doubles:
            problems.append("a volume was open for writing on two nodes at once, which DRBD "
                            f"refuses (the old node had not released it): {doubles}")
        after = cluster.sim_state()
        leaked = {k: sorted(set(after[k]) - set(before[k])) for k in after}
        if any(leaked.values()):
            problems.append(f"left in LINSTOR after the driver's own cleanup: {leaked}")
            cluster.purge()
        left = mounts_under(cluster.kubelet_root)
        if left:
            problems.append(f"mounts left: {left}")
            force_unmount_all(cluster.kubelet_root)
    assert not problems, "test did not clean up:\n" + "\n".join(problems)

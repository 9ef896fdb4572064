"""A mkfs or mount that a SIGKILLed driver left running is known to the next driver process.

The node runs mkfs (and fsck, resize2fs, mount) in its own session, so killing the driver does
not kill it. Before the per-device and per-mount-point locks (nodeops/oplock.py), the restarted
driver knew nothing of it: the retried NodeStageVolume probed the device the orphan was about to
format, found it empty and ran a second mkfs; the orphan itself died of SIGPIPE at its first line
of output (its pipes belonged to the dead driver), leaving a half-made filesystem; a retried
NodePublishVolume bind-mounted the target a second time under the orphaned `mount --bind`.
Real processes, real loop devices, a real SIGKILL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.prerequisites import require
from tests.reliability.engine import Env, in_flight
from tests.reliability.scenarios import read_data, write_data

require(os.geteuid() == 0, "orphaned node operation tests need root (loop devices, mounts)")

C = grpc.StatusCode
STALL = 8.0  # the stand-in sleeps this long before it runs the real tool


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("orphan"))
    try:
        env.driver.start()
        yield env
    finally:
        env.close()


def _kill_during(env: Env, call: object, marker: object) -> None:
    """Start ``call`` in flight, SIGKILL the driver once the stand-in runs, restart it."""
    with in_flight(lambda: call(60.0)):  # type: ignore[operator]
        end = time.monotonic() + 30
        while not marker.exists():  # type: ignore[attr-defined]
            assert time.monotonic() < end, "the stalled command never started"
            time.sleep(0.01)
        env.driver.kill()
    env.driver.start()


def _orphan(env: Env, tool: str) -> tuple[str, float, float | None, str]:
    running = [r for r in env.calls(tool).runs if r[2] is None]
    assert len(running) == 1, env.calls(tool).runs
    assert env._alive(running[0][0]), "the orphaned command died with the driver"
    return running[0]


def test_a_retried_stage_waits_for_the_mkfs_a_killed_driver_left_running(env: Env) -> None:
    vol = env.create("pvc-orphan-mkfs")
    env.cpublish(vol)
    env.paths(vol)
    assert vol.staging is not None
    req = env.stage_req(vol)
    marker = env.stall("mkfs.ext4", "main", STALL)
    _kill_during(env, lambda t: env.driver.node.NodeStageVolume(req, timeout=t), marker)
    pid = _orphan(env, "mkfs.ext4")[0]

    # The retry must not touch the device while it runs: it waits half its deadline, then
    # answers DEADLINE_EXCEEDED naming the orphan.
    with pytest.raises(grpc.RpcError) as ei:
        env.driver.node.NodeStageVolume(req, timeout=4.0)
    assert ei.value.code() == C.DEADLINE_EXCEEDED, ei.value
    assert "mkfs.ext4" in ei.value.details() and f"pid {pid}" in ei.value.details(), ei.value
    assert len(env.calls("mkfs.ext4").runs) == 1, "a second mkfs ran beside the orphaned one"
    assert env.mounts() == [], "the device was mounted while mkfs was still writing it"

    env.wait_tools_idle()
    runs = env.calls("mkfs.ext4").runs
    assert len(runs) == 1 and runs[0][2] is not None
    log = (env.ctl_dir / "calls-mkfs.ext4").read_text()
    assert "rc=0" in log, f"the orphaned mkfs did not finish (SIGPIPE is rc=141): {log}"

    env.stage(vol)  # now the retry finds the finished filesystem and mounts it
    assert len(env.calls("mkfs.ext4").runs) == 1
    assert [m[0] for m in env.mounts()] == [str(vol.staging)]
    write_data(vol.staging, vol.id)
    read_data(vol.staging, vol.id, "the staged volume")
    env.teardown(vol)
    assert env.held_locks() == []
    assert env.mounts() == []


def test_a_retried_publish_waits_for_the_bind_mount_a_killed_driver_left_running(
        env: Env) -> None:
    vol = env.create("pvc-orphan-bind")
    env.cpublish(vol)
    env.stage(vol)
    assert vol.staging is not None and vol.target is not None
    write_data(vol.staging, vol.id)
    req = env.publish_req(vol)
    marker = env.stall("mount", "bind", STALL)
    _kill_during(env, lambda t: env.driver.node.NodePublishVolume(req, timeout=t), marker)
    pid = _orphan(env, "mount")[0]

    with pytest.raises(grpc.RpcError) as ei:
        env.driver.node.NodePublishVolume(req, timeout=4.0)
    assert ei.value.code() == C.DEADLINE_EXCEEDED, ei.value
    assert "mount --bind" in ei.value.details() and f"pid {pid}" in ei.value.details(), ei.value

    env.wait_tools_idle()
    env.publish(vol)
    targets = [m for m in env.mounts() if m[0] == str(vol.target)]
    assert len(targets) == 1, f"the target is mounted {len(targets)} times: {env.mounts()}"
    read_data(vol.target, vol.id, "the published volume")
    env.teardown(vol)
    assert env.mounts() == [] and env.held_locks() == []

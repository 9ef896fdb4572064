"""kill -9 the driver inside every RPC that changes something, restart it, retry as the sidecars
and kubelet do, and check that the retry converges to the crash-free end state, that data written
before the crash reads back, and that nothing leaks (LINSTOR objects, mounts, loop devices, held
locks). 100 trials per run; CRASH_TRIALS=1000 for more (CRASH_SEED picks the random points).

    CRASH_TRIALS=1000 PYTHONPATH=$PWD python3 -m pytest -q -s tests/reliability/test_kill9.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.prerequisites import require
from tests.reliability.engine import Env, TrialFailed
from tests.reliability.kill9 import Reference, Tally, points, reference, trial
from tests.reliability.scenarios import Golden, Scenario, scenarios

require(os.geteuid() == 0, "kill -9 trials need root (loop devices and mounts)")

TRIALS = int(os.environ.get("CRASH_TRIALS", "100"))
ONLY = os.environ.get("CRASH_ONLY", "")  # a substring of the RPC names to try (debugging)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("kill9"))
    try:
        env.driver.start()
        yield env
    finally:
        env.close()


@pytest.mark.timeout(3600)
def test_kill9_at_chosen_and_random_points_converges(env: Env, capsys: pytest.CaptureFixture
                                                     ) -> None:
    started = time.monotonic()
    golden = Golden(env)
    baseline = env.snapshot_state()
    all_sc = [sc for sc in scenarios(golden) if ONLY in sc.name]
    refs: dict[str, Reference] = {}
    for i, sc in enumerate(all_sc):
        refs[sc.name] = reference(env, sc, f"r{i:02d}x", baseline)
    # Round-robin over the RPCs; per RPC, the chosen points in turn with a random one between.
    plan: list[tuple[Scenario, str]] = []
    cursor = {sc.name: 0 for sc in all_sc}
    while len(plan) < TRIALS:
        sc = all_sc[len(plan) % len(all_sc)]
        pts = points(sc, refs[sc.name])
        n = cursor[sc.name]
        cursor[sc.name] += 1
        plan.append((sc, "random" if n % 2 or not pts else pts[(n // 2) % len(pts)]))
    tally = Tally()
    for i, (sc, point) in enumerate(plan):
        tag = f"k{i:04d}x"
        if i and i % 100 == 0:
            with capsys.disabled():
                print(f"\n  kill -9: {i} trials, {len(tally.failures)} failed, "
                      f"{time.monotonic() - started:.0f}s", flush=True)
        try:
            trial(env, sc, refs[sc.name], point, tag, baseline, tally)
        except TrialFailed as e:
            tally.failures.append(f"{sc.name} [{point}] {tag}: {e}")
            if env.driver.proc is None or env.driver.proc.poll() is not None:
                env.driver.start()
            env.disarm()
            env.wait_tools_idle()
            env.unmount_all()  # whatever the failed trial left mounted
            baseline = env.snapshot_state()  # the next trials are judged on their own
            if os.environ.get("CRASH_STOP"):
                break
    golden.remove(env)
    report = tally.report() + (f"\n  {len(plan)} trials in {time.monotonic() - started:.0f}s, "
                               f"{env.driver.starts} driver starts "
                               f"({env.driver.start_seconds / env.driver.starts:.2f}s each)")
    with capsys.disabled():
        print("\n" + report)
    assert not tally.failures, report
    assert sum(tally.trials.values()) == TRIALS

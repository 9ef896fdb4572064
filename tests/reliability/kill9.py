"""One kill -9 trial, the crash-free reference runs, and the tally printed at the end."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.engine import NOT_RPC_ROUTES, Env, TrialFailed, in_flight, normalize, retry
from tests.reliability.scenarios import Ctx, Scenario, rest_route_regex

# How long a chosen REST call is stalled (the driver is killed at its start) and how long a node
# command stand-in sleeps before it runs the real tool (it outlives the killed driver).
REST_STALL = 0.5
TOOL_STALL = {"mkfs.ext4": 1.5, "mount": 1.5, "resize2fs": 1.5, "e2fsck": 1.5, "xfs_growfs": 1.5}


@dataclass
class Reference:
    state: dict[str, Any]
    routes: list[str]
    seconds: float


@dataclass
class Tally:
    trials: Counter[str] = field(default_factory=Counter)
    points: dict[str, Counter[str]] = field(default_factory=dict)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    finished_first: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def add(self, sc: str, point: str, codes: list[str], finished_first: bool) -> None:
        self.trials[sc] += 1
        self.points.setdefault(sc, Counter())[point.split(":", 1)[0]] += 1
        self.codes.setdefault(sc, Counter()).update(codes or ["OK"])
        if finished_first:
            self.finished_first[sc] += 1

    def report(self) -> str:
        lines = [f"kill -9: {sum(self.trials.values())} trials, "
                 f"{len(self.failures)} did not converge"]
        for sc, n in self.trials.items():
            pts = ", ".join(f"{k} {v}" for k, v in sorted(self.points[sc].items()))
            codes = ", ".join(f"{k} {v}" for k, v in sorted(self.codes[sc].items()))
            lines.append(f"  {sc}: {n} trials ({pts}; answered before the kill "
                         f"{self.finished_first[sc]}); retry answers: {codes}; "
                         f"{self.seconds[sc] / n:.1f}s per trial; "
                         f"{'all converged' if not any(f.startswith(sc + ' ') for f in self.failures) else 'FAILED'}")
        lines += [f"  FAILED {f}" for f in self.failures]
        return "\n".join(lines)


def _leaks(env: Env, baseline: dict[str, Any], what: str) -> None:
    now = env.snapshot_state()
    diff = {k: (baseline[k], now[k]) for k in baseline if baseline[k] != now[k]}
    if diff:
        raise TrialFailed(f"{what}: left behind: " + "; ".join(
            f"{k}: before {b!r}, after {a!r}" for k, (b, a) in diff.items()))


def reference(env: Env, sc: Scenario, tag: str, baseline: dict[str, Any]) -> Reference:
    """The crash-free run: the end state to compare with, the REST calls the RPC makes."""
    ctx = Ctx(tag)
    sc.prep(env, ctx)
    before = env.sim.counts()
    started = time.monotonic()
    retry(sc.act(env, ctx))
    seconds = time.monotonic() - started
    after = env.sim.counts()
    routes = sorted(k for k, v in after.items()
                    if v > before.get(k, 0) and k not in NOT_RPC_ROUTES)
    state = normalize(sc.check(env, ctx), tag)
    if "mkfs" in state and state["mkfs"] != sc.mkfs_runs:
        raise TrialFailed(f"{sc.name}: {state['mkfs']} mkfs in a crash-free run")
    sc.cleanup(env, ctx)
    _leaks(env, baseline, f"{sc.name} (crash-free)")
    return Reference(state, routes, seconds)


def points(sc: Scenario, ref: Reference) -> list[str]:
    """Chosen points: each REST call, each stalled node command; random ones come between."""
    out = [f"rest:{r}" for r in ref.routes] if sc.rest_points else []
    return out + [f"tool:{tool}:{kind}" for tool, kind in sc.stalls]


def trial(env: Env, sc: Scenario, ref: Reference, point: str, tag: str,
          baseline: dict[str, Any], tally: Tally) -> None:
    started = time.monotonic()
    ctx = Ctx(tag)
    sc.prep(env, ctx)
    call = sc.act(env, ctx)
    route = ""
    reached: Any = None
    if point.startswith("rest:"):
        route = rest_route_regex(point[len("rest:"):])
        key = point[len("rest:"):]
        seen = env.sim.counts().get(key, 0)
        env.sim.admin("latency", {"seconds": REST_STALL, "route": route})

        def reached() -> bool:
            return env.sim.counts().get(key, 0) > seen
    elif point.startswith("tool:"):
        _, tool, kind = point.split(":")
        marker = env.stall(tool, kind, TOOL_STALL[tool])

        def reached() -> bool:
            return marker.exists()
    delay = env.rng.uniform(0.0, ref.seconds * 0.9) if point == "random" else 0.0
    with in_flight(lambda: call(60.0)) as outcome:
        end = time.monotonic() + (delay if reached is None else 30.0)
        while time.monotonic() < end and not outcome:
            if reached is not None and reached():
                break
            time.sleep(0.01)
        env.driver.kill()
    finished_first = bool(outcome) and ("result" in outcome)
    killed = time.monotonic()
    if route:
        env.sim.admin("latency", {"seconds": 0, "route": route})
    env.disarm()
    env.driver.start()
    if route:
        # LINSTOR finishes a request it received before it takes a later one on the same
        # object; the simulator's stall comes before its lock, so let the stalled call land
        # before the retry (a real restart takes longer than this anyway).
        time.sleep(max(0.0, killed + REST_STALL + 0.2 - time.monotonic()))
    codes: list[str] = []
    retry(call, codes=codes)
    env.wait_tools_idle()
    state = normalize(sc.check(env, ctx), tag)
    if state != ref.state:
        raise TrialFailed(f"end state differs from the crash-free one:\n  crash-free "
                          f"{ref.state}\n  after kill {state}")
    sc.cleanup(env, ctx)
    env.wait_tools_idle()
    _leaks(env, baseline, "after cleanup")
    tally.add(sc.name, point, codes, finished_first)
    tally.seconds[sc.name] += time.monotonic() - started

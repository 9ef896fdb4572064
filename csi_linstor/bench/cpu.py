"""``csi-linstor bench <workload>``: drive a CSI endpoint with a workload and print the figures.

Works against any CSI driver's socket (so drivers can be compared side by side). Against this
driver on the simulator it also reports REST calls per RPC (from the simulator's counters), the
driver's overhead (RPC latency minus the injected LINSTOR latency), the driver's RSS, and how soon
Probe answers ready after start. Without ``--csi-endpoint`` it starts its own simulator and driver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import requests

from csi_linstor._gen import csi_pb2, csi_pb2_grpc

WORKLOADS = ("create-delete", "full-cycle", "snapshot")
GiB = 1 << 30


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, seconds: float, code: str) -> None:
        with self.lock:
            self.latencies[method].append(seconds)
            if code != "OK":
                self.errors[method][code] += 1


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Workload:
    """The RPC sequences of each workload, as the sidecars and kubelet issue them."""

    def __init__(self, channel: grpc.Channel, args: argparse.Namespace, node_id: str,
                 work_dir: Path, stats: Stats) -> None:
        self.controller = csi_pb2_grpc.ControllerStub(channel)
        self.node = csi_pb2_grpc.NodeStub(channel)
        self.args = args
        self.node_id = node_id
        self.work_dir = work_dir
        self.stats = stats
        self.params = dict(kv.split("=", 1) for kv in args.parameter)
        self.observer: Callable[[str], None] | None = None
        mount = csi_pb2.VolumeCapability.MountVolume(fs_type=args.fs_type)
        mode = csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER)
        self.capability = csi_pb2.VolumeCapability(mount=mount, access_mode=mode)

    def call(self, method: str, fn: Callable[..., Any], request: Any) -> Any:
        start = time.perf_counter()
        code = "OK"
        try:
            return fn(request, timeout=self.args.timeout)
        except grpc.RpcError as err:
            code = err.code().name if err.code() else "UNKNOWN"
            raise
        finally:
            self.stats.record(method, time.perf_counter() - start, code)
            if self.observer is not None:
                self.observer(method)

    def create(self, name: str, source: Any = None) -> csi_pb2.Volume:
        request = csi_pb2.CreateVolumeRequest(
            name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=self.args.size),
            volume_capabilities=[self.capability], parameters=self.params,
            volume_content_source=source)
        return self.call("CreateVolume", self.controller.CreateVolume, request).volume

    def delete(self, volume_id: str) -> None:
        self.call("DeleteVolume", self.controller.DeleteVolume,
                  csi_pb2.DeleteVolumeRequest(volume_id=volume_id))

    def cycle(self, index: int) -> None:
        name = f"pvc-{uuid.uuid4()}"
        if self.args.workload == "create-delete":
            volume = self.create(name)
            self.delete(volume.volume_id)
        elif self.args.workload == "snapshot":
            volume = self.create(name)
            snap = self.call("CreateSnapshot", self.controller.CreateSnapshot,
                             csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id,
                                                           name=f"snapshot-{uuid.uuid4()}"))
            source = csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
                    snapshot_id=snap.snapshot.snapshot_id))
            restored = self.create(f"pvc-{uuid.uuid4()}", source)
            self.delete(restored.volume_id)
            self.call("DeleteSnapshot", self.controller.DeleteSnapshot,
                      csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot.snapshot_id))
            self.delete(volume.volume_id)
        else:
            self.full_cycle(name)

    def full_cycle(self, name: str) -> None:
        volume = self.create(name)
        vid = volume.volume_id
        published = self.call("ControllerPublishVolume", self.controller.ControllerPublishVolume,
                              csi_pb2.ControllerPublishVolumeRequest(
                                  volume_id=vid, node_id=self.node_id,
                                  volume_capability=self.capability,
                                  volume_context=volume.volume_context))
        staging = self.work_dir / name / "globalmount"
        target = self.work_dir / name / "mount"
        staging.mkdir(parents=True)
        ctx = dict(volume.volume_context)
        try:
            self.call("NodeStageVolume", self.node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(
                volume_id=vid, publish_context=published.publish_context,
                staging_target_path=str(staging), volume_capability=self.capability,
                volume_context=ctx))
            self.call("NodePublishVolume", self.node.NodePublishVolume,
                      csi_pb2.NodePublishVolumeRequest(
                          volume_id=vid, publish_context=published.publish_context,
                          staging_target_path=str(staging), target_path=str(target),
                          volume_capability=self.capability, volume_context=ctx))
            self.call("NodeUnpublishVolume", self.node.NodeUnpublishVolume,
                      csi_pb2.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)))
            self.call("NodeUnstageVolume", self.node.NodeUnstageVolume,
                      csi_pb2.NodeUnstageVolumeRequest(volume_id=vid,
                                                       staging_target_path=str(staging)))
        finally:
            self.call("ControllerUnpublishVolume", self.controller.ControllerUnpublishVolume,
                      csi_pb2.ControllerUnpublishVolumeRequest(volume_id=vid,
                                                               node_id=self.node_id))
            self.delete(vid)
            shutil.rmtree(self.work_dir / name, ignore_errors=True)


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time a process has used so far."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            self.peak = max(self.peak, _rss_kib(self.pid) or 0)

    def stop(self) -> int:
        self._done.set()
        self.join(1)
        return self.peak


class SelfHosted:
    """A simulator and a driver started by the bench, so it knows their URLs and PIDs."""

    def __init__(self, workers: int, log_level: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="csi-linstor-bench-"))
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.cli", "sim", "--listen", "127.0.0.1:0",
             "--nodes", "3", "--device-dir", str(self.dir / "dev"),
             "--state-dir", str(self.dir / "state"), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.sim.stdout.readline() if self.sim.stdout else ""
        self.sim_url = next((w for w in line.split() if w.startswith("http://")), "")
        if self.sim.stdout:
            self.sim.stdout.close()
        if not self.sim_url:
            self.close()
            raise RuntimeError(f"the simulator did not start (it printed {line!r})")
        self.socket = self.dir / "csi.sock"
        self.kubelet_dir = self.dir / "kubelet"  # full-cycle's staging and target paths
        self.kubelet_dir.mkdir()
        drbdsetup = (f"{sys.executable} -m csi_linstor.sim.drbdsetup --sim-url {self.sim_url} "
                     "--node node-1")
        self.started = time.monotonic()
        self.driver = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.cli", "serve", "--mode", "all",
             "--csi-endpoint", f"unix://{self.socket}", "--linstor-endpoint", self.sim_url,
             "--node", "node-1", "--workers", str(workers), "--drbdsetup", drbdsetup,
             "--kubelet-dir", str(self.kubelet_dir), "--log-level", log_level],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "driver.log", "w"))

    def probe_ready_seconds(self, limit: float = 30.0) -> float | None:
        """Seconds from process start until Probe first answers ready."""
        deadline = self.started + limit
        while time.monotonic() < deadline:
            if self.socket.exists():
                try:
                    with grpc.insecure_channel(f"unix:{self.socket}") as ch:
                        reply = csi_pb2_grpc.IdentityStub(ch).Probe(csi_pb2.ProbeRequest(),
                                                                    timeout=1)
                    if reply.ready.value:
                        return time.monotonic() - self.started
                except grpc.RpcError:
                    pass
            time.sleep(0.02)
        return None

    def close(self) -> None:
        for proc in (getattr(self, "driver", None), self.sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _sim(url: str, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, url.rstrip("/") + path, json=body, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


def calibrate(workload: Workload, sim_url: str, cycles: int) -> dict[str, float]:
    """REST calls per RPC: serial cycles, the simulator's request total read after each RPC."""
    calls: dict[str, list[int]] = defaultdict(list)
    last = _sim(sim_url, "GET", "/sim/stats")["total"]

    def observe(method: str) -> None:
        nonlocal last
        total = _sim(sim_url, "GET", "/sim/stats")["total"]  # /sim/* reads are not counted
        calls[method].append(total - last)
        last = total

    workload.observer = observe
    try:
        for i in range(cycles):
            workload.cycle(i)
    finally:
        workload.observer = None
    return {m: statistics.mean(v) for m, v in calls.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    hosted: SelfHosted | None = None
    result: dict[str, Any] = {"workload": args.workload, "count": args.count,
                              "concurrency": args.concurrency}
    try:
        if args.csi_endpoint:
            endpoint = args.csi_endpoint
            sim_url, driver_pid = args.sim_url, args.driver_pid
        else:
            hosted = SelfHosted(args.workers, args.driver_log_level)
            endpoint = f"unix://{hosted.socket}"
            sim_url, driver_pid = hosted.sim_url, hosted.driver.pid
            result["_sim_pid"] = hosted.sim.pid
            result["probe_ready_seconds"] = hosted.probe_ready_seconds()
        target = endpoint[len("unix://"):] if endpoint.startswith("unix://") else endpoint
        channel = grpc.insecure_channel(f"unix:{target}" if endpoint.startswith("unix") else target)
        grpc.channel_ready_future(channel).result(timeout=30)
        node_id = args.node or csi_pb2_grpc.NodeStub(channel).NodeGetInfo(
            csi_pb2.NodeGetInfoRequest(), timeout=10).node_id \
            if args.workload == "full-cycle" else args.node
        # the driver acts only on paths inside its --kubelet-dir
        paths_base = args.paths_dir or (hosted.kubelet_dir if hosted is not None else None)
        work_dir = Path(tempfile.mkdtemp(prefix="csi-bench-paths-", dir=paths_base))
        if driver_pid:
            result["driver_rss_idle_mib"] = round((_rss_kib(driver_pid) or 0) / 1024, 1)
        if sim_url:
            _sim(sim_url, "POST", "/sim/latency", {"seconds": args.sim_latency_ms / 1000.0})
            calib = Workload(channel, args, node_id, work_dir, Stats())
            result["rest_calls_per_rpc"] = {
                k: round(v, 2) for k, v in calibrate(calib, sim_url, args.calibrate).items()}
            _sim(sim_url, "POST", "/sim/stats/reset")
        stats = Stats()
        workload = Workload(channel, args, node_id, work_dir, stats)
        sampler = RssSampler(driver_pid) if driver_pid else None
        if sampler:
            sampler.start()
        counter = iter(range(args.count))
        counter_lock = threading.Lock()
        failures = Counter()

        def worker() -> None:
            while True:
                with counter_lock:
                    index = next(counter, None)
                if index is None:
                    return
                try:
                    workload.cycle(index)
                except grpc.RpcError as err:
                    failures[err.code().name if err.code() else "UNKNOWN"] += 1

        sim_pid = result.pop("_sim_pid", None)
        cpu_before = (_cpu_seconds(driver_pid), _cpu_seconds(sim_pid), time.process_time())
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for _ in range(args.concurrency):
                pool.submit(worker)
        elapsed = time.perf_counter() - start
        cpu_after = (_cpu_seconds(driver_pid), _cpu_seconds(sim_pid), time.process_time())
        for label, before, after in zip(("driver", "simulator", "bench_client"), cpu_before,
                                        cpu_after, strict=True):
            if before is not None and after is not None:
                result[f"{label}_cpu_ms_per_cycle"] = round((after - before) * 1000 / args.count, 3)
        shutil.rmtree(work_dir, ignore_errors=True)
        channel.close()
        completed = args.count - sum(failures.values())
        result["seconds"] = round(elapsed, 3)
        result["cycles_completed"] = completed
        result["cycles_failed"] = dict(failures)
        result["cycles_per_second"] = round(completed / elapsed, 2) if elapsed else 0.0
        if sampler:
            result["driver_rss_peak_mib"] = round(sampler.stop() / 1024, 1)
        latency_s = args.sim_latency_ms / 1000.0
        rpcs: dict[str, Any] = {}
        for method, values in sorted(stats.latencies.items()):
            entry: dict[str, Any] = {
                "count": len(values),
                "p50_ms": round(_pct(values, 0.5) * 1000, 2),
                "p99_ms": round(_pct(values, 0.99) * 1000, 2),
                "errors": dict(stats.errors.get(method, {})),
            }
            calls = result.get("rest_calls_per_rpc", {}).get(method)
            if calls is not None:
                entry["rest_calls"] = calls
                entry["overhead_p50_ms"] = round((_pct(values, 0.5) - calls * latency_s) * 1000, 2)
                entry["overhead_p99_ms"] = round((_pct(values, 0.99) - calls * latency_s) * 1000, 2)
            rpcs[method] = entry
        result["rpcs"] = rpcs
        if sim_url and "rest_calls_per_rpc" in result and latency_s > 0:
            per_cycle = sum(result["rest_calls_per_rpc"].values()) * latency_s
            ideal = args.concurrency / per_cycle if per_cycle else 0
            result["latency_bound_ideal_cycles_per_second"] = round(ideal, 2)
            if result["cycles_per_second"]:
                result["ideal_over_measured"] = round(ideal / result["cycles_per_second"], 3)
        result["sim_latency_ms"] = args.sim_latency_ms
        if sim_url:
            _sim(sim_url, "POST", "/sim/latency", {"seconds": 0})
        return result
    finally:
        if hosted is not None:
            hosted.close()


def print_table(result: dict[str, Any]) -> None:
    print(f"workload {result['workload']}: {result['cycles_completed']}/{result['count']} cycles "
          f"in {result['seconds']}s at concurrency {result['concurrency']} → "
          f"{result['cycles_per_second']} cycles/s (simulated LINSTOR latency "
          f"{result['sim_latency_ms']} ms)")
    header = f"{'RPC':<28}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}{'REST':>6}{'ovh p50':>9}" \
             f"{'ovh p99':>9}  errors"
    print(header)
    for method, e in result["rpcs"].items():
        print(f"{method:<28}{e['count']:>7}{e['p50_ms']:>9}{e['p99_ms']:>9}"
              f"{e.get('rest_calls', '-'):>6}{e.get('overhead_p50_ms', '-'):>9}"
              f"{e.get('overhead_p99_ms', '-'):>9}  {e['errors'] or ''}")
    for key in ("cycles_failed", "driver_rss_idle_mib", "driver_rss_peak_mib",
                "probe_ready_seconds", "driver_cpu_ms_per_cycle", "simulator_cpu_ms_per_cycle",
                "bench_client_cpu_ms_per_cycle", "latency_bound_ideal_cycles_per_second",
                "ideal_over_measured"):
        if key in result and result[key] not in (None, {}):
            print(f"{key}: {result[key]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csi-linstor bench",
        description="Drive a CSI endpoint with a workload and print per-RPC latency, errors and "
                    "throughput. Without --csi-endpoint, starts its own LINSTOR simulator and "
                    "driver (and then also reports REST calls per RPC, driver overhead, RSS and "
                    "Probe readiness). See also `csi-linstor bench scale --help` (cost per RPC "
                    "as the cluster grows) and `csi-linstor bench real --help` (against real "
                    "LINSTOR).",
    )
    p.add_argument("workload", choices=WORKLOADS,  # `bench scale` and `bench real`: __init__.py
                   help="create-delete: CreateVolume+DeleteVolume; full-cycle: create, controller "
                        "publish, stage, publish, unpublish, unstage, controller unpublish, delete; "
                        "snapshot: create, snapshot, restore, delete all")
    p.add_argument("--csi-endpoint", default=None, metavar="URL",
                   help="unix:///path/csi.sock of any CSI driver (default: start one)")
    p.add_argument("--count", type=int, default=100, help="cycles to run (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=10,
                   help="concurrent clients (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--size", type=int, default=GiB, help="volume size in bytes (default: 1 GiB)")
    p.add_argument("--fs-type", default="ext4", help="filesystem for full-cycle (default: ext4)")
    p.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                   help="StorageClass parameter (repeatable)")
    p.add_argument("--node", default="", help="node id for publish (default: NodeGetInfo's)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="per-RPC deadline in seconds (default: %(default)s)")
    p.add_argument("--sim-url", default=None,
                   help="simulator URL, to count REST calls and inject latency")
    p.add_argument("--sim-latency-ms", type=float, default=0.0,
                   help="latency the simulator adds to each REST call (default: 0)")
    p.add_argument("--paths-dir", type=Path, default=None, metavar="DIR",
                   help="where full-cycle makes staging and target paths; must be inside the "
                        "driver's --kubelet-dir (default: the self-hosted driver's, else /tmp)")
    p.add_argument("--driver-pid", type=int, default=None, help="driver PID, to report its RSS")
    p.add_argument("--calibrate", type=int, default=5,
                   help="serial cycles used to count REST calls per RPC (default: %(default)s)")
    p.add_argument("--workers", type=int, default=32,
                   help="--workers of a driver the bench starts (default: %(default)s)")
    p.add_argument("--driver-log-level", default="info",
                   help="log level of a driver the bench starts (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 1 or args.concurrency < 1:
        print("csi-linstor bench: error: --count and --concurrency must be at least 1",
              file=sys.stderr)
        return 2
    if args.sim_latency_ms and not (args.sim_url or not args.csi_endpoint):
        print("csi-linstor bench: error: --sim-latency-ms needs --sim-url", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except grpc.RpcError as err:
        print(f"csi-linstor bench: error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except (grpc.FutureTimeoutError, RuntimeError, requests.RequestException) as err:
        print(f"csi-linstor bench: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print_table(result)
    return 0 if not result["cycles_failed"] else 1


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    sys.exit(main())

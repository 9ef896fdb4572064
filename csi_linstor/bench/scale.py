"""``csi-linstor bench scale``: what each RPC costs as the cluster grows.

Starts a simulator in this process (100 nodes by default, model-only: no loop devices) and a
driver process (``serve --mode controller``) on it, then for each cluster size (empty, 1k, 10k
volumes, each with one snapshot) measures, one RPC at a time so the simulator's counters belong
to that RPC:

- REST calls and reply bytes received per RPC for CreateVolume, ControllerPublishVolume,
  ControllerUnpublishVolume, ControllerExpandVolume, CreateSnapshot, DeleteSnapshot and
  DeleteVolume (the LINSTOR monitor's ``GET /v1/controller/version`` every few seconds is left
  out: it belongs to no RPC);
- ListVolumes and ListSnapshots: calls and bytes for one page of ``--page`` entries;
- GetCapacity as external-provisioner's capacity tracking calls it: every node's segment × every
  class, latency per call (p50/p99) and the time one full round takes; for the overProvision
  class also the round's first call, which reads every resource;
- the driver's RSS (peak, sampled every 100 ms) through it all.

The clusters are built by ``csi_linstor.sim.seed``: one volume and one snapshot created through
the driver serve as the template that is copied in the simulator's state model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.bench.cpu import RssSampler, _pct, _rss_kib
from csi_linstor.mapping.capacity import RESERVED_TTL
from csi_linstor.mapping.topology import HOSTNAME_KEY
from csi_linstor.sim import SimConfig, Simulator
from csi_linstor.sim.seed import replicate

GiB = 1 << 30
MONITOR = "GET /v1/controller/version"
FLAT_RPCS = ("CreateVolume", "ControllerPublishVolume", "ControllerUnpublishVolume",
             "ControllerExpandVolume", "CreateSnapshot", "DeleteSnapshot", "DeleteVolume")
# Two StorageClasses as capacity tracking sees them: plain, and one with overProvision.
CLASSES: dict[str, dict[str, str]] = {
    "plain": {"placementCount": "2"},
    "overprovision": {"placementCount": "2", "overProvision": "2.0"},
}


class Counter:
    """REST calls and reply bytes the simulator served since the last ``take``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._calls, self._bytes = self._read()

    def _read(self) -> tuple[dict[str, int], dict[str, int]]:
        return self.sim.request_counts(), self.sim.reply_bytes()

    def take(self) -> tuple[int, int, dict[str, int]]:
        calls, sent = self._read()
        routes = {k: v - self._calls.get(k, 0) for k, v in calls.items()
                  if k != MONITOR and v != self._calls.get(k, 0)}
        nbytes = sum(v - self._bytes.get(k, 0) for k, v in sent.items() if k != MONITOR)
        self._calls, self._bytes = calls, sent
        return sum(routes.values()), nbytes, routes


class Driver:
    def __init__(self, url: str, work: Path, log_level: str) -> None:
        self.socket = work / "csi.sock"
        self.records = work / "rpcs.jsonl"
        self.records.touch()
        self._offset = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.bench.timed_driver", str(self.records),
             "serve", "--mode", "controller",
             "--csi-endpoint", f"unix://{self.socket}", "--linstor-endpoint", url,
             "--log-level", log_level],
            stdout=subprocess.DEVNULL, stderr=open(work / "driver.log", "w"))
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.ctl = csi_pb2_grpc.ControllerStub(self.channel)

    def waited(self, method: str) -> float:
        """Seconds the last ``method`` RPC waited on LINSTOR (timed_driver's record)."""
        for _ in range(100):
            with open(self.records) as f:
                f.seek(self._offset)
                lines = f.readlines()
            recs = [json.loads(x) for x in lines if x.endswith("\n")]
            mine = [r for r in recs if r["method"] == method]
            if mine:
                self._offset += sum(len(x.encode()) for x in lines if x.endswith("\n"))
                return float(mine[-1]["linstor_wait_s"])
            time.sleep(0.01)
        raise RuntimeError(f"the driver recorded no {method}")

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


CAPABILITY = csi_pb2.VolumeCapability(
    mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"),
    access_mode=csi_pb2.VolumeCapability.AccessMode(
        mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


class Measure:
    def __init__(self, driver: Driver, sim: Simulator, args: argparse.Namespace) -> None:
        self.driver = driver
        self.counter = Counter(sim)
        self.sim = sim
        self.args = args
        self.nodes = sorted(n.name for n in sim.controller.nodes.values())
        self._last_reading = -RESERVED_TTL  # when the overProvision round last started

    def call(self, out: dict[str, list[tuple[int, int, float, float]]], method: str,
             request: Any) -> Any:
        self.counter.take()
        start = time.perf_counter()
        reply = getattr(self.driver.ctl, method)(request, timeout=self.args.timeout)
        elapsed = time.perf_counter() - start
        calls, nbytes, _ = self.counter.take()
        driver = elapsed - self.driver.waited(method)
        out.setdefault(method, []).append((calls, nbytes, elapsed, driver))
        return reply

    def lifecycle(self, out: dict[str, list[tuple[int, int, float, float]]], index: int) -> None:
        c = csi_pb2
        vol = self.call(out, "CreateVolume", c.CreateVolumeRequest(
            name=f"pvc-{uuid.uuid4()}", capacity_range=c.CapacityRange(required_bytes=GiB),
            volume_capabilities=[CAPABILITY], parameters=CLASSES["plain"])).volume
        replicas = set(self.sim.controller.rds[vol.volume_id.upper()].resources)
        node = next(n for n in self.nodes[index % len(self.nodes):] + self.nodes
                    if n.upper() not in replicas)  # a diskless attach, the costlier publish
        self.call(out, "ControllerPublishVolume", c.ControllerPublishVolumeRequest(
            volume_id=vol.volume_id, node_id=node, volume_capability=CAPABILITY,
            volume_context=vol.volume_context))
        self.call(out, "ControllerUnpublishVolume", c.ControllerUnpublishVolumeRequest(
            volume_id=vol.volume_id, node_id=node))
        self.call(out, "ControllerExpandVolume", c.ControllerExpandVolumeRequest(
            volume_id=vol.volume_id, capacity_range=c.CapacityRange(required_bytes=2 * GiB),
            volume_capability=CAPABILITY))
        snap = self.call(out, "CreateSnapshot", c.CreateSnapshotRequest(
            source_volume_id=vol.volume_id, name=f"snapshot-{uuid.uuid4()}")).snapshot
        self.call(out, "DeleteSnapshot", c.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
        self.call(out, "DeleteVolume", c.DeleteVolumeRequest(volume_id=vol.volume_id))

    def pages(self, out: dict[str, list[tuple[int, int, float, float]]]) -> None:
        c = csi_pb2
        for _ in range(self.args.repeat):
            first = self.call(out, "ListVolumes", c.ListVolumesRequest(max_entries=self.args.page))
            if first.next_token:
                self.call(out, "ListVolumes", c.ListVolumesRequest(
                    max_entries=self.args.page, starting_token=first.next_token))
            first = self.call(out, "ListSnapshots",
                              c.ListSnapshotsRequest(max_entries=self.args.page))
            if first.next_token:
                self.call(out, "ListSnapshots", c.ListSnapshotsRequest(
                    max_entries=self.args.page, starting_token=first.next_token))

    def capacity_round(self) -> dict[str, Any]:
        """external-provisioner's capacity tracking: every segment × every class, serially.

        The overProvision class's first call reads every resource (the driver keeps the sums
        for RESERVED_TTL seconds, mapping/capacity.py): the round starts only when the previous
        round's reading has expired, so each size's first call makes a fresh one, reported
        apart (``first_*``)."""
        results: dict[str, Any] = {}
        for cls, params in CLASSES.items():
            latencies: list[float] = []
            driver_ms: list[float] = []
            calls: list[int] = []
            sent: list[int] = []
            if cls != "plain":
                wait = self._last_reading + RESERVED_TTL + 0.5 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last_reading = time.monotonic()
            start = time.perf_counter()
            sampled = self.args.sampled_segments or len(self.nodes)
            segments = self.nodes if cls == "plain" else self.nodes[:sampled]
            for node in segments:
                topo = csi_pb2.Topology(segments={HOSTNAME_KEY: node})
                self.counter.take()
                t0 = time.perf_counter()
                self.driver.ctl.GetCapacity(csi_pb2.GetCapacityRequest(
                    volume_capabilities=[CAPABILITY], parameters=params,
                    accessible_topology=topo), timeout=self.args.timeout)
                latencies.append(time.perf_counter() - t0)
                driver_ms.append(latencies[-1] - self.driver.waited("GetCapacity"))
                n, b, _ = self.counter.take()
                calls.append(n)
                sent.append(b)
            results[cls] = {
                "segments": len(segments),
                "round_seconds": round(time.perf_counter() - start, 3),
                "p50_ms": round(_pct(latencies, 0.5) * 1000, 2),
                "p99_ms": round(_pct(latencies, 0.99) * 1000, 2),
                "driver_p50_ms": round(_pct(driver_ms, 0.5) * 1000, 2),
                "driver_p99_ms": round(_pct(driver_ms, 0.99) * 1000, 2),
                "rest_calls": round(statistics.mean(calls), 2),
                "kib_received": round(statistics.mean(sent) / 1024, 1),
                "first_ms": round(latencies[0] * 1000, 2),
                "first_driver_ms": round(driver_ms[0] * 1000, 2),
                "first_rest_calls": calls[0],
                "first_kib_received": round(sent[0] / 1024, 1),
            }
        return results


def _summary(samples: dict[str, list[tuple[int, int, float, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method, rows in samples.items():
        out[method] = {
            "count": len(rows),
            "rest_calls": round(statistics.mean(r[0] for r in rows), 2),
            "kib_received": round(statistics.mean(r[1] for r in rows) / 1024, 2),
            "p50_ms": round(_pct([r[2] for r in rows], 0.5) * 1000, 2),
            "driver_p50_ms": round(_pct([r[3] for r in rows], 0.5) * 1000, 2),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="csi-linstor-scale-"))
    sim = Simulator(SimConfig(nodes=args.nodes, device_dir=work / "dev",
                              state_dir=work / "state", real_devices=False))
    url = sim.start(host="127.0.0.1", port=0)
    driver: Driver | None = None
    result: dict[str, Any] = {"nodes": args.nodes, "sizes": {}}
    try:
        driver = Driver(url, work, args.driver_log_level)
        sampler = RssSampler(driver.proc.pid)
        sampler.start()
        measure = Measure(driver, sim, args)
        # the template: one volume with one snapshot, made the ordinary way
        c = csi_pb2
        template = driver.ctl.CreateVolume(c.CreateVolumeRequest(
            name="pvc-00000000-0000-4000-8000-000000000000",
            capacity_range=c.CapacityRange(required_bytes=GiB),
            volume_capabilities=[CAPABILITY], parameters=CLASSES["plain"]),
            timeout=args.timeout).volume
        driver.ctl.CreateSnapshot(c.CreateSnapshotRequest(
            source_volume_id=template.volume_id,
            name="snapshot-00000000-0000-4000-8000-000000000000"), timeout=args.timeout)
        seeded = 0
        for size in args.sizes:
            if size > seeded + 1:
                start = time.perf_counter()
                replicate(sim.controller, template.volume_id, size - 1 - seeded, start=seeded)
                seed_seconds = time.perf_counter() - start
                seeded = size - 1
            else:
                seed_seconds = 0.0
            samples: dict[str, list[tuple[int, int, float, float]]] = {}
            for i in range(args.repeat):
                measure.lifecycle(samples, i)
            measure.pages(samples)
            entry: dict[str, Any] = {
                "volumes": len(sim.controller.rds),
                "snapshots": sum(len(rd.snapshots) for rd in sim.controller.rds.values()),
                "seed_seconds": round(seed_seconds, 2),
                "rpcs": _summary(samples),
                "capacity": measure.capacity_round(),
                "driver_rss_mib": round((_rss_kib(driver.proc.pid) or 0) / 1024, 1),
                "driver_rss_peak_mib": round(sampler.peak / 1024, 1),
            }
            result["sizes"][str(size)] = entry
            if args.progress:
                print(f"... {entry['volumes']} volumes measured", file=sys.stderr, flush=True)
        sampler.stop()
        return result
    finally:
        if driver is not None:
            driver.close()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_table(result: dict[str, Any]) -> None:
    sizes = list(result["sizes"].items())
    print(f"simulator with {result['nodes']} nodes; per cluster size: REST calls / KiB "
          "received / p50 ms / of which the driver's p50 ms (latency minus LINSTOR wait)")
    head = f"{'RPC':<27}" + "".join(f"{e['volumes']:>8} vols{'':>23}" for _, e in sizes)
    print(head)
    methods = list(FLAT_RPCS) + ["ListVolumes", "ListSnapshots"]
    for m in methods:
        cells = []
        for _, e in sizes:
            r = e["rpcs"].get(m)
            cells.append(f"{r['rest_calls']:>6} {r['kib_received']:>9} {r['p50_ms']:>8} "
                         f"{r['driver_p50_ms']:>8}" if r else f"{'-':>34}")
        print(f"{m:<27}" + " ".join(cells))
    for cls in CLASSES:
        cells = []
        for _, e in sizes:
            c = e["capacity"][cls]
            cells.append(f"{c['rest_calls']:>6} {c['kib_received']:>9} {c['p50_ms']:>8} "
                         f"{c['driver_p50_ms']:>8}")
        print(f"{'GetCapacity (' + cls + ')':<27}" + " ".join(cells))
    cells = []
    for _, e in sizes:
        c = e["capacity"]["overprovision"]
        cells.append(f"{c['first_rest_calls']:>6} {c['first_kib_received']:>9} "
                     f"{c['first_ms']:>8} {c['first_driver_ms']:>8}")
    print(f"{'  first call of its round':<27}" + " ".join(cells))
    for cls in CLASSES:
        print(f"capacity round ({cls}, {sizes[0][1]['capacity'][cls]['segments']} segments "
              "× 1 class), seconds: " + ", ".join(str(e["capacity"][cls]["round_seconds"])
                                                 for _, e in sizes))
    print("driver RSS MiB (peak): " + ", ".join(
        f"{e['volumes']} vols {e['driver_rss_mib']} ({e['driver_rss_peak_mib']})"
        for _, e in sizes))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csi-linstor bench scale",
        description="REST calls, bytes received, latency and driver RSS per RPC on a simulator "
                    "seeded with growing numbers of volumes and snapshots.")
    p.add_argument("--nodes", type=int, default=100, help="simulated nodes (default: %(default)s)")
    p.add_argument("--sizes", default="0,1000,10000",
                   help="cluster sizes in volumes (each with one snapshot), ascending "
                        "(default: %(default)s)")
    p.add_argument("--repeat", type=int, default=5,
                   help="lifecycles (and list pages) measured per size (default: %(default)s)")
    p.add_argument("--page", type=int, default=100,
                   help="max_entries of ListVolumes/ListSnapshots (default: %(default)s)")
    p.add_argument("--sampled-segments", type=int, default=0,
                   help="segments asked for the overProvision class, whose first GetCapacity "
                        "of a round reads every resource (default: 0, every node, as the plain "
                        "class)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-RPC deadline in seconds")
    p.add_argument("--driver-log-level", default="info")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG",
                   help="draw the figures into this PNG (csi_linstor.bench.plot)")
    p.add_argument("--progress", action="store_true", help="say on stderr when a size is done")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    except ValueError:
        print("csi-linstor bench scale: error: --sizes takes comma-separated integers",
              file=sys.stderr)
        return 2
    try:
        result = run(args)
    except grpc.RpcError as err:
        print(f"csi-linstor bench scale: error: {err.code().name}: {err.details()}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print_table(result)
    if args.plot is not None:
        from csi_linstor.bench.plot import plot_scale

        plot_scale(result, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0

"""``csi-linstor bench real``: per-RPC latency against a real LINSTOR controller, split into
LINSTOR's own time and the driver's overhead, and create-delete cycles/s at N clients.

The driver runs instrumented (``timed_driver``): for each RPC it records how long it waited
inside ``LinstorClient.request`` (wall time minus the thread's CPU time: the network and
LINSTOR). The bench's client measures each RPC's latency; **overhead = latency − LINSTOR wait**:
gRPC on both sides, the wrapper, the driver's logic and its HTTP stack's CPU. The serial run
gives the split; a second run with ``--clients`` concurrent clients gives cycles/s.

``--linstor-url`` names a running controller; ``--start`` starts the real LINSTOR 1.33.3 of
../shared/linstor-server through ``tests/real_linstor.py`` (needs a source checkout, root, Java),
one node, FILE_THIN pool ``xfspool``, storage layer only (no DRBD module here).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from csi_linstor.bench.cpu import Stats, Workload, _cpu_seconds, _pct

REAL_CLASS = ["placementCount=1", "layerList=storage", "storagePool=xfspool"]


def _start_real(work: Path) -> Any:
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo))
    try:
        from tests.real_linstor import RealLinstor  # a source checkout's test backend
    except ImportError as err:
        raise RuntimeError(f"--start needs a source checkout with tests/real_linstor.py: {err}"
                           ) from err
    return RealLinstor(work).start()


def _serial(workload: Workload, count: int, records: Path) -> dict[str, Any]:
    """``count`` create-delete cycles one RPC at a time; the split per RPC."""
    seen: dict[str, list[float]] = defaultdict(list)
    order: list[tuple[str, float]] = []

    def observe(method: str) -> None:
        order.append((method, workload.stats.latencies[method][-1]))

    workload.observer = observe
    offset = records.stat().st_size if records.exists() else 0
    for i in range(count):
        workload.cycle(i)
    workload.observer = None
    time.sleep(0.2)  # the driver writes its record as the RPC returns
    with open(records) as f:
        f.seek(offset)
        server = [json.loads(line) for line in f if line.strip()]
    server = [s for s in server if s["method"] in ("CreateVolume", "DeleteVolume")]
    if len(server) != len(order):
        raise RuntimeError(f"{len(order)} RPCs sent but {len(server)} recorded by the driver")
    out: dict[str, Any] = {}
    for (method, latency), rec in zip(order, server, strict=True):
        if rec["method"] != method:
            raise RuntimeError(f"records out of order: {rec['method']} for {method}")
        seen[method + ":latency"].append(latency)
        seen[method + ":linstor"].append(rec["linstor_wait_s"])
        seen[method + ":overhead"].append(latency - rec["linstor_wait_s"])
        seen[method + ":http_cpu"].append(rec["http_cpu_s"])
        seen[method + ":calls"].append(rec["rest_calls"])
    for method in ("CreateVolume", "DeleteVolume"):
        out[method] = {
            "count": len(seen[method + ":latency"]),
            "rest_calls": round(statistics.mean(seen[method + ":calls"]), 2),
            "latency_p50_ms": round(_pct(seen[method + ":latency"], 0.5) * 1000, 2),
            "linstor_p50_ms": round(_pct(seen[method + ":linstor"], 0.5) * 1000, 2),
            "overhead_p50_ms": round(_pct(seen[method + ":overhead"], 0.5) * 1000, 2),
            "overhead_p99_ms": round(_pct(seen[method + ":overhead"], 0.99) * 1000, 2),
            "driver_http_cpu_p50_ms": round(_pct(seen[method + ":http_cpu"], 0.5) * 1000, 2),
        }
    return out


def _concurrent(workload: Workload, count: int, clients: int) -> dict[str, Any]:
    counter = iter(range(count))
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            try:
                workload.cycle(index)
            except grpc.RpcError as err:
                failures.append(err.code().name if err.code() else "UNKNOWN")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for _ in range(clients):
            pool.submit(worker)
    elapsed = time.perf_counter() - start
    done = count - len(failures)
    return {"clients": clients, "cycles": done, "failed": len(failures),
            "seconds": round(elapsed, 2), "cycles_per_second": round(done / elapsed, 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="csi-linstor-bench-real-", dir="/tmp"))
    real = None
    driver = None
    try:
        if args.start:
            real = _start_real(work / "linstor")
            url = real.url
        else:
            url = args.linstor_url
        records = work / "rpcs.jsonl"
        socket = work / "csi.sock"
        driver = subprocess.Popen(
            [sys.executable, "-m", "csi_linstor.bench.timed_driver", str(records), "serve",
             "--mode", "controller", "--csi-endpoint", f"unix://{socket}",
             "--linstor-endpoint", url, "--workers", str(args.workers),
             "--log-level", args.driver_log_level],
            stdout=subprocess.DEVNULL, stderr=open(work / "driver.log", "w"))
        channel = grpc.insecure_channel(f"unix:{socket}")
        grpc.channel_ready_future(channel).result(timeout=60)
        wargs = argparse.Namespace(workload="create-delete", parameter=args.parameter,
                                   fs_type="ext4", size=args.size, timeout=args.timeout)
        workload = Workload(channel, wargs, "", work, Stats())
        for i in range(3):  # warm up: the resource group, connections
            workload.cycle(i)
        workload.stats = Stats()
        cpu0 = _cpu_seconds(driver.pid)
        result: dict[str, Any] = {"linstor": url, "serial": _serial(workload, args.count,
                                                                     records)}
        cpu1 = _cpu_seconds(driver.pid)
        if cpu0 is not None and cpu1 is not None:
            result["driver_cpu_ms_per_rpc"] = round((cpu1 - cpu0) * 1000 / (2 * args.count), 3)
        workload.stats = Stats()
        result["concurrent"] = _concurrent(workload, args.concurrent_count, args.clients)
        channel.close()
        return result
    finally:
        if driver is not None and driver.poll() is None:
            driver.send_signal(signal.SIGTERM)
            try:
                driver.wait(60)
            except subprocess.TimeoutExpired:
                driver.kill()
        if real is not None:
            real.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False,
                           timeout=60)


def print_table(result: dict[str, Any]) -> None:
    print(f"real LINSTOR at {result['linstor']}: serial create-delete, per RPC")
    print(f"{'RPC':<14}{'count':>6}{'REST':>6}{'latency p50':>13}{'LINSTOR p50':>13}"
          f"{'overhead p50':>14}{'overhead p99':>14}{'HTTP CPU p50':>14}  (ms)")
    for method, e in result["serial"].items():
        print(f"{method:<14}{e['count']:>6}{e['rest_calls']:>6}{e['latency_p50_ms']:>13}"
              f"{e['linstor_p50_ms']:>13}{e['overhead_p50_ms']:>14}{e['overhead_p99_ms']:>14}"
              f"{e['driver_http_cpu_p50_ms']:>14}")
    if "driver_cpu_ms_per_rpc" in result:
        print(f"driver CPU per RPC (serial): {result['driver_cpu_ms_per_rpc']} ms")
    c = result["concurrent"]
    print(f"{c['clients']} clients: {c['cycles']} create-delete cycles in {c['seconds']} s → "
          f"{c['cycles_per_second']} cycles/s ({c['failed']} failed)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csi-linstor bench real",
        description="Per-RPC latency against a real LINSTOR, split into LINSTOR's time and the "
                    "driver's overhead, and create-delete cycles/s at N clients.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--linstor-url", help="a running LINSTOR controller's REST URL")
    where.add_argument("--start", action="store_true",
                       help="start ../shared/linstor-server's LINSTOR (tests/real_linstor.py)")
    p.add_argument("--count", type=int, default=50, help="serial cycles (default: %(default)s)")
    p.add_argument("--clients", type=int, default=10,
                   help="concurrent clients of the second run (default: %(default)s)")
    p.add_argument("--concurrent-count", type=int, default=100,
                   help="cycles of the concurrent run (default: %(default)s)")
    p.add_argument("--parameter", action="append", default=None, metavar="KEY=VALUE",
                   help=f"StorageClass parameter (default: {' '.join(REAL_CLASS)})")
    p.add_argument("--size", type=int, default=64 << 20, help="volume size (default: 64 MiB)")
    p.add_argument("--workers", type=int, default=32, help="the driver's --workers")
    p.add_argument("--timeout", type=float, default=120.0, help="per-RPC deadline")
    p.add_argument("--driver-log-level", default="info")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parameter is None:
        args.parameter = list(REAL_CLASS)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    try:
        result = run(args)
    except grpc.RpcError as err:
        print(f"csi-linstor bench real: error: {err.code().name}: {err.details()}",
              file=sys.stderr)
        return 1
    except (grpc.FutureTimeoutError, RuntimeError) as err:
        print(f"csi-linstor bench real: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print_table(result)
    return 0 if not result["concurrent"]["failed"] else 1

"""The kill -9 engine: a LINSTOR simulator process that outlives driver processes, a driver
process that is SIGKILLed at chosen or random points inside an RPC, restarted, and retried the
way the sidecars and kubelet retry, plus what the trials check afterwards.

Chosen points: the simulator's latency knob stalls one REST call of the RPC (each call the RPC
makes in a crash-free run, in turn) and the driver is killed while it waits for the answer; or a
stand-in first in the driver's PATH stalls one node command (mkfs.ext4, mount, resize2fs) and the
driver is killed while the command sleeps (the command itself lives on: it runs in its own
session, as it would in the node pod). Random points: killed after a random delay within the
RPC's crash-free duration.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import requests

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.nodeops import oplock
from csi_linstor.nodeops.mountinfo import MountTable

REPO = Path(__file__).resolve().parents[2]
C = grpc.StatusCode
RETRYABLE = {C.DEADLINE_EXCEEDED, C.UNAVAILABLE, C.ABORTED, C.RESOURCE_EXHAUSTED}
NODE = "node-1"
OTHER = "node-2"
MIB = 1024 * 1024
# Node commands a stand-in can stall; `mount` is told apart by its arguments (fs, bind).
STALLED_TOOLS = ("mkfs.ext4", "mount", "resize2fs", "e2fsck", "xfs_growfs")
# Background calls that are no part of an RPC.
NOT_RPC_ROUTES = ("GET /v1/controller/version",)


class TrialFailed(AssertionError):
    pass


def _wrapper(real: str, tool: str, ctl: Path) -> str:
    """A stand-in for ``tool``: logs every call (pid, start, end, args); when the stall file of
    its kind exists, takes it (one stall per arming), says so, sleeps, then runs the real tool."""
    kind = "$1"
    if tool == "mount":
        kind = 'fs; case "$*" in *--bind*) kind=bind;; *remount*) kind=remount;; esac'
    else:
        kind = "main"
    return f"""#!/bin/sh
ctl="{ctl}"
kind={kind}
echo "start $$ $(date +%s.%N) $*" >> "$ctl/calls-{tool}"
if mv "$ctl/stall-{tool}-$kind" "$ctl/stalling-{tool}-$$" 2>/dev/null; then
  seconds=$(cat "$ctl/stalling-{tool}-$$")
  touch "$ctl/started-{tool}-$kind"
  sleep "$seconds"
  rm -f "$ctl/stalling-{tool}-$$"
fi
"{real}" "$@"
rc=$?
echo "end $$ $(date +%s.%N) rc=$rc $*" >> "$ctl/calls-{tool}"
exit $rc
"""


@dataclass
class Calls:
    """What a stand-in logged: (pid, start, end or None, args)."""

    runs: list[tuple[str, float, float | None, str]]

    def for_device(self, device: str) -> list[tuple[str, float, float | None, str]]:
        return [r for r in self.runs if r[3].split()[-1:] == [device]
                or f" {device} " in f" {r[3]} "]


class Sim:
    """``csi-linstor sim`` as its own process: LINSTOR's state survives every driver."""

    def __init__(self, base: Path, kubelet: Path) -> None:
        self.base = base
        self.state = base / "state"
        self.dev = base / "dev"
        self.log = base / "sim.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "csi_linstor.cli", "sim", "--listen", "127.0.0.1:0",
                 "--nodes", "3", "--device-dir", str(self.dev), "--state-dir", str(self.state),
                 "--node-root", f"{NODE}={kubelet}", "--log-level", "warning"],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise TrialFailed("the simulator did not start:\n" + self.log.read_text()[-3000:])
        self.http = requests.Session()

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            r = self.http.get(f"{self.url}/sim/{path}", timeout=30)
        else:
            r = self.http.post(f"{self.url}/sim/{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def get(self, path: str) -> Any:
        r = self.http.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def counts(self) -> dict[str, int]:
        return dict(self.admin("stats")["counts"])

    def objects(self) -> dict[str, Any]:
        """LINSTOR's objects: resource definitions with their volume sizes, resources (node and
        diskless or not), snapshots, resource groups."""
        rds = {}
        for rd in self.get("/v1/resource-definitions"):
            vds = self.get(f"/v1/resource-definitions/{rd['name']}/volume-definitions")
            rds[rd["name"]] = sorted((vd.get("volume_number", 0), vd["size_kib"]) for vd in vds)
        rscs = sorted((r["name"], r["node_name"], "DISKLESS" in (r.get("flags") or []))
                      for r in self.get("/v1/view/resources"))
        snaps = sorted(f"{s['resource_name']}/{s['name']}" for s in self.get("/v1/view/snapshots"))
        rgs = sorted(g["name"] for g in self.get("/v1/resource-groups"))
        return {"rds": rds, "resources": rscs, "snapshots": snaps, "rgs": rgs}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# Start drivers from a fork server that has imported the driver's modules once (a second
# instead of three on a loaded machine, a third of a trial): each driver is still a process of
# its own, killed with a real SIGKILL. CRASH_FORKSERVER=0 starts them with exec as the node pod
# would (slower, the same behaviour).
FORKSERVER = os.environ.get("CRASH_FORKSERVER", "1") != "0"
_PRELOAD = ["grpc", "requests", "csi_linstor.cli", "csi_linstor.app", "csi_linstor.csi.controller",
            "csi_linstor.csi.node", "csi_linstor.csi.identity", "tests.reliability.engine"]


def _serve_child(argv: list[str], env: dict[str, str], log: str) -> None:
    """In the forked driver: output to the log, the driver's environment, then its main."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(REPO)
    from csi_linstor.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Forked:
    """A driver process forked from the fork server, with the Popen calls the harness uses."""

    _ctx: Any = None

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        import multiprocessing

        if Forked._ctx is None:
            Forked._ctx = multiprocessing.get_context("forkserver")
            Forked._ctx.set_forkserver_preload(_PRELOAD)
        self.p = Forked._ctx.Process(target=_serve_child, args=(argv, env, str(log)),
                                     daemon=False)
        self.p.start()
        self.pid = self.p.pid

    def poll(self) -> int | None:
        return self.p.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.p.join(timeout)
        if self.p.exitcode is None:
            raise subprocess.TimeoutExpired("driver", timeout or 0)
        return self.p.exitcode

    def send_signal(self, sig: int) -> None:
        if self.p.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Driver:
    """`csi-linstor serve` (all services) against the simulator process, node ``node-1``, with
    the stand-ins first in PATH; ``kill()`` is SIGKILL."""

    def __init__(self, base: Path, sim: Sim, kubelet: Path, runtime: Path, bin_dir: Path) -> None:
        self.base, self.sim, self.kubelet, self.runtime, self.bin_dir = (
            base, sim, kubelet, runtime, bin_dir)
        self.sock = base / "csi.sock"
        self.log = base / "driver.log"
        self.proc: Any = None  # a subprocess.Popen or a Forked
        self.channel: grpc.Channel | None = None
        self.starts = 0
        self.start_seconds = 0.0

    def start(self) -> None:
        if self.sock.exists():  # left by a killed process: ours, in our temp dir
            self.sock.unlink()
        env = dict(os.environ, PATH=f"{self.bin_dir}:{os.environ.get('PATH', '')}")
        drbdsetup = (f"{sys.executable} -m csi_linstor.sim.drbdsetup --sim-url {self.sim.url} "
                     f"--node {NODE}")
        argv = ["serve", "--linstor-endpoint", self.sim.url, "--node", NODE, "--drbdsetup",
                drbdsetup, "--kubelet-dir", str(self.kubelet), "--runtime-dir", str(self.runtime),
                "--csi-endpoint", f"unix://{self.sock}", "--device-wait-timeout", "5",
                "--workers", "8"]
        with open(self.log, "ab") as out:
            out.write(f"==== start {self.starts}\n".encode())
        t0 = time.monotonic()
        if FORKSERVER:
            self.proc = Forked(argv, env, self.log)
        else:
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "csi_linstor.cli", *argv], stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        self.starts += 1
        end = t0 + 60
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.proc.kill()
                raise TrialFailed("driver did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.02)
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        csi_pb2_grpc.IdentityStub(self.channel).Probe(csi_pb2.ProbeRequest(), timeout=30,
                                                      wait_for_ready=True)
        self.start_seconds += time.monotonic() - t0

    @property
    def ctl(self) -> Any:
        return csi_pb2_grpc.ControllerStub(self.channel)

    @property
    def node(self) -> Any:
        return csi_pb2_grpc.NodeStub(self.channel)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                if self.proc.wait(60) != 0:
                    raise TrialFailed("the driver did not exit cleanly on SIGTERM")
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def topology() -> csi_pb2.TopologyRequirement:
    """Requisite and preferred: node-1 (the replica where this node plugin runs)."""
    here = csi_pb2.Topology(segments={"linbit.com/hostname": NODE})
    return csi_pb2.TopologyRequirement(requisite=[here], preferred=[here])


def fs_cap(fstype: str = "ext4") -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fstype),
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))


@dataclass
class Vol:
    id: str
    context: dict[str, str]
    fstype: str = "ext4"
    pctx: dict[str, str] = field(default_factory=dict)
    staging: Path | None = None
    target: Path | None = None


class Env:
    """One simulator, one (restartable) driver, the stand-ins, the kubelet dir; the baseline
    of what exists before any trial."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.kubelet = base / "kubelet"
        self.kubelet.mkdir(parents=True)
        self.runtime = base / "run"
        self.ctl_dir = base / "ctl"
        self.ctl_dir.mkdir()
        self.bin_dir = base / "bin"
        self.bin_dir.mkdir()
        for tool in STALLED_TOOLS:
            real = shutil.which(tool)
            assert real, f"{tool} not found"
            script = self.bin_dir / tool
            script.write_text(_wrapper(real, tool, self.ctl_dir))
            script.chmod(0o755)
        self.sim = Sim(base, self.kubelet)
        self.driver = Driver(base, self.sim, self.kubelet, self.runtime, self.bin_dir)
        self.rng = random.Random(int(os.environ.get("CRASH_SEED", "15")))

    def close(self) -> None:
        try:
            self.driver.stop()
        finally:
            try:
                self.wait_tools_idle()
                self.unmount_all()  # only after a failed trial: the trials clean up themselves
            finally:
                self.sim.stop()

    def unmount_all(self) -> None:
        for path, *_ in sorted(self.mounts(), reverse=True):
            subprocess.run(["umount", path], capture_output=True, check=False, timeout=60)

    # -- arming and observing the stand-ins ------------------------------------------------

    def stall(self, tool: str, kind: str, seconds: float) -> Path:
        started = self.ctl_dir / f"started-{tool}-{kind}"
        started.unlink(missing_ok=True)
        (self.ctl_dir / f"stall-{tool}-{kind}").write_text(f"{seconds}\n")
        return started

    def disarm(self) -> None:
        for f in self.ctl_dir.glob("stall-*"):
            f.unlink(missing_ok=True)

    def calls(self, tool: str) -> Calls:
        path = self.ctl_dir / f"calls-{tool}"
        if not path.exists():
            return Calls([])
        starts: dict[str, tuple[float, str]] = {}
        runs: list[tuple[str, float, float | None, str]] = []
        for line in path.read_text().splitlines():
            parts = line.split(" ", 3)
            if parts[0] == "start":
                starts[parts[1]] = (float(parts[2]), parts[3] if len(parts) > 3 else "")
            elif parts[0] == "end" and parts[1] in starts:
                t0, args = starts.pop(parts[1])
                runs.append((parts[1], t0, float(parts[2]), args))
        runs += [(pid, t0, None, args) for pid, (t0, args) in starts.items()]
        return Calls(runs)

    def wait_tools_idle(self, seconds: float = 60) -> None:
        """Wait until no stand-in runs (an orphan of a killed driver may)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not list(self.ctl_dir.glob("stalling-*")) and all(
                    not self._alive(r[0]) for t in STALLED_TOOLS
                    for r in self.calls(t).runs if r[2] is None):
                return
            time.sleep(0.05)
        raise TrialFailed("a stalled node command is still running after a minute")

    @staticmethod
    def _alive(pid: str) -> bool:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # -- state -----------------------------------------------------------------------------

    def mounts(self) -> list[tuple[str, str, bool, str]]:
        """Mounts under the test dir: (path, fstype, read-only, device major:minor)."""
        base = str(self.base)
        return sorted((e.mount_point, e.fstype, e.readonly, f"{e.major}:{e.minor}")
                      for e in MountTable.read() if e.mount_point.startswith(base + "/"))

    def loops(self) -> set[str]:
        out = subprocess.run(["losetup", "-J"], capture_output=True, text=True,
                             check=False).stdout
        if not out.strip():
            return set()
        base = str(self.base)
        return {f"{d['name']}={d.get('back-file') or ''}:ro={d.get('ro')}"
                for d in json.loads(out)["loopdevices"]
                if (d.get("back-file") or "").startswith(base)}

    def held_locks(self) -> list[str]:
        """Lock files of node operations (mkfs, mount, ...) that some process still holds."""
        oplock.set_runtime_dir(self.runtime)
        return [f.name for f in oplock.held_files()] if self.runtime.exists() else []

    def snapshot_state(self) -> dict[str, Any]:
        return {"linstor": self.sim.objects(), "mounts": self.mounts(), "loops": self.loops(),
                "locks": self.held_locks()}

    # -- RPC helpers with the live driver --------------------------------------------------

    def create(self, name: str, size: int = 16 * MIB, source: Any = None, fstype: str = "ext4"
               ) -> Vol:
        req = csi_pb2.CreateVolumeRequest(
            name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[fs_cap(fstype)], parameters={"placementCount": "1"},
            accessibility_requirements=topology(),
            volume_content_source=source)
        v = retry(lambda t: self.driver.ctl.CreateVolume(req, timeout=t)).volume
        return Vol(v.volume_id, dict(v.volume_context), fstype)

    def paths(self, vol: Vol) -> None:
        csi = self.kubelet / "plugins" / "kubernetes.io" / "csi"
        vol.staging = csi / "linstor.csi.linbit.com" / vol.id / "globalmount"
        vol.target = self.kubelet / "pods" / f"pod-{vol.id}" / "volumes" / \
            "kubernetes.io~csi" / vol.id / "mount"
        vol.staging.mkdir(parents=True, exist_ok=True)
        vol.target.parent.mkdir(parents=True, exist_ok=True)

    def cpublish_req(self, vol: Vol, node: str = NODE) -> Any:
        return csi_pb2.ControllerPublishVolumeRequest(
            volume_id=vol.id, node_id=node, volume_capability=fs_cap(vol.fstype),
            volume_context=vol.context)

    def cunpublish_req(self, vol: Vol, node: str = NODE) -> Any:
        return csi_pb2.ControllerUnpublishVolumeRequest(volume_id=vol.id, node_id=node)

    def stage_req(self, vol: Vol) -> Any:
        return csi_pb2.NodeStageVolumeRequest(
            volume_id=vol.id, publish_context=vol.pctx, staging_target_path=str(vol.staging),
            volume_capability=fs_cap(vol.fstype), volume_context=vol.context)

    def publish_req(self, vol: Vol) -> Any:
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=vol.id, publish_context=vol.pctx, staging_target_path=str(vol.staging),
            target_path=str(vol.target), volume_capability=fs_cap(vol.fstype),
            volume_context=vol.context)

    def cpublish(self, vol: Vol, node: str = NODE) -> None:
        req = self.cpublish_req(vol, node)
        vol.pctx = dict(retry(lambda t: self.driver.ctl.ControllerPublishVolume(
            req, timeout=t)).publish_context)

    def stage(self, vol: Vol) -> None:
        if vol.staging is None:
            self.paths(vol)
        req = self.stage_req(vol)
        retry(lambda t: self.driver.node.NodeStageVolume(req, timeout=t))

    def publish(self, vol: Vol) -> None:
        req = self.publish_req(vol)
        retry(lambda t: self.driver.node.NodePublishVolume(req, timeout=t))

    def teardown(self, vol: Vol, *, node_side: bool = True, nodes: tuple[str, ...] = (NODE,)
                 ) -> None:
        """Unpublish, unstage, controller-unpublish, delete: what the CO does at the end."""
        d = self.driver
        if node_side and vol.target is not None:
            req_u = csi_pb2.NodeUnpublishVolumeRequest(volume_id=vol.id,
                                                       target_path=str(vol.target))
            retry(lambda t: d.node.NodeUnpublishVolume(req_u, timeout=t))
        if node_side and vol.staging is not None:
            req_s = csi_pb2.NodeUnstageVolumeRequest(volume_id=vol.id,
                                                     staging_target_path=str(vol.staging))
            retry(lambda t: d.node.NodeUnstageVolume(req_s, timeout=t))
        for node in nodes:
            req_c = self.cunpublish_req(vol, node)
            retry(lambda t, r=req_c: d.ctl.ControllerUnpublishVolume(r, timeout=t))
        req_d = csi_pb2.DeleteVolumeRequest(volume_id=vol.id)
        retry(lambda t: d.ctl.DeleteVolume(req_d, timeout=t))


def retry(call: Callable[[float], Any], *, seconds: float = 90, attempt: float = 10,
          codes: list[str] | None = None) -> Any:
    """As a sidecar or kubelet: the call with a per-attempt timeout; retryable codes again
    after an exponential backoff (0.1 s doubling to 2 s); any other error is the trial's."""
    end = time.monotonic() + seconds
    backoff = 0.1
    while True:
        try:
            return call(attempt)
        except grpc.RpcError as e:
            code = e.code()
            if codes is not None:
                codes.append(code.name)
            if code not in RETRYABLE:
                raise TrialFailed(f"non-retryable answer {code.name}: {e.details()}") from None
            if time.monotonic() > end:
                raise TrialFailed(f"still {code.name} after {seconds}s: {e.details()}") from None
        time.sleep(backoff)
        backoff = min(2.0, backoff * 2)


@contextmanager
def in_flight(call: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Run ``call`` in a thread; yields its outcome dict (filled when it returns)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except grpc.RpcError as e:
            outcome["code"] = e.code().name
        except Exception as e:  # noqa: BLE001 - reported by the trial, never swallowed
            outcome["error"] = repr(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield outcome
    finally:
        t.join(60)


def normalize(value: Any, tag: str) -> Any:
    """The state with the trial's tag (in every name) replaced, so trials compare."""
    text = json.dumps(value, sort_keys=True, default=sorted)
    return json.loads(re.sub(re.escape(tag), "TAG", text))

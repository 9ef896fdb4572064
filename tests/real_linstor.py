"""The real LINSTOR 1.33.3 controller + satellite of ../shared/linstor-server, as a test backend.

``RealLinstor.start()`` unpacks LINBIT's dist tarball (once per machine, into a cache keyed by the
tarball's checksum), starts the controller (H2 in memory) and one satellite on free loopback
ports, registers the satellite as node ``NODE``, and creates two FILE_THIN pools:

- ``xfspool`` in a directory on a reflink XFS image: volumes and snapshots (LINSTOR's FILE_THIN
  snapshots are reflink copies, so the pool's filesystem must support reflink);
- ``thinpool`` in a plain directory on the test's filesystem: volumes only (snapshots refused).

No DRBD kernel module exists here, so every resource group must use the storage layer only
(``layer_stack: ["STORAGE"]``; StorageClass ``layerList: storage``). ``stop()`` deletes every
resource definition through REST (the only way the satellite detaches its loop devices), stops
both processes, unmounts and detaches the pool image, detaches any loop device still backed by a
pool file, and removes ``/var/lib/linstor.d/loop_device_mapping``.

GPL-3.0: LINSTOR is used from ../shared as it is; nothing of it is copied into the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
DIST = Path(os.environ.get(
    "LINSTOR_DIST",
    REPO.parent / "shared" / "linstor-server" / "linstor-server-1.33.3-dist.tar.xz"))
CACHE = Path(os.environ.get("LINSTOR_CACHE", "/var/cache/csi-linstor-tests"))
NODE = "sanity-host"
XFS_POOL = "xfspool"
THIN_POOL = "thinpool"
LOOP_MAPPING = Path("/var/lib/linstor.d/loop_device_mapping")


def java_available() -> bool:
    return shutil.which("java") is not None


def dist_available() -> bool:
    return DIST.is_file()


def require_real_linstor() -> None:
    """Skip (locally) or fail (under CI, tests/prerequisites.py) when real LINSTOR cannot run."""
    from tests.prerequisites import require

    require(os.geteuid() == 0, "real LINSTOR needs root (loop devices, mounts)")
    require(java_available(), "real LINSTOR needs a Java runtime (openjdk-17-jre-headless)")
    require(dist_available(), "real LINSTOR needs ../shared/linstor-server")


def free_port() -> int:
    """A free loopback port below 32768: LINSTOR stores the satellite port as SQL SMALLINT."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free loopback port in 20000-32000")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpacked() -> Path:
    """The unpacked distribution (bin/Controller, bin/Satellite), unpacked once per tarball."""
    key = _sha256(DIST)[:16]
    home = CACHE / f"linstor-{key}"
    done = home / ".unpacked"
    if not done.exists():
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        with tarfile.open(DIST) as tar:
            tar.extractall(home, filter="tar")
        done.write_text(DIST.name + "\n")
    dirs = [p for p in home.iterdir() if p.is_dir() and (p / "bin" / "Controller").exists()]
    assert dirs, f"no bin/Controller in {DIST}"
    return dirs[0]


@dataclass(frozen=True)
class HttpsStores:
    """Java key and trust stores for LINSTOR's ``[https]`` (tests/pki.py ``java_stores``)."""

    keystore: Path
    password: str
    ca: Path  # PEM of the CA that signed the server certificate (what clients trust)
    truststore: Path | None = None  # set: LINSTOR demands client certificates signed by it
    client: tuple[Path, Path] | None = None  # the harness's own client certificate and key


class RealLinstor:
    """One controller + one satellite, started on free loopback ports under ``work``."""

    def __init__(self, work: Path, *, database: Path | None = None,
                 https: HttpsStores | None = None, satellite: bool = True) -> None:
        """``database``: an H2 file database at this path instead of H2 in memory, so the
        controller keeps its state across :meth:`stop_controller` / :meth:`start_controller`;
        written at each commit (``WRITE_DELAY=0``): with H2's default a SIGKILLed controller
        lost seconds of committed changes (seen: the node itself, 2 s after it was created).
        ``https``: serve REST over HTTPS with these Java key/trust stores (the plain port then
        only redirects ``/v1``); the harness itself talks HTTPS with ``https.client``.
        ``satellite=False``: the controller alone (no node, no pool)."""
        if any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/-"
               for c in str(work)):
            # LINSTOR's StorDriver/FileDir must match [a-zA-Z0-9_/-]+ (no dots, no brackets)
            raise ValueError(f"LINSTOR pool directories allow [a-zA-Z0-9_/-] only: {work}")
        self.work = work
        self.port = free_port()
        self.stlt_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pool_loop: str | None = None
        self.xfs_dir = work / "xfspool"
        self.thin_dir = work / "thinpool"
        self.database = database
        self.https = https
        self.with_satellite = satellite
        self.plain_url = self.url
        self.https_port: int | None = None
        if https is not None:
            self.https_port = free_port()
            self.url = f"https://127.0.0.1:{self.https_port}"
            self.http.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test CA
            self.http.verify = str(https.ca)
            if https.client is not None:
                self.http.cert = (str(https.client[0]), str(https.client[1]))
        self.ctrl: subprocess.Popen[bytes] | None = None
        self.stlt: subprocess.Popen[bytes] | None = None
        self._env = dict(os.environ, JAVA_OPTS="-Xms32M -Xmx512M")

    # -- REST ---------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, ok: bool = True) -> Any:
        r = self.http.request(method, self.url + path, json=body, timeout=60)
        if ok and not r.ok:
            raise AssertionError(f"{method} {path}: {r.status_code} {r.text[:2000]}")
        return r.json() if r.content else None

    def rds(self) -> list[str]:
        return sorted(rd["name"] for rd in self.call("GET", "/v1/resource-definitions"))

    def snapshots(self) -> list[str]:
        return sorted(f"{s['resource_name']}/{s['name']}"
                      for s in self.call("GET", "/v1/view/snapshots"))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> RealLinstor:
        w = self.work
        for d in ("ctrl-etc", "stlt-etc", "logs-ctrl", "logs-stlt", "xfspool", "thinpool"):
            (w / d).mkdir(parents=True, exist_ok=True)
        toml = (f'[http]\n  enabled = true\n  listen_addr = "127.0.0.1"\n  port = {self.port}\n')
        if self.https is None:
            toml += "[https]\n  enabled = false\n"
        else:
            h = self.https
            toml += ('[https]\n  enabled = true\n  listen_addr = "127.0.0.1"\n'
                     f'  port = {self.https_port}\n  keystore = "{h.keystore}"\n'
                     f'  keystore_password = "{h.password}"\n')
            if h.truststore is not None:
                toml += (f'  truststore = "{h.truststore}"\n'
                         f'  truststore_password = "{h.password}"\n')
        if self.database is not None:
            toml += f'[db]\n  connection_url = "jdbc:h2:{self.database};WRITE_DELAY=0"\n'
        (w / "ctrl-etc" / "linstor.toml").write_text(toml)
        (w / "stlt-etc" / "linstor_satellite.toml").write_text(
            f'[netcom]\n  type = "plain"\n  bind_address = "127.0.0.1"\n'
            f"  port = {self.stlt_port}\n")
        self.start_controller()
        if not self.with_satellite:
            return self
        self.start_satellite(wait_online=False)
        try:
            self.call("POST", "/v1/nodes", {
                "name": NODE, "type": "SATELLITE", "net_interfaces": [{
                    "name": "default", "address": "127.0.0.1",
                    "satellite_port": self.stlt_port, "satellite_encryption_type": "PLAIN"}]})
            self.wait_online()
            img = w / "xfs.img"
            with open(img, "wb") as f:
                f.truncate(8 * 1024 * 1024 * 1024)  # sparse: room for a few GiB-sized PVCs
            subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)], check=True,
                           timeout=60)
            self.pool_loop = subprocess.run(
                ["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                text=True, timeout=30).stdout.strip()
            subprocess.run(["mount", self.pool_loop, str(self.xfs_dir)], check=True, timeout=30)
            for name, d in ((XFS_POOL, self.xfs_dir), (THIN_POOL, self.thin_dir)):
                self.call("POST", f"/v1/nodes/{NODE}/storage-pools", {
                    "storage_pool_name": name, "provider_kind": "FILE_THIN",
                    "props": {"StorDriver/FileDir": str(d)}})
        except BaseException:
            self.stop()
            raise
        return self

    # -- stopping and starting one process (fault tests) --------------------------------------

    def start_controller(self) -> None:
        """Start the controller and wait until REST answers (H2 file database: state kept)."""
        assert self.ctrl is None or self.ctrl.poll() is not None, "controller already running"
        w = self.work
        argv = [str(unpacked() / "bin" / "Controller"), f"--config-directory={w}/ctrl-etc",
                f"--logs={w}/logs-ctrl"]
        if self.database is None:
            argv.append("--memory-database=h2")
        self.ctrl = self._spawn(argv, w / "ctrl.out")
        try:
            self._wait(lambda: self._get_ok("/v1/controller/version"), 180, "controller REST",
                       (self.ctrl,))
        except BaseException:
            self.stop()
            raise

    def stop_controller(self, sig: int = signal.SIGTERM) -> None:
        """Stop the controller (SIGKILL: as a crash); its satellite keeps running. Started
        again, only a controller with a ``database`` file remembers its nodes and volumes."""
        self._end(self.ctrl, sig)

    def start_satellite(self, wait_online: bool = True) -> None:
        """Start the satellite; with ``wait_online`` until the controller sees it ONLINE."""
        assert self.stlt is None or self.stlt.poll() is not None, "satellite already running"
        w = self.work
        out = w / "stlt.out"
        seen = out.read_text(errors="replace").count("NetComService started") \
            if out.exists() else 0
        self.stlt = self._spawn([str(unpacked() / "bin" / "Satellite"),
                                 f"--config-directory={w}/stlt-etc", f"--logs={w}/logs-stlt",
                                 "--skip-hostname-check", "--skip-drbd-check"], out)
        self._wait(lambda: out.read_text(errors="replace").count("NetComService started") > seen,
                   120, "satellite", (self.stlt,))
        if wait_online:
            self.wait_online()

    def stop_satellite(self, sig: int = signal.SIGTERM) -> None:
        """Stop the satellite; waits until the controller reports it OFFLINE."""
        self._end(self.stlt, sig)
        self._wait(lambda: self.node_status() != "ONLINE", 120, "satellite OFFLINE",
                   (self.ctrl,))

    def node_status(self) -> str:
        return str(self.call("GET", f"/v1/nodes/{NODE}").get("connection_status"))

    def wait_online(self, seconds: float = 120) -> None:
        """Until the controller sees the satellite ONLINE (it reconnects on its own)."""
        self._wait(lambda: self.node_status() == "ONLINE", seconds, "satellite ONLINE",
                   (self.ctrl, self.stlt))

    def _end(self, proc: subprocess.Popen[bytes] | None, sig: int) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def _spawn(self, argv: list[str], out: Path) -> subprocess.Popen[bytes]:
        with open(out, "ab") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def _get_ok(self, path: str) -> bool:
        try:
            return self.http.get(self.url + path, timeout=2).ok
        except requests.RequestException:
            return False

    def _wait(self, cond: Any, seconds: float, what: str,
              watch: tuple[subprocess.Popen[bytes] | None, ...] = ()) -> None:
        """Until ``cond()``; fails at once when a process in ``watch`` has exited."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if cond():
                return
            for p in watch:
                if p is not None and p.poll() is not None:
                    raise AssertionError(f"LINSTOR process exited ({p.returncode}) while "
                                         f"waiting for {what}; see {self.work}/*.out")
            time.sleep(0.2)
        raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")

    def purge(self) -> list[str]:
        """Delete every snapshot and resource definition; what there was."""
        left: list[str] = []
        if not self._get_ok("/v1/controller/version"):
            return left
        for snap in self.snapshots():
            rd, name = snap.split("/", 1)
            left.append(f"snapshot {snap}")
            self.call("DELETE", f"/v1/resource-definitions/{rd}/snapshots/{name}", ok=False)
        for rd in self.rds():
            left.append(f"resource definition {rd}")
            self.call("DELETE", f"/v1/resource-definitions/{rd}", ok=False)
        return left

    def leftovers(self) -> list[str]:
        """What a test left in LINSTOR: snapshots and resource definitions."""
        return [f"snapshot {s}" for s in self.snapshots()] + [
            f"resource definition {rd}" for rd in self.rds()]

    def reset(self) -> None:
        """Back to the state start() left: no snapshot, resource definition, resource group
        (but LINSTOR's own DfltRscGrp) or key-value store entry; the nodes and pools stay."""
        self.purge()
        for rg in self.call("GET", "/v1/resource-groups"):
            if rg["name"] != "DfltRscGrp":
                self.call("DELETE", f"/v1/resource-groups/{rg['name']}", ok=False)
        # LINSTOR generates a LINSTOR remote on the first snapshot restore
        # ("local-remote-generated-by-linstor", http://localhost:3370)
        for remotes in (self.call("GET", "/v1/remotes") or {}).values():
            for remote in remotes:
                self.call("DELETE", f"/v1/remotes?remote_name={remote['remote_name']}", ok=False)
        for kv in self.call("GET", "/v1/key-value-store"):
            self.call("DELETE", f"/v1/key-value-store/{kv['name']}", ok=False)
        left = self.leftovers() + [f"resource group {rg['name']}" for rg in self.call(
            "GET", "/v1/resource-groups") if rg["name"] != "DfltRscGrp"] + [
            f"remote {r['remote_name']}" for rs in (self.call("GET", "/v1/remotes") or {}).values()
            for r in rs]
        if left:
            raise AssertionError(f"LINSTOR could not be reset: {left}")

    def stop(self) -> None:
        with contextlib.suppress(requests.RequestException, AssertionError):
            self.purge()
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.procs.clear()
        for d in (self.xfs_dir, self.thin_dir):
            out = subprocess.run(["losetup", "-J"], capture_output=True, text=True,
                                 check=False).stdout
            for dev in (json.loads(out)["loopdevices"] if out.strip() else []):
                if (dev.get("back-file") or "").startswith(str(d) + "/"):
                    subprocess.run(["losetup", "-d", dev["name"]], check=False, timeout=30)
        # the satellite's last closes may still be settling: a busy umount or detach is retried
        for _ in range(20):
            if not os.path.ismount(self.xfs_dir) or subprocess.run(
                    ["umount", str(self.xfs_dir)], check=False, timeout=60).returncode == 0:
                break
            time.sleep(0.5)
        if self.pool_loop:
            for _ in range(20):
                if subprocess.run(["losetup", "-d", self.pool_loop], check=False,
                                  capture_output=True, timeout=30).returncode == 0:
                    break
                time.sleep(0.5)
            self.pool_loop = None
        with contextlib.suppress(FileNotFoundError):
            LOOP_MAPPING.unlink()

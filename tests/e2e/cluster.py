"""A three-node test cluster of real driver processes on the LINSTOR simulator, and the CO roles.

There is no Kubernetes here: these classes play the parts that call the driver, with the requests
the real components send:

- ``Provisioner``: external-provisioner (``--extra-create-metadata``, ``--default-fstype=ext4``,
  topology on): StorageClass + PVC -> ``CreateVolume``; ``DeleteVolume``.
- ``Attacher``: external-attacher: ``ControllerPublishVolume`` / ``ControllerUnpublishVolume``.
- ``Resizer``: external-resizer: ``ControllerExpandVolume``.
- ``Snapshotter``: external-snapshotter: ``CreateSnapshot`` (retried until ready) / ``DeleteSnapshot``.
- ``Kubelet``: one per node: stage (once per node), publish (per pod), stats, expand, unpublish,
  unstage, with kubelet's path layout under a temporary kubelet root.

``Cluster`` starts the processes: one ``csi-linstor sim``, one controller and one node process per
LINSTOR node, each on its own unix socket, and talks to the simulator's admin API for faults.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import requests
import yaml

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.nodeops.mountinfo import MountTable

DRIVER = "linstor.csi.linbit.com"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"
HOSTNAME_KEY = "linbit.com/hostname"
RPC_TIMEOUT = 60.0

Mode = csi_pb2.VolumeCapability.AccessMode
CtrlCap = csi_pb2.ControllerServiceCapability.RPC
NodeCap = csi_pb2.NodeServiceCapability.RPC


# ---------------------------------------------------------------------------------------------
# Manifests and quantities
# ---------------------------------------------------------------------------------------------


def manifests(name: str) -> list[dict[str, Any]]:
    """Every document of ``deploy/examples/<name>``."""
    with open(EXAMPLES / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def manifest(name: str, kind: str) -> dict[str, Any]:
    """The one document of ``kind`` in ``deploy/examples/<name>``."""
    found = [d for d in manifests(name) if d.get("kind") == kind]
    assert len(found) == 1, f"{name}: expected one {kind}, found {len(found)}"
    return found[0]


_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def quantity(text: str | int) -> int:
    """A Kubernetes quantity (``1Gi``, ``500M``) in bytes."""
    m = re.fullmatch(r"(\d+)([kMGT]i?|)", str(text).strip())
    assert m, f"unsupported quantity {text!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


GiB = 1024**3


# ---------------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------------


class Stubs:
    """Identity, Controller and Node stubs over one unix socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        self.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """Call ``fn`` and return the gRPC error it raises (fail when it succeeds)."""
    try:
        reply = fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected a gRPC error, got a reply: {reply}")


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def _driver_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "csi_linstor.cli", *args]


class Cluster:
    """``csi-linstor sim`` + one controller + one node process per LINSTOR node."""

    # the controller's cap on one LINSTOR request: short, so the failure stories' silent
    # simulator is noticed within an RPC
    linstor_timeout = "10"

    def __init__(self, tmp: Path, nodes: int = 3) -> None:
        self.tmp = tmp
        self.node_names = [f"node-{i}" for i in range(1, nodes + 1)]
        self.device_dir = tmp / "dev"
        self.state_dir = tmp / "state"
        self.kubelet_root = tmp / "kubelet"
        self.procs: list[Proc] = []
        self.url = ""
        self.http = requests.Session()
        self.controller: Stubs | None = None
        self.nodes: dict[str, Stubs] = {}
        self._stubs: list[Stubs] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], stdout: Any = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdout=stdout if stdout is not None else f, stderr=f,
                                 stdin=subprocess.DEVNULL, cwd=REPO)
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        sim = self._spawn("sim", _driver_cmd(
            "sim", "--listen", "127.0.0.1:0", "--nodes", str(len(self.node_names)),
            "--device-dir", str(self.device_dir), "--state-dir", str(self.state_dir),
            # DRBD auto-promote from real opens: what a node's kubelet mounts or opens for
            # writing under its root makes that node Primary (in_use)
            *[a for n in self.node_names
              for a in ("--node-root", f"{n}={self.kubelet_root / n}")]),
            stdout=subprocess.PIPE)
        assert sim.popen.stdout is not None
        line = sim.popen.stdout.readline().decode().strip()
        assert line.startswith("http://"), f"simulator did not print its URL: {line!r}\n" + \
            sim.log_text()
        self.url = line
        self.controller = self.start_controller("controller", self.url)
        for node in self.node_names:
            self.nodes[node] = self._start_node(node)
        for stubs in [self.controller, *self.nodes.values()]:
            stubs.wait_ready()

    def start_controller(self, name: str, linstor_url: str, *, wait: bool = False,
                         extra: tuple[str, ...] = ()) -> Stubs:
        sock = self.tmp / f"{name}.sock"
        self._spawn(name, _driver_cmd(
            "serve", "--mode", "controller", "--linstor-endpoint", linstor_url,
            "--csi-endpoint", f"unix://{sock}", "--log-level", "debug",
            "--linstor-timeout", self.linstor_timeout, *extra))
        stubs = Stubs(sock)
        self._stubs.append(stubs)
        if wait:
            stubs.wait_ready()
        return stubs

    def _start_node(self, node: str) -> Stubs:
        sock = self.tmp / f"{node}.sock"
        drbdsetup = f"{sys.executable} -m csi_linstor.sim.drbdsetup --sim-url {self.url} " \
                    f"--node {node}"
        self._spawn(node, _driver_cmd(
            "serve", "--mode", "node", "--node", node, "--linstor-endpoint", self.url,
            "--csi-endpoint", f"unix://{sock}", "--drbdsetup", drbdsetup,
            "--kubelet-dir", str(self.kubelet_root / node), "--log-level", "debug"))
        stubs = Stubs(sock)
        self._stubs.append(stubs)
        return stubs

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process (drivers first, the simulator last); their exit codes."""
        for s in self._stubs:
            s.close()
        codes = {}
        for proc in reversed(self.procs):
            codes[proc.name] = proc.stop()
        return codes

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    # -- LINSTOR REST and the simulator's admin API -------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(self.url + path, params=params or None, timeout=30)
        r.raise_for_status()
        return r.json()

    def admin(self, method: str, path: str, body: dict | None = None) -> Any:
        r = self.http.request(method, f"{self.url}/sim/{path.lstrip('/')}", json=body,
                              timeout=30)
        assert r.ok, f"{method} /sim/{path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def sim_state(self) -> dict[str, list[str]]:
        return self.admin("GET", "state")

    def double_opens(self) -> list[dict]:
        """Moments the simulator saw one volume open for writing on two nodes at once (a
        DRBD device would have refused the second: auto-promote needs the peer Secondary)."""
        return self.admin("GET", "double-opens")

    def sim_replies(self) -> list[tuple[str, str, int, Any]]:
        """Every REST reply the simulator sent (for the contract check at teardown)."""
        return [(r["method"], r["route"], r["status"], r["body"])
                for r in self.admin("GET", "replies")]

    def set_online(self, node: str, online: bool) -> None:
        self.admin("POST", f"nodes/{node}/online", {"online": online})

    def reset_faults(self) -> None:
        self.admin("POST", "reset-faults")

    def replicas(self, rd: str) -> list[dict[str, Any]]:
        """``linstor resource list -r <rd>``: every resource of ``rd``."""
        return [r for r in self.get("/v1/view/resources", resources=[rd])
                if r["name"].upper() == rd.upper()]

    def diskful(self, rd: str) -> dict[str, list[str]]:
        """Node -> storage pools of the volumes of each diskful replica of ``rd``."""
        out = {}
        for res in self.replicas(rd):
            if "DISKLESS" in (res.get("flags") or []):
                continue
            out[res["node_name"]] = [v.get("storage_pool_name") for v in res.get("volumes", [])]
        return out

    def purge(self) -> list[str]:
        """Delete every resource definition and snapshot straight in LINSTOR (test fallback)."""
        state = self.sim_state()
        for snap in state["snapshots"]:
            rd, name = snap.split("/", 1)
            self.http.delete(f"{self.url}/v1/resource-definitions/{rd}/snapshots/{name}",
                             timeout=30)
        for rd in state["resource_definitions"]:
            self.http.delete(f"{self.url}/v1/resource-definitions/{rd}", timeout=30)
        return state["resource_definitions"] + state["snapshots"]

    def segments(self, node: str) -> dict[str, str]:
        info = self.nodes[node].node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(),
                                                 timeout=RPC_TIMEOUT)
        assert info.node_id == node
        return dict(info.accessible_topology.segments)

    def controller_caps(self) -> set[int]:
        assert self.controller is not None
        caps = self.controller.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
        return {c.rpc.type for c in caps.capabilities}


# ---------------------------------------------------------------------------------------------
# Mounts under the kubelet root
# ---------------------------------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    return [e.mount_point for e in MountTable.read().under(str(root))]


def force_unmount_all(root: Path) -> list[str]:
    """``umount -R`` style: unmount everything under ``root``, newest first. What was mounted."""
    found: list[str] = []
    for _ in range(64):
        under = MountTable.read().under(str(root))
        if not under:
            break
        top = max(under, key=lambda e: e.mount_id)
        found.append(top.mount_point)
        subprocess.run(["umount", "-l", top.mount_point], check=False, capture_output=True)
    return found


# ---------------------------------------------------------------------------------------------
# Volumes, claims and the CO roles
# ---------------------------------------------------------------------------------------------


@dataclass
class Volume:
    """A bound PV: what the provisioner wrote into it."""

    pv_name: str
    pvc_name: str
    namespace: str
    volume_id: str
    capacity_bytes: int
    volume_context: dict[str, str]
    accessible_topology: list[dict[str, str]]
    capability: csi_pb2.VolumeCapability
    storage_class: dict[str, Any]

    @property
    def fs_type(self) -> str:
        return self.capability.mount.fs_type

    def topology_nodes(self) -> set[str]:
        return {seg[HOSTNAME_KEY] for seg in self.accessible_topology if HOSTNAME_KEY in seg}


@dataclass
class Snapshot:
    name: str
    snapshot_id: str
    source_volume_id: str
    size_bytes: int


@dataclass
class Tracker:
    """What a test created, so a failing test still cleans up."""

    volumes: dict[str, Volume] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    attachments: set[tuple[str, str]] = field(default_factory=set)  # (volume_id, node)


class Provisioner:
    """external-provisioner with ``--extra-create-metadata --default-fstype=ext4``."""

    def __init__(self, cluster: Cluster, tracker: Tracker, default_fstype: str = "ext4") -> None:
        self.cluster = cluster
        self.tracker = tracker
        self.default_fstype = default_fstype
        assert cluster.controller is not None
        self.stub = cluster.controller.controller

    def _topology(self, selected: str | None, pvc_name: str) -> csi_pb2.TopologyRequirement:
        segs = [self.cluster.segments(n) for n in self.cluster.node_names]
        unique: list[dict[str, str]] = []
        for s in segs:
            if s not in unique:
                unique.append(s)
        if selected is not None:
            chosen = self.cluster.segments(selected)
            preferred = [chosen] + [s for s in unique if s != chosen]
        else:
            # Immediate binding: the provisioner starts at a point hashed from the claim name.
            start = int(hashlib.sha256(pvc_name.encode()).hexdigest(), 16) % len(unique)
            preferred = unique[start:] + unique[:start]
        return csi_pb2.TopologyRequirement(
            requisite=[csi_pb2.Topology(segments=s) for s in unique],
            preferred=[csi_pb2.Topology(segments=s) for s in preferred],
        )

    def capability(self, sc: dict[str, Any], pvc: dict[str, Any]) -> csi_pb2.VolumeCapability:
        params = sc.get("parameters") or {}
        modes = pvc["spec"].get("accessModes") or ["ReadWriteOnce"]
        assert len(modes) == 1, "one access mode per claim in these stories"
        caps = self.cluster.controller_caps()
        mode = {
            "ReadWriteOnce": Mode.SINGLE_NODE_MULTI_WRITER
            if CtrlCap.SINGLE_NODE_MULTI_WRITER in caps else Mode.SINGLE_NODE_WRITER,
            "ReadWriteOncePod": Mode.SINGLE_NODE_SINGLE_WRITER
            if CtrlCap.SINGLE_NODE_MULTI_WRITER in caps else Mode.SINGLE_NODE_WRITER,
            "ReadOnlyMany": Mode.MULTI_NODE_READER_ONLY,
            "ReadWriteMany": Mode.MULTI_NODE_MULTI_WRITER,
        }[modes[0]]
        access = csi_pb2.VolumeCapability.AccessMode(mode=mode)
        if pvc["spec"].get("volumeMode") == "Block":
            return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                            access_mode=access)
        fstype = params.get("csi.storage.k8s.io/fstype") or self.default_fstype
        return csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(
                fs_type=fstype, mount_flags=list(sc.get("mountOptions") or [])),
            access_mode=access)

    def request(self, sc: dict[str, Any], pvc: dict[str, Any], *, namespace: str = "default",
                selected_node: str | None = None, pv_name: str | None = None,
                snapshot: Snapshot | None = None) -> csi_pb2.CreateVolumeRequest:
        pvc_name = pvc["metadata"]["name"]
        pv_name = pv_name or f"pvc-{uuid.uuid4()}"
        params = {k: str(v) for k, v in (sc.get("parameters") or {}).items()
                  if not k.startswith("csi.storage.k8s.io/")}
        params.update({
            "csi.storage.k8s.io/pvc/name": pvc_name,
            "csi.storage.k8s.io/pvc/namespace": namespace,
            "csi.storage.k8s.io/pv/name": pv_name,
        })
        binding = sc.get("volumeBindingMode", "Immediate")
        if binding == "WaitForFirstConsumer":
            assert selected_node, "WaitForFirstConsumer: the scheduler must select a node first"
        req = csi_pb2.CreateVolumeRequest(
            name=pv_name,
            capacity_range=csi_pb2.CapacityRange(
                required_bytes=quantity(pvc["spec"]["resources"]["requests"]["storage"])),
            volume_capabilities=[self.capability(sc, pvc)],
            parameters=params,
            accessibility_requirements=self._topology(selected_node, pvc_name),
        )
        if snapshot is not None:
            req.volume_content_source.snapshot.snapshot_id = snapshot.snapshot_id
        return req

    def create(self, sc: dict[str, Any], pvc: dict[str, Any], **kwargs: Any) -> Volume:
        req = self.request(sc, pvc, **kwargs)
        return self.create_from(req, sc, pvc, kwargs.get("namespace", "default"))

    def create_from(self, req: csi_pb2.CreateVolumeRequest, sc: dict[str, Any],
                    pvc: dict[str, Any], namespace: str = "default") -> Volume:
        reply = self.stub.CreateVolume(req, timeout=RPC_TIMEOUT)
        v = reply.volume
        vol = Volume(
            pv_name=req.name, pvc_name=pvc["metadata"]["name"], namespace=namespace,
            volume_id=v.volume_id, capacity_bytes=v.capacity_bytes,
            volume_context=dict(v.volume_context),
            accessible_topology=[dict(t.segments) for t in v.accessible_topology],
            capability=req.volume_capabilities[0], storage_class=sc)
        self.tracker.volumes[vol.volume_id] = vol
        return vol

    def delete(self, vol: Volume) -> None:
        self.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id),
                               timeout=RPC_TIMEOUT)
        self.tracker.volumes.pop(vol.volume_id, None)


class Attacher:
    """external-attacher: VolumeAttachment -> ControllerPublish/Unpublish."""

    def __init__(self, cluster: Cluster, tracker: Tracker) -> None:
        self.cluster = cluster
        self.tracker = tracker
        assert cluster.controller is not None
        self.stub = cluster.controller.controller

    def attach(self, vol: Volume, node: str) -> dict[str, str]:
        reply = self.stub.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=vol.volume_id, node_id=node, volume_capability=vol.capability,
            readonly=False, volume_context=vol.volume_context), timeout=RPC_TIMEOUT)
        self.tracker.attachments.add((vol.volume_id, node))
        return dict(reply.publish_context)

    def detach(self, vol: Volume | str, node: str) -> None:
        vid = vol if isinstance(vol, str) else vol.volume_id
        self.stub.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id=vid, node_id=node), timeout=RPC_TIMEOUT)
        self.tracker.attachments.discard((vid, node))


class Resizer:
    """external-resizer: PVC size edit -> ControllerExpandVolume."""

    def __init__(self, cluster: Cluster) -> None:
        assert cluster.controller is not None
        self.stub = cluster.controller.controller

    def expand(self, vol: Volume, new_bytes: int) -> csi_pb2.ControllerExpandVolumeResponse:
        reply = self.stub.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=new_bytes),
            volume_capability=vol.capability), timeout=RPC_TIMEOUT)
        vol.capacity_bytes = reply.capacity_bytes
        return reply


class Snapshotter:
    """external-snapshotter with ``--extra-create-metadata``; retries until ready_to_use."""

    def __init__(self, cluster: Cluster, tracker: Tracker) -> None:
        self.tracker = tracker
        assert cluster.controller is not None
        self.stub = cluster.controller.controller

    def create(self, vol: Volume, snapshot_class: dict[str, Any], name: str,
               namespace: str = "default", timeout: float = 60.0) -> Snapshot:
        content = f"snapcontent-{uuid.uuid4()}"
        snap_name = f"snapshot-{uuid.uuid4()}"
        params = {k: str(v) for k, v in (snapshot_class.get("parameters") or {}).items()
                  if not k.startswith("csi.storage.k8s.io/")}
        params.update({
            "csi.storage.k8s.io/volumesnapshot/name": name,
            "csi.storage.k8s.io/volumesnapshot/namespace": namespace,
            "csi.storage.k8s.io/volumesnapshotcontent/name": content,
        })
        req = csi_pb2.CreateSnapshotRequest(source_volume_id=vol.volume_id, name=snap_name,
                                            parameters=params)
        end = time.monotonic() + timeout
        while True:
            s = self.stub.CreateSnapshot(req, timeout=RPC_TIMEOUT).snapshot
            snap = Snapshot(snap_name, s.snapshot_id, s.source_volume_id, s.size_bytes)
            self.tracker.snapshots[snap.snapshot_id] = snap
            if s.ready_to_use:
                return snap
            assert time.monotonic() < end, f"snapshot {snap_name} not ready after {timeout}s"
            time.sleep(0.5)

    def delete(self, snap: Snapshot) -> None:
        self.stub.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id),
                                 timeout=RPC_TIMEOUT)
        self.tracker.snapshots.pop(snap.snapshot_id, None)


def staging_path(root: Path, volume_id: str) -> Path:
    digest = hashlib.sha256(volume_id.encode()).hexdigest()
    return root / "plugins" / "kubernetes.io" / "csi" / DRIVER / digest / "globalmount"


def target_path(root: Path, pod_uid: str, pv_name: str) -> Path:
    return root / "pods" / pod_uid / "volumes" / "kubernetes.io~csi" / pv_name / "mount"


def block_staging_path(root: Path, pv_name: str) -> Path:
    """kubelet's staging directory for a raw block volume."""
    return root / "plugins" / "kubernetes.io" / "csi" / "volumeDevices" / "staging" / pv_name


def block_target_path(root: Path, pod_uid: str, pv_name: str) -> Path:
    """kubelet's publish path for a raw block volume: a file the driver creates."""
    return (root / "plugins" / "kubernetes.io" / "csi" / "volumeDevices" / "publish" / pv_name
            / pod_uid)


class Kubelet:
    """kubelet's CSI volume manager on one node (its own kubelet root under the cluster's)."""

    def __init__(self, cluster: Cluster, node: str) -> None:
        self.cluster = cluster
        self.node = node
        self.stub = cluster.nodes[node].node
        self.root = cluster.kubelet_root / node
        self.staged: dict[str, tuple[Volume, dict[str, str]]] = {}
        self.published: dict[tuple[str, str], Volume] = {}  # (volume_id, pod uid)

    def caps(self) -> set[int]:
        reply = self.stub.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(),
                                              timeout=RPC_TIMEOUT)
        return {c.rpc.type for c in reply.capabilities}

    def staging(self, vol: Volume) -> Path:
        if vol.capability.HasField("block"):
            return block_staging_path(self.root, vol.pv_name)
        return staging_path(self.root, vol.volume_id)

    def target(self, vol: Volume, pod_uid: str) -> Path:
        if vol.capability.HasField("block"):
            return block_target_path(self.root, pod_uid, vol.pv_name)
        return target_path(self.root, pod_uid, vol.pv_name)

    def stage(self, vol: Volume, publish_context: dict[str, str]) -> Path:
        assert NodeCap.STAGE_UNSTAGE_VOLUME in self.caps()
        path = self.staging(vol)
        path.mkdir(parents=True, exist_ok=True)  # the CO creates the staging directory
        (path.parent / "vol_data.json").write_text(json.dumps(
            {"driverName": DRIVER, "volumeHandle": vol.volume_id}))
        self.stub.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=vol.volume_id, publish_context=publish_context,
            staging_target_path=str(path), volume_capability=vol.capability,
            volume_context=vol.volume_context), timeout=RPC_TIMEOUT)
        self.staged[vol.volume_id] = (vol, publish_context)
        return path

    def publish(self, vol: Volume, pod_uid: str | None = None) -> tuple[str, Path]:
        """Mount the staged volume for a pod; (pod uid, target path)."""
        pod_uid = pod_uid or str(uuid.uuid4())
        _, publish_context = self.staged[vol.volume_id]
        target = self.target(vol, pod_uid)
        target.parent.mkdir(parents=True, exist_ok=True)  # the SP creates the target itself
        self.stub.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=vol.volume_id, publish_context=publish_context,
            staging_target_path=str(self.staging(vol)), target_path=str(target),
            volume_capability=vol.capability, readonly=False,
            volume_context=vol.volume_context), timeout=RPC_TIMEOUT)
        self.published[(vol.volume_id, pod_uid)] = vol
        return pod_uid, target

    def mount(self, vol: Volume, publish_context: dict[str, str]) -> tuple[str, Path]:
        """Stage (once per node) and publish for a new pod."""
        if vol.volume_id not in self.staged:
            self.stage(vol, publish_context)
        return self.publish(vol)

    def unpublish(self, vol: Volume, pod_uid: str) -> None:
        target = self.target(vol, pod_uid)
        self.stub.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=vol.volume_id, target_path=str(target)), timeout=RPC_TIMEOUT)
        self.published.pop((vol.volume_id, pod_uid), None)
        if target.parent.exists() and not vol.capability.HasField("block"):
            for leftover in (target, target.parent):  # kubelet removes the pod's volume dir
                if leftover.is_dir() and not os.path.ismount(leftover):
                    try:
                        leftover.rmdir()
                    except OSError:
                        pass

    def unstage(self, vol: Volume) -> None:
        path = self.staging(vol)
        self.stub.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=vol.volume_id, staging_target_path=str(path)), timeout=RPC_TIMEOUT)
        self.staged.pop(vol.volume_id, None)

    def unmount(self, vol: Volume, pod_uid: str) -> None:
        """Pod gone: unpublish, and unstage when no pod on this node uses the volume any more."""
        self.unpublish(vol, pod_uid)
        if not any(vid == vol.volume_id for vid, _ in self.published):
            self.unstage(vol)

    def stats(self, vol: Volume, pod_uid: str) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self.stub.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=vol.volume_id, volume_path=str(self.target(vol, pod_uid)),
            staging_target_path=str(self.staging(vol))), timeout=RPC_TIMEOUT)

    def expand(self, vol: Volume, pod_uid: str, new_bytes: int) -> csi_pb2.NodeExpandVolumeResponse:
        assert NodeCap.EXPAND_VOLUME in self.caps()
        return self.stub.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
            volume_id=vol.volume_id, volume_path=str(self.target(vol, pod_uid)),
            capacity_range=csi_pb2.CapacityRange(required_bytes=new_bytes),
            staging_target_path=str(self.staging(vol)), volume_capability=vol.capability),
            timeout=RPC_TIMEOUT)

    def cleanup(self) -> list[str]:
        """Best effort: unpublish/unstage whatever is left through the driver; errors seen."""
        errors = []
        for (vid, pod), vol in list(self.published.items()):
            try:
                self.unpublish(vol, pod)
            except grpc.RpcError as e:
                errors.append(f"{self.node} NodeUnpublish {vid}: {e.code().name} {e.details()}")
                self.published.pop((vid, pod), None)
        for vid, (vol, _) in list(self.staged.items()):
            try:
                self.unstage(vol)
            except grpc.RpcError as e:
                errors.append(f"{self.node} NodeUnstage {vid}: {e.code().name} {e.details()}")
                self.staged.pop(vid, None)
        return errors


# ---------------------------------------------------------------------------------------------
# Data written by a "pod"
# ---------------------------------------------------------------------------------------------


def write_files(target: Path, prefix: str, count: int = 4, size: int = 256 * 1024,
                seed: int = 0) -> dict[str, str]:
    """Write ``count`` files of random bytes, fsync each and the directory; name -> sha256."""
    sums = {}
    rnd = __import__("random").Random(f"{prefix}-{seed}")
    for i in range(count):
        data = rnd.randbytes(size + i * 4093)
        name = f"{prefix}-{i}.bin"
        with open(target / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        sums[name] = hashlib.sha256(data).hexdigest()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sums


def checksums(target: Path, names: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in names:
        with open(target / name, "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def sync_fs(target: Path) -> None:
    """``sync -f``: flush the filesystem (what a pod's writes reach before it is killed)."""
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.sync()
    finally:
        os.close(fd)


def fs_size(target: Path) -> int:
    st = os.statvfs(target)
    return st.f_blocks * st.f_frsize


@dataclass
class Story:
    """Everything a story needs: the cluster, the CO roles and a kubelet per node."""

    cluster: Cluster
    tracker: Tracker
    provisioner: Provisioner
    attacher: Attacher
    resizer: Resizer
    snapshotter: Snapshotter
    kubelets: dict[str, Kubelet]

    @classmethod
    def on(cls, cluster: Cluster) -> Story:
        t = Tracker()
        return cls(cluster, t, Provisioner(cluster, t), Attacher(cluster, t), Resizer(cluster),
                   Snapshotter(cluster, t), {n: Kubelet(cluster, n) for n in cluster.node_names})

    def run_pod(self, vol: Volume, node: str) -> tuple[str, Path]:
        """Schedule a pod using ``vol`` on ``node``: attach, stage, publish."""
        ctx = self.attacher.attach(vol, node)
        return self.kubelets[node].mount(vol, ctx)

    def delete_pod(self, vol: Volume, node: str, pod_uid: str) -> None:
        """The pod is deleted: unpublish, unstage, then the attacher detaches."""
        self.kubelets[node].unmount(vol, pod_uid)
        self.attacher.detach(vol, node)

    def cleanup(self) -> list[str]:
        """Undo what the test left through the driver, like the CO would. Problems found."""
        problems = []
        for k in self.kubelets.values():
            problems += k.cleanup()
        left = force_unmount_all(self.cluster.kubelet_root)
        problems += [f"mount left under the kubelet root: {m}" for m in left]
        for vid, node in sorted(self.tracker.attachments):
            try:
                self.attacher.detach(vid, node)
            except grpc.RpcError as e:
                problems.append(f"ControllerUnpublish {vid} {node}: {e.code().name} {e.details()}")
        for snap in list(self.tracker.snapshots.values()):
            try:
                self.snapshotter.delete(snap)
            except grpc.RpcError as e:
                problems.append(f"DeleteSnapshot {snap.snapshot_id}: {e.code().name} "
                                f"{e.details()}")
        for vol in list(self.tracker.volumes.values()):
            try:
                self.provisioner.delete(vol)
            except grpc.RpcError as e:
                problems.append(f"DeleteVolume {vol.volume_id}: {e.code().name} {e.details()}")
        return problems


def threads(fns: list[Any]) -> list[Any]:
    """Run callables concurrently; their results in order (re-raise the first error)."""
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException | None] = [None] * len(fns)

    def run(i: int) -> None:
        try:
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results


def iter_lines(text: str, *words: str) -> Iterator[str]:
    """Log lines that contain every word (case-insensitive)."""
    for line in text.splitlines():
        if all(w.lower() in line.lower() for w in words):
            yield line

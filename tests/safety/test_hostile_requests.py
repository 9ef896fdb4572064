"""Malformed and hostile requests across every RPC get deliberate codes and touch nothing.

One driver process (all services, the embedded simulator, real loop devices, ``--kubelet-dir``
under the test's temp dir) holds three real volumes: two ext4 filesystems staged and published,
one raw block volume staged and published, laid out the way kubelet lays them out. Then more than
fifty requests that a confused or hostile caller could send — foreign and system paths (``/``,
``/proc``, ``..``, a symlink out of the kubelet dir, a NUL byte), paths of another volume, unknown
and malformed ids, contradictory capabilities, huge and negative sizes, unknown parameters — go
to every service. Each must be answered with the code the CSI spec (or, where it is silent,
docs/reliability.md) gives it, never UNKNOWN or INTERNAL; afterwards the mount table, the loop
devices and LINSTOR's objects are exactly as before, and the driver still serves.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.nodeops.mountinfo import MountTable
from tests.prerequisites import require
from tests.sanity import served

require(os.geteuid() == 0, "hostile-request tests need root (loop devices and mounts)")

C = grpc.StatusCode
Mode = csi_pb2.VolumeCapability.AccessMode
DRIVER = "linstor.csi.linbit.com"
MIB = 1024 * 1024


def _cap(kind: str = "mount", mode: int = Mode.SINGLE_NODE_WRITER, fs: str = "ext4"
         ) -> csi_pb2.VolumeCapability:
    if kind == "block":
        return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                        access_mode=Mode(mode=mode))
    if kind == "none":
        return csi_pb2.VolumeCapability(access_mode=Mode(mode=mode))
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs),
                                    access_mode=Mode(mode=mode))


@dataclass
class Vol:
    id: str
    block: bool
    context: dict[str, str]
    publish_context: dict[str, str]
    staging: str
    target: str


@dataclass
class Env:
    base: Path
    kubelet: Path
    url: str
    node_id: str
    ctl: Any
    node: Any
    ident: Any
    vols: dict[str, Vol]
    log: Path


def _mounts() -> set[tuple[str, str, str]]:
    return {(e.mount_point, e.source, f"{e.major}:{e.minor}") for e in MountTable.read()}


def _loops() -> set[str]:
    out = subprocess.run(["losetup", "-J"], capture_output=True, text=True, check=False).stdout
    if not out.strip():
        return set()
    return {f"{d['name']}={d.get('back-file') or ''}" for d in json.loads(out)["loopdevices"]}


def _linstor(url: str) -> dict[str, list[str]]:
    s = requests.Session()
    rds = sorted(rd["name"] for rd in s.get(url + "/v1/resource-definitions", timeout=10).json())
    snaps = sorted(f"{x['resource_name']}/{x['name']}"
                   for x in s.get(url + "/v1/view/snapshots", timeout=10).json())
    rscs = sorted(f"{r['name']}@{r['node_name']}"
                  for r in s.get(url + "/v1/view/resources", timeout=10).json())
    rgs = sorted(g["name"] for g in s.get(url + "/v1/resource-groups", timeout=10).json())
    return {"rds": rds, "snapshots": snaps, "resources": rscs, "rgs": rgs}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("hostile")
    kubelet = base / "kubelet"
    kubelet.mkdir()
    with served(base, "--linstor-endpoint", "embedded", "--sim-device-dir", str(base / "dev"),
                "--sim-state-dir", str(base / "state"), "--kubelet-dir", str(kubelet),
                "--log-level", "debug") as drv:
        url = drv.embedded_url()
        channel = grpc.insecure_channel(f"unix://{drv.sock}")
        ctl = csi_pb2_grpc.ControllerStub(channel)
        node = csi_pb2_grpc.NodeStub(channel)
        ident = csi_pb2_grpc.IdentityStub(channel)
        node_id = node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=30).node_id
        vols: dict[str, Vol] = {}
        env = Env(base, kubelet, url, node_id, ctl, node, ident, vols, drv.log)
        try:
            for name, block in (("fs-a", False), ("fs-b", False), ("blk-c", True)):
                vols[name] = _provision(env, name, block)
            yield env
        finally:
            for v in vols.values():
                _teardown(env, v)
            channel.close()


def _provision(env: Env, name: str, block: bool) -> Vol:
    cap = _cap("block" if block else "mount")
    created = env.ctl.CreateVolume(csi_pb2.CreateVolumeRequest(
        name=f"pvc-hostile-{name}", capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MIB),
        volume_capabilities=[cap], parameters={"placementCount": "1"},
        accessibility_requirements=csi_pb2.TopologyRequirement(
            requisite=[csi_pb2.Topology(segments={"kubernetes.io/hostname": env.node_id})])),
        timeout=60).volume
    vid = created.volume_id
    pub = env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vid, node_id=env.node_id, volume_capability=cap,
        volume_context=created.volume_context), timeout=60)
    pctx = dict(pub.publish_context)
    csi = env.kubelet / "plugins" / "kubernetes.io" / "csi"
    if block:
        staging = csi / "volumeDevices" / "staging" / vid
        target = csi / "volumeDevices" / "publish" / vid / "pod-1"
    else:
        staging = csi / DRIVER / f"{abs(hash(vid)):x}" / "globalmount"
        target = env.kubelet / "pods" / f"pod-{name}" / "volumes" / "kubernetes.io~csi" / vid \
            / "mount"
    staging.mkdir(parents=True, exist_ok=True)
    if not block:
        target.parent.mkdir(parents=True, exist_ok=True)
    env.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vid, publish_context=pctx, staging_target_path=str(staging),
        volume_capability=cap, volume_context=created.volume_context), timeout=120)
    env.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=vid, publish_context=pctx, staging_target_path=str(staging),
        target_path=str(target), volume_capability=cap,
        volume_context=created.volume_context), timeout=60)
    return Vol(vid, block, dict(created.volume_context), pctx, str(staging), str(target))


def _teardown(env: Env, v: Vol) -> None:
    env.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=v.id, target_path=v.target), timeout=60)
    env.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=v.id, staging_target_path=v.staging), timeout=60)
    env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=v.id, node_id=env.node_id), timeout=60)
    env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=v.id), timeout=60)


# ---------------------------------------------------------------------------------------------
# The cases: (name, service, method, request builder, the codes that are right for it)

Case = tuple[str, str, str, Callable[[Env], Any], set[grpc.StatusCode]]
BAD_ARG = {C.INVALID_ARGUMENT}
CASES: list[Case] = []


def case(name: str, service: str, method: str, codes: set[grpc.StatusCode]
         ) -> Callable[[Callable[[Env], Any]], Callable[[Env], Any]]:
    def add(build: Callable[[Env], Any]) -> Callable[[Env], Any]:
        CASES.append((name, service, method, build, codes))
        return build
    return add


def _a(env: Env) -> Vol:
    return env.vols["fs-a"]


def _b(env: Env) -> Vol:
    return env.vols["fs-b"]


def _c(env: Env) -> Vol:
    return env.vols["blk-c"]


def _create(name: str = "pvc-x", size: int = 64 * MIB, caps: Any = None, **kw: Any
            ) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        volume_capabilities=[_cap()] if caps is None else caps, **kw)


# -- Controller: CreateVolume
for _name, _build, _codes in [
    ("create: no name", lambda e: _create(name=""), BAD_ARG),
    ("create: no capabilities", lambda e: _create(caps=[]), BAD_ARG),
    ("create: capability without access type", lambda e: _create(caps=[_cap("none")]), BAD_ARG),
    ("create: access mode UNKNOWN", lambda e: _create(caps=[_cap(mode=Mode.UNKNOWN)]), BAD_ARG),
    ("create: negative size", lambda e: _create(size=-1), {C.INVALID_ARGUMENT, C.OUT_OF_RANGE}),
    ("create: limit below required", lambda e: csi_pb2.CreateVolumeRequest(
        name="pvc-x", volume_capabilities=[_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=2 * 64 * MIB, limit_bytes=64 * MIB)),
     {C.INVALID_ARGUMENT, C.OUT_OF_RANGE}),
    ("create: 8 EiB", lambda e: _create(size=2**63 - 1),
     {C.OUT_OF_RANGE, C.RESOURCE_EXHAUSTED}),
    ("create: ext3 (the node cannot grow it)", lambda e: _create(caps=[_cap(fs="ext3")]),
     BAD_ARG),
    ("create: btrfs", lambda e: _create(caps=[_cap(fs="btrfs")]), BAD_ARG),
    ("create: unknown fs", lambda e: _create(caps=[_cap(fs="ntfs; rm -rf /")]), BAD_ARG),
    ("create: filesystem for several writers",
     lambda e: _create(caps=[_cap(mode=Mode.MULTI_NODE_MULTI_WRITER)]), BAD_ARG),
    ("create: unknown parameter", lambda e: _create(parameters={"placementCuont": "2"}), BAD_ARG),
    ("create: non-numeric placementCount",
     lambda e: _create(parameters={"placementCount": "three"}), BAD_ARG),
    ("create: negative placementCount",
     lambda e: _create(parameters={"placementCount": "-1"}), BAD_ARG),
    ("create: from an unknown snapshot", lambda e: _create(
        volume_content_source=csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id="pvc-nope/snap"))),
     {C.NOT_FOUND}),
    ("create: from an unknown volume", lambda e: _create(
        volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id="pvc-nope"))),
     {C.NOT_FOUND}),
    ("create: source id with a path", lambda e: _create(
        volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id="../" + _a(e).id))),
     {C.NOT_FOUND, C.INVALID_ARGUMENT}),
]:
    case(_name, "ctl", "CreateVolume", _codes)(_build)


# -- Controller: the rest
for _name, _method, _build, _codes in [
    ("delete: empty id", "DeleteVolume", lambda e: csi_pb2.DeleteVolumeRequest(), BAD_ARG),
    ("publish: unknown volume", "ControllerPublishVolume",
     lambda e: csi_pb2.ControllerPublishVolumeRequest(
         volume_id="pvc-nope", node_id=e.node_id, volume_capability=_cap()), {C.NOT_FOUND}),
    ("publish: unknown node", "ControllerPublishVolume",
     lambda e: csi_pb2.ControllerPublishVolumeRequest(
         volume_id=_a(e).id, node_id="node-nope", volume_capability=_cap()), {C.NOT_FOUND}),
    ("publish: node id with a path", "ControllerPublishVolume",
     lambda e: csi_pb2.ControllerPublishVolumeRequest(
         volume_id=_a(e).id, node_id="../" + _b(e).id, volume_capability=_cap()),
     {C.NOT_FOUND, C.INVALID_ARGUMENT}),
    ("publish: volume id with a path", "ControllerPublishVolume",
     lambda e: csi_pb2.ControllerPublishVolumeRequest(
         volume_id=f"x/../{_a(e).id}", node_id=e.node_id, volume_capability=_cap()),
     {C.NOT_FOUND, C.INVALID_ARGUMENT}),
    ("publish: no capability", "ControllerPublishVolume",
     lambda e: csi_pb2.ControllerPublishVolumeRequest(volume_id=_a(e).id, node_id=e.node_id),
     BAD_ARG),
    ("publish: block volume as a filesystem", "ControllerPublishVolume",
     lambda e: csi_pb2.ControllerPublishVolumeRequest(
         volume_id=_c(e).id, node_id=e.node_id, volume_capability=_cap()),
     {C.FAILED_PRECONDITION}),
    ("unpublish: empty volume id", "ControllerUnpublishVolume",
     lambda e: csi_pb2.ControllerUnpublishVolumeRequest(node_id=e.node_id), BAD_ARG),
    ("expand: unknown volume", "ControllerExpandVolume",
     lambda e: csi_pb2.ControllerExpandVolumeRequest(
         volume_id="pvc-nope", capacity_range=csi_pb2.CapacityRange(required_bytes=MIB)),
     {C.NOT_FOUND}),
    ("expand: no capacity range", "ControllerExpandVolume",
     lambda e: csi_pb2.ControllerExpandVolumeRequest(volume_id=_a(e).id), BAD_ARG),
    ("expand: negative size", "ControllerExpandVolume",
     lambda e: csi_pb2.ControllerExpandVolumeRequest(
         volume_id=_a(e).id, capacity_range=csi_pb2.CapacityRange(required_bytes=-5)),
     {C.INVALID_ARGUMENT, C.OUT_OF_RANGE}),
    ("expand: 8 EiB", "ControllerExpandVolume",
     lambda e: csi_pb2.ControllerExpandVolumeRequest(
         volume_id=_a(e).id, capacity_range=csi_pb2.CapacityRange(required_bytes=2**63 - 1)),
     {C.OUT_OF_RANGE, C.RESOURCE_EXHAUSTED}),
    ("validate: unknown volume", "ValidateVolumeCapabilities",
     lambda e: csi_pb2.ValidateVolumeCapabilitiesRequest(
         volume_id="pvc-nope", volume_capabilities=[_cap()]), {C.NOT_FOUND}),
    ("validate: no capabilities", "ValidateVolumeCapabilities",
     lambda e: csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=_a(e).id), BAD_ARG),
    ("get volume: unknown", "ControllerGetVolume",
     lambda e: csi_pb2.ControllerGetVolumeRequest(volume_id="pvc-nope"), {C.NOT_FOUND}),
    ("get volume: 1 KiB unicode id", "ControllerGetVolume",
     lambda e: csi_pb2.ControllerGetVolumeRequest(volume_id="ü" * 512),
     {C.NOT_FOUND, C.INVALID_ARGUMENT}),
    ("list volumes: forged token", "ListVolumes",
     lambda e: csi_pb2.ListVolumesRequest(starting_token="../../etc"), {C.ABORTED}),
    ("list volumes: negative page", "ListVolumes",
     lambda e: csi_pb2.ListVolumesRequest(max_entries=-1), BAD_ARG),
    ("list snapshots: forged token", "ListSnapshots",
     lambda e: csi_pb2.ListSnapshotsRequest(starting_token="zzz"), {C.ABORTED}),
    ("snapshot: no source", "CreateSnapshot",
     lambda e: csi_pb2.CreateSnapshotRequest(name="snapshot-x"), BAD_ARG),
    ("snapshot: unknown source", "CreateSnapshot",
     lambda e: csi_pb2.CreateSnapshotRequest(name="snapshot-x", source_volume_id="pvc-nope"),
     {C.NOT_FOUND}),
    ("snapshot: unknown parameter", "CreateSnapshot",
     lambda e: csi_pb2.CreateSnapshotRequest(name="snapshot-x", source_volume_id=_a(e).id,
                                             parameters={"snap.linstor.csi.linbit.com/typo": "1"}),
     BAD_ARG),
    ("delete snapshot: empty id", "DeleteSnapshot",
     lambda e: csi_pb2.DeleteSnapshotRequest(), BAD_ARG),
    ("modify: unknown parameter", "ControllerModifyVolume",
     lambda e: csi_pb2.ControllerModifyVolumeRequest(
         volume_id=_a(e).id, mutable_parameters={"nope": "1"}), BAD_ARG),
    ("modify: unknown volume", "ControllerModifyVolume",
     lambda e: csi_pb2.ControllerModifyVolumeRequest(
         volume_id="pvc-nope", mutable_parameters={"placementCount": "2"}), {C.NOT_FOUND}),
]:
    case(_name, "ctl", _method, _codes)(_build)


# -- Node: paths outside the kubelet dir, paths of another volume, bad devices and capabilities
def _stage(vol: Callable[[Env], Vol], staging: Callable[[Env], str] | None = None,
           cap: Any = None, pctx: Callable[[Env], dict[str, str]] | None = None,
           vid: str | None = None) -> Callable[[Env], Any]:
    def build(e: Env) -> Any:
        v = vol(e)
        return csi_pb2.NodeStageVolumeRequest(
            volume_id=vid or v.id, staging_target_path=staging(e) if staging else v.staging,
            publish_context=pctx(e) if pctx else v.publish_context,
            volume_capability=cap if cap is not None else _cap("block" if v.block else "mount"),
            volume_context=v.context)
    return build


def _fresh_staging(e: Env) -> str:
    path = e.kubelet / "plugins" / "kubernetes.io" / "csi" / DRIVER / "fresh" / "globalmount"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _escape_link(e: Env) -> str:
    link = e.kubelet / "pods" / "evil-link"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(e.base)  # inside: kubelet/pods/evil-link -> base (outside the kubelet dir)
    return str(link / "mnt")


def _no_fs_type(e: Env) -> dict[str, str]:
    """The publish context without its fs-type (which, as in LINBIT's driver, wins over the
    capability's), so the capability's file system is what the node must judge."""
    return {k: v for k, v in _a(e).publish_context.items()
            if k != "linstor.csi.linbit.com/fs-type"}


def _foreign_device(e: Env) -> dict[str, str]:
    pctx = dict(_a(e).publish_context)
    pctx["linstor.csi.linbit.com/device-path"] = _b(e).publish_context.get(
        "linstor.csi.linbit.com/device-path", "/dev/loop0")
    return pctx


for _name, _build, _codes in [
    ("stage: staging /", _stage(_a, lambda e: "/"), BAD_ARG),
    ("stage: staging /proc", _stage(_a, lambda e: "/proc"), BAD_ARG),
    ("stage: staging kubelet/../..", _stage(_a, lambda e: f"{e.kubelet}/../.."), BAD_ARG),
    ("stage: staging through a symlink out", _stage(_a, _escape_link), BAD_ARG),
    ("stage: NUL byte in the path", _stage(_a, lambda e: f"{e.kubelet}/x\x00y"), BAD_ARG),
    ("stage: unknown volume", _stage(_a, _fresh_staging, vid="pvc-nope"), {C.NOT_FOUND}),
    ("stage: another volume's device in publish_context",
     _stage(_a, _fresh_staging, pctx=_foreign_device), {C.FAILED_PRECONDITION}),
    ("stage: a block volume as a filesystem", _stage(_c, _fresh_staging, cap=_cap("mount")),
     {C.FAILED_PRECONDITION}),
    ("stage: no access type", _stage(_a, _fresh_staging, cap=_cap("none")), BAD_ARG),
    ("stage: filesystem for several writers",
     _stage(_a, _fresh_staging, cap=_cap(mode=Mode.MULTI_NODE_MULTI_WRITER)),
     {C.INVALID_ARGUMENT, C.FAILED_PRECONDITION}),
    ("stage: another volume's staging path", _stage(_a, lambda e: _b(e).staging),
     {C.ALREADY_EXISTS, C.FAILED_PRECONDITION}),
    ("stage: ext3 over the staged ext4", _stage(_a, cap=_cap(fs="ext3"), pctx=_no_fs_type),
     {C.INVALID_ARGUMENT, C.ALREADY_EXISTS, C.FAILED_PRECONDITION}),
]:
    case(_name, "node", "NodeStageVolume", _codes)(_build)


def _unstage(vid: Callable[[Env], str], path: Callable[[Env], str]) -> Callable[[Env], Any]:
    return lambda e: csi_pb2.NodeUnstageVolumeRequest(volume_id=vid(e),
                                                      staging_target_path=path(e))


def _unpublish(vid: Callable[[Env], str], path: Callable[[Env], str]) -> Callable[[Env], Any]:
    return lambda e: csi_pb2.NodeUnpublishVolumeRequest(volume_id=vid(e), target_path=path(e))


def _nope(e: Env) -> str:
    return "nope"


for _name, _method, _build, _codes in [
    ("unstage: / as volume nope", "NodeUnstageVolume", _unstage(_nope, lambda e: "/"), BAD_ARG),
    ("unstage: /proc", "NodeUnstageVolume", _unstage(lambda e: _a(e).id, lambda e: "/proc"),
     BAD_ARG),
    ("unstage: the kubelet dir's parent", "NodeUnstageVolume",
     _unstage(lambda e: _a(e).id, lambda e: str(e.kubelet.parent)), BAD_ARG),
    ("unstage: another volume's staging", "NodeUnstageVolume",
     _unstage(lambda e: _a(e).id, lambda e: _b(e).staging), {C.FAILED_PRECONDITION}),
    ("unstage: a staging path as volume nope", "NodeUnstageVolume",
     _unstage(_nope, lambda e: _b(e).staging), {C.FAILED_PRECONDITION, C.NOT_FOUND}),
    ("unstage: a publish target", "NodeUnstageVolume",
     _unstage(lambda e: _a(e).id, lambda e: _a(e).target), {C.FAILED_PRECONDITION}),
    ("unpublish: / as volume nope", "NodeUnpublishVolume", _unpublish(_nope, lambda e: "/"),
     BAD_ARG),
    ("unpublish: /proc", "NodeUnpublishVolume",
     _unpublish(lambda e: _a(e).id, lambda e: "/proc"), BAD_ARG),
    ("unpublish: .. out of the kubelet dir", "NodeUnpublishVolume",
     _unpublish(lambda e: _a(e).id, lambda e: f"{e.kubelet}/pods/../../.."), BAD_ARG),
    ("unpublish: through a symlink out", "NodeUnpublishVolume",
     _unpublish(lambda e: _a(e).id, _escape_link), BAD_ARG),
    ("unpublish: another volume's target", "NodeUnpublishVolume",
     _unpublish(lambda e: _a(e).id, lambda e: _b(e).target), {C.FAILED_PRECONDITION}),
    ("unpublish: a target as volume nope", "NodeUnpublishVolume",
     _unpublish(_nope, lambda e: _b(e).target), {C.FAILED_PRECONDITION, C.NOT_FOUND}),
    ("unpublish: another volume's staging mount", "NodeUnpublishVolume",
     _unpublish(lambda e: _a(e).id, lambda e: _b(e).staging), {C.FAILED_PRECONDITION}),
    ("unpublish: the block target as another volume", "NodeUnpublishVolume",
     _unpublish(lambda e: _a(e).id, lambda e: _c(e).target), {C.FAILED_PRECONDITION}),
    ("publish: target /", "NodePublishVolume", lambda e: csi_pb2.NodePublishVolumeRequest(
        volume_id=_a(e).id, staging_target_path=_a(e).staging, target_path="/",
        volume_capability=_cap(), publish_context=_a(e).publish_context), BAD_ARG),
    ("publish: target through a symlink out", "NodePublishVolume",
     lambda e: csi_pb2.NodePublishVolumeRequest(
         volume_id=_a(e).id, staging_target_path=_a(e).staging, target_path=_escape_link(e),
         volume_capability=_cap(), publish_context=_a(e).publish_context), BAD_ARG),
    ("publish: staging of another volume", "NodePublishVolume",
     lambda e: csi_pb2.NodePublishVolumeRequest(
         volume_id=_a(e).id, staging_target_path=_b(e).staging,
         target_path=str(e.kubelet / "pods" / "p9" / "mount"), volume_capability=_cap(),
         publish_context=_a(e).publish_context), {C.FAILED_PRECONDITION}),
    ("publish: staging /proc", "NodePublishVolume", lambda e: csi_pb2.NodePublishVolumeRequest(
        volume_id=_a(e).id, staging_target_path="/proc",
        target_path=str(e.kubelet / "pods" / "p9" / "mount"), volume_capability=_cap(),
        publish_context=_a(e).publish_context), BAD_ARG),
    ("stats: /", "NodeGetVolumeStats", lambda e: csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=_a(e).id, volume_path="/"), {C.INVALID_ARGUMENT, C.NOT_FOUND}),
    ("stats: a path that is not there", "NodeGetVolumeStats",
     lambda e: csi_pb2.NodeGetVolumeStatsRequest(
         volume_id=_a(e).id, volume_path=str(e.kubelet / "pods" / "gone")), {C.NOT_FOUND}),
    ("expand: /", "NodeExpandVolume", lambda e: csi_pb2.NodeExpandVolumeRequest(
        volume_id=_a(e).id, volume_path="/"), {C.INVALID_ARGUMENT, C.NOT_FOUND}),
    ("expand: another volume's target", "NodeExpandVolume",
     lambda e: csi_pb2.NodeExpandVolumeRequest(volume_id=_a(e).id, volume_path=_b(e).target),
     {C.FAILED_PRECONDITION, C.NOT_FOUND}),
    ("expand: a path that is not there", "NodeExpandVolume",
     lambda e: csi_pb2.NodeExpandVolumeRequest(
         volume_id=_a(e).id, volume_path=str(e.kubelet / "pods" / "gone")), {C.NOT_FOUND}),
]:
    case(_name, "node", _method, _codes)(_build)


def test_there_are_at_least_fifty_hostile_requests() -> None:
    assert len(CASES) >= 50, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES), "case names must be unique"


def test_hostile_requests_get_deliberate_codes_and_touch_nothing(env: Env) -> None:
    mounts, loops, linstor = _mounts(), _loops(), _linstor(env.url)
    stubs = {"ctl": env.ctl, "node": env.node}
    wrong: list[str] = []
    seen: dict[str, int] = {}
    for name, service, method, build, codes in CASES:
        try:
            getattr(stubs[service], method)(build(env), timeout=30)
            got = C.OK
            detail = ""
        except grpc.RpcError as err:
            got = err.code()
            detail = err.details() or ""
        seen[got.name] = seen.get(got.name, 0) + 1
        if got not in codes:
            wrong.append(f"{name}: {method} answered {got.name} ({detail!r}), "
                         f"want {sorted(c.name for c in codes)}")
        elif not detail:
            wrong.append(f"{name}: {method} answered {got.name} with no message")
    print(f"{len(CASES)} hostile requests: " + ", ".join(f"{k} {v}" for k, v in sorted(
        seen.items(), key=lambda kv: -kv[1])))
    assert not wrong, f"{len(wrong)} of {len(CASES)} answers are wrong:\n" + "\n".join(wrong)
    assert _mounts() == mounts, "a hostile request changed the mount table"
    assert _loops() == loops, "a hostile request changed the loop devices"
    assert _linstor(env.url) == linstor, "a hostile request changed LINSTOR's objects"
    env.ident.Probe(csi_pb2.ProbeRequest(), timeout=10)
    text = env.log.read_text()
    assert "Traceback" not in text, "the driver logged a traceback:\n" + text[-4000:]


def _read(path: str, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, 0)
    finally:
        os.close(fd)


def test_a_filesystem_volume_made_from_raw_block_data_is_never_formatted(env: Env) -> None:
    """Issue 12 item 3 through a source: a raw block volume's data may carry no signature. A
    filesystem volume cloned or restored from it mounts a filesystem it finds, but an empty-
    looking device is never formatted — whether the node learns it from the publish context or,
    without one (an older controller), from LINSTOR."""
    blk = _c(env)
    data = os.urandom(1 << 16)
    fd = os.open(blk.target, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    snap = env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name="snap-raw", source_volume_id=blk.id), timeout=60).snapshot
    sources = {
        "clone": csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=blk.id)),
        "restore": csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)),
    }
    made = []
    try:
        for kind, source in sources.items():
            vol = env.ctl.CreateVolume(_create(
                name=f"pvc-from-raw-{kind}", parameters={"placementCount": "1"},
                volume_content_source=source,
                accessibility_requirements=csi_pb2.TopologyRequirement(requisite=[
                    csi_pb2.Topology(segments={"kubernetes.io/hostname": env.node_id})])),
                timeout=60).volume
            made.append(vol.volume_id)
            pctx = dict(env.ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                volume_id=vol.volume_id, node_id=env.node_id, volume_capability=_cap()),
                timeout=60).publish_context)
            assert pctx.get("linstor.csi.linbit.com/may-format") == "false"
            staging = env.kubelet / "plugins" / "kubernetes.io" / "csi" / DRIVER / kind / "gm"
            staging.mkdir(parents=True, exist_ok=True)
            older = {k: v for k, v in pctx.items()
                     if k.rsplit("/", 1)[-1] not in ("may-format", "access-type")}
            for context in (pctx, older):
                with pytest.raises(grpc.RpcError) as err:
                    env.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
                        volume_id=vol.volume_id, publish_context=context,
                        staging_target_path=str(staging), volume_capability=_cap(),
                        volume_context=dict(vol.volume_context)), timeout=60)
                assert err.value.code() == C.FAILED_PRECONDITION, err.value.details()
                assert "never formatted" in err.value.details()
            device = pctx["linstor.csi.linbit.com/device-path"]
            assert _read(device, len(data)) == data, f"the {kind}'s raw data was changed"
            env.ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
                volume_id=vol.volume_id, node_id=env.node_id), timeout=60)
    finally:
        for vid in made:
            env.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)
        env.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id),
                               timeout=60)

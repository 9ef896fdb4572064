"""Snapshots shipped to S3 and to another LINSTOR cluster, restored elsewhere (issue 18).

Every test writes bytes to a volume's real block device, ships, and reads them back from a
volume restored in a second simulator: what a user doing disaster recovery sees."""

from __future__ import annotations

import json
import os
from typing import Any

import grpc
import pytest

from csi_linstor._gen import csi_pb2
from csi_linstor.deadline import Deadline
from tests.controller.conftest import BLOCK, create_req
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

MIB = 1024 * 1024
NS = "snap.linstor.csi.linbit.com/"
SECRETS = {"access-key": ACCESS_KEY, "secret-key": SECRET_KEY}


def s3_class(s3: S3Server, bucket: str, remote: str = "backup-s3", **extra: str) -> dict:
    return {NS + "type": "S3", NS + "remote-name": remote, NS + "s3-endpoint": s3.url,
            NS + "s3-bucket": bucket, NS + "s3-signing-region": REGION,
            NS + "s3-use-path-style": "true", **{NS + k: v for k, v in extra.items()}}


def volume(env: Any, name: str, size: int = 16 * MIB, **kw: Any) -> str:
    return env.ctl.CreateVolume(create_req(name, size, params={"placementCount": "1"},
                                           cap=BLOCK, **kw)).volume.volume_id


def write(env: Any, rd: str, offset: int, data: bytes) -> None:
    fd = os.open(env.sim.device_path(rd), os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(env: Any, rd: str, offset: int, length: int) -> bytes:
    fd = os.open(env.sim.device_path(rd), os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def snapshot(env: Any, name: str, source: str, params: dict,
             secrets: dict | None = None) -> csi_pb2.Snapshot:
    return env.ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name=name, source_volume_id=source, parameters=params,
        secrets=SECRETS if secrets is None else secrets)).snapshot


def restore(env: Any, name: str, snapshot_id: str, size: int = 16 * MIB) -> str:
    src = csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id))
    return volume(env, name, size, volume_content_source=src)


def add_s3_remote(env: Any, s3: S3Server, bucket: str, remote: str = "backup-s3") -> None:
    """What an administrator of the second cluster does once (`linstor remote create s3`)."""
    env.client.post("/v1/remotes/s3", deadline=Deadline(30), body={
        "remote_name": remote, "endpoint": s3.url, "bucket": bucket, "region": REGION,
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "use_path_style": True})


def backups(env: Any, remote: str, rd: str) -> dict[str, dict]:
    return env.client.get(f"/v1/remotes/{remote}/backups", deadline=Deadline(30),
                          params={"rsc_name": rd}).get("linstor", {})


def test_s3_backup_restored_in_a_cluster_that_shares_only_the_bucket(
        clusters: list[Any], s3: S3Server, bucket: str) -> None:
    a, b = clusters
    rd = volume(a, "pvc-data")
    data = [(0, os.urandom(4096)), (5 * MIB + 123, os.urandom(70000)), (16 * MIB - 512,
                                                                         os.urandom(512))]
    for off, chunk in data:
        write(a, rd, off, chunk)
    snap = snapshot(a, "snap-dr", rd, s3_class(s3, bucket, **{"delete-local": "true"}))
    assert snap.snapshot_id == f"S3://backup-s3/{rd}/snap-dr"  # LINBIT's id format
    assert snap.ready_to_use
    assert snap.size_bytes == 16 * MIB
    keys = s3.keys(bucket)
    assert any(k.startswith(f"{rd}_back_") and k.endswith("^snap-dr.meta") for k in keys), keys
    assert any(k.startswith(f"{rd}_00000_back_") for k in keys), keys
    # delete-local: only the bucket holds it now; the snapshot is still ready for the CO
    assert a.snapshots() == []
    again = snapshot(a, "snap-dr", rd, s3_class(s3, bucket, **{"delete-local": "true"}))
    assert again.snapshot_id == snap.snapshot_id and again.ready_to_use
    got = a.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=snap.snapshot_id))
    assert [e.snapshot.ready_to_use for e in got.entries] == [True]
    a.ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rd))
    assert a.rds() == [] and a.snapshots() == []

    # cluster b knows nothing but the bucket (a pre-provisioned VolumeSnapshotContent's handle)
    add_s3_remote(b, s3, bucket)
    restored = restore(b, "pvc-restored", snap.snapshot_id)
    for off, chunk in data:
        assert read(b, restored, off, len(chunk)) == chunk
    assert read(b, restored, MIB, 4096) == bytes(4096)  # never written: still zeros
    # ListSnapshots in b shows the backup under its S3 id, as CreateSnapshot returned it
    listed = b.ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]
    assert b.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries[0].volume.volume_id == \
        restored  # the RD holding the download is no volume
    assert len(b.ctl.ListVolumes(csi_pb2.ListVolumesRequest()).entries) == 1

    # the VolumeSnapshot is deleted: its backup leaves the bucket, the download holder goes
    b.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert b.rds() == [restored] and b.snapshots() == []
    a.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert not [k for k in s3.keys(bucket) if "snap-dr" in k]
    a.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))  # again: OK


def test_incremental_chain_full_after_max_increments_and_deferred_delete(
        clusters: list[Any], s3: S3Server, bucket: str) -> None:
    a, b = clusters
    rd = volume(a, "pvc-chain")
    cls = s3_class(s3, bucket, **{"allow-incremental": "true", "max-increments": "2"})
    write(a, rd, 8 * MIB, os.urandom(2 * MIB))  # in the full backups only
    states = []
    for i in range(4):
        write(a, rd, i * MIB, bytes([0x41 + i]) * 8192)
        states.append(read(a, rd, 0, 5 * MIB))
        assert snapshot(a, f"snap-{i}", rd, cls).ready_to_use
    found = {v["origin_snap"]: v for v in backups(a, "backup-s3", rd).values()}
    by_id = {v["id"]: v["origin_snap"] for v in found.values()}

    def base(snap: str) -> str | None:
        bid = found[snap].get("based_on_id")
        return by_id[bid.removesuffix(".meta")] if bid else None

    # full, increment, increment, then a full backup again (the chain had 2 increments)
    assert [base(f"snap-{i}") for i in range(4)] == [None, "snap-0", "snap-1", None]
    # an increment's object holds only what changed: far smaller than the full backup's
    sizes = {o["Key"]: o["Size"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    vol = {s: next(sz for k, sz in sizes.items() if "_00000_" in k and k.endswith("^" + s))
           for s in found}
    assert vol["snap-1"] < vol["snap-0"] and vol["snap-2"] < vol["snap-0"]

    # the second increment restores through the whole chain, in the other cluster
    add_s3_remote(b, s3, bucket)
    restored = restore(b, "pvc-from-chain", f"S3://backup-s3/{rd}/snap-2")
    assert read(b, restored, 0, 5 * MIB) == states[2]

    # deleting the base of a newer increment is deferred; newest first drains the chain
    sid = [f"S3://backup-s3/{rd}/snap-{i}" for i in range(4)]
    with pytest.raises(grpc.RpcError) as err:
        a.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=sid[0]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "snap-0" in str(backups(a, "backup-s3", rd))
    for i in (2, 1, 0, 3):
        a.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=sid[i]))
    assert backups(a, "backup-s3", rd) == {}
    assert [k for k in s3.keys(bucket) if k.startswith(rd)] == []


def test_linstor_to_linstor_shipping(clusters: list[Any]) -> None:
    a, b = clusters
    rd = volume(a, "pvc-l2l")
    chunk = os.urandom(200000)
    write(a, rd, 3 * MIB, chunk)
    cls = {NS + "type": "Linstor", NS + "remote-name": "dr-site",
           NS + "linstor-target-url": b.sim.url}
    snap = snapshot(a, "snap-l2l", rd, cls, secrets={})
    assert snap.snapshot_id == f"Linstor://dr-site/{rd}/snap-l2l"
    assert snap.ready_to_use
    # the other cluster received it as snapshot snap-l2l of backup-<rd> (LINBIT's naming)
    assert f"backup-{rd}/snap-l2l".upper() in [s.upper() for s in b.snapshots()]
    restored = restore(b, "pvc-dr", f"InCluster:///backup-{rd}/snap-l2l")
    assert read(b, restored, 3 * MIB, len(chunk)) == chunk
    # and the source cluster restores from its own copy through the Linstor id
    local = restore(a, "pvc-local", snap.snapshot_id)
    assert read(a, local, 3 * MIB, len(chunk)) == chunk
    a.ctl.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert a.snapshots() == []


def test_s3_class_without_keys_for_a_new_remote_is_refused(
        clusters: list[Any], s3: S3Server, bucket: str) -> None:
    a, _b = clusters
    rd = volume(a, "pvc-nokeys")
    with pytest.raises(grpc.RpcError) as err:
        snapshot(a, "snap-x", rd, s3_class(s3, bucket), secrets={})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "access_key" in err.value.details() and SECRET_KEY not in err.value.details()
    assert a.snapshots() == []


def test_remote_settings_follow_the_class(clusters: list[Any], s3: S3Server,
                                          bucket: str) -> None:
    a, _b = clusters
    rd = volume(a, "pvc-remote")
    snapshot(a, "snap-1", rd, s3_class(s3, bucket))
    remotes = a.client.get("/v1/remotes", deadline=Deadline(30))
    assert [r["bucket"] for r in remotes["s3_remotes"]] == [bucket]
    assert "secret_key" not in json.dumps(remotes)  # LINSTOR never shows the keys
    s3.make_bucket(bucket + "-new")
    snapshot(a, "snap-2", rd, s3_class(s3, bucket + "-new"))
    remotes = a.client.get("/v1/remotes/s3", deadline=Deadline(30))
    assert [r["bucket"] for r in remotes] == [bucket + "-new"]
    assert any("snap-2" in k for k in s3.keys(bucket + "-new"))

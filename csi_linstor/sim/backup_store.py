"""The bytes of simulated backups: S3 objects in LINSTOR's key layout, and the block stream.

Key layout (LINSTOR 1.33.3 backupshipping/S3MetafileNameInfo, S3VolumeNameInfo):

- meta file ``<rd>_back_YYYYMMDD_HHMMSS[^<snap>].meta`` (the ``^<snap>`` part when the snapshot
  name differs from the backup id), a JSON document describing the backup;
- one data object per volume ``<rd>_<vnr:05d>_back_YYYYMMDD_HHMMSS[^<snap>]``.

LINSTOR's data objects hold ``thin_send``/``zfs send`` streams; the simulator's hold its own
block stream (the content is opaque to every client): a header, then ``(offset, length, bytes)``
records. A full backup records every block that is not zero, an incremental one every block that
differs from its base snapshot; a restore starts from zeros and applies the chain oldest first.

boto3 is imported on first use: only the simulator needs it (the driver never talks to S3).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b"CSILSIMBACKUP01\n"
BLOCK = 64 * 1024
_REC = struct.Struct("=QI")
_HEAD = struct.Struct("=16sQ")


def backup_id(ts_ms: int) -> str:
    """LINSTOR's backup id: ``back_`` + the start time (BackupConsts.DATE_FORMAT, UTC)."""
    return "back_" + time.strftime("%Y%m%d_%H%M%S", time.gmtime(ts_ms / 1000))


def full_backup_id(rd: str, bid: str, snap: str) -> str:
    """S3MetafileNameInfo.toFullBackupId: ``<rd>_<id>[^<snap>]``."""
    return f"{rd}_{bid}" + (f"^{snap}" if snap and snap != bid else "")


def meta_key(rd: str, bid: str, snap: str) -> str:
    return full_backup_id(rd, bid, snap) + ".meta"


def volume_key(rd: str, vnr: int, bid: str, snap: str) -> str:
    """S3VolumeNameInfo.toString with an empty layer suffix."""
    return f"{rd}_{vnr:05d}_{bid}" + (f"^{snap}" if snap and snap != bid else "")


def _blocks(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        off = 0
        while True:
            chunk = f.read(BLOCK)
            if not chunk:
                return
            yield off, chunk
            off += len(chunk)


def encode(path: Path, base: Path | None) -> bytes:
    """The block stream of ``path``: full (base None) or the blocks that differ from ``base``."""
    size = os.path.getsize(path)
    out = [_HEAD.pack(MAGIC, size)]
    base_f = open(base, "rb") if base is not None else None
    try:
        for off, chunk in _blocks(path):
            if base_f is not None:
                base_f.seek(off)
                old = base_f.read(len(chunk))
                if old == chunk:
                    continue
            elif not chunk.strip(b"\0"):
                continue
            out.append(_REC.pack(off, len(chunk)))
            out.append(chunk)
    finally:
        if base_f is not None:
            base_f.close()
    return b"".join(out)


def apply(stream: bytes, dst: Path) -> None:
    """Apply one block stream onto ``dst`` (created empty at the stream's size when missing)."""
    magic, size = _HEAD.unpack_from(stream, 0)
    if magic != MAGIC:
        raise ValueError("not a simulator backup stream")
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        pos = _HEAD.size
        while pos < len(stream):
            off, length = _REC.unpack_from(stream, pos)
            pos += _REC.size
            os.pwrite(fd, stream[pos:pos + length], off)
            pos += length
    finally:
        os.close(fd)


class Bucket:
    """One S3 remote's bucket, through boto3 (SigV4, the remote's region and addressing)."""

    def __init__(self, remote: dict[str, Any]) -> None:
        import boto3  # the simulator's own dependency (test extras), not the driver's
        from botocore.config import Config

        endpoint = remote["endpoint"]
        if "://" not in endpoint:
            endpoint = "https://" + endpoint  # LINSTOR's S3 client defaults to https
        self.name = remote["bucket"]
        self.s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name=remote.get("region") or "us-east-1",
            aws_access_key_id=remote["access_key"], aws_secret_access_key=remote["secret_key"],
            config=Config(s3={"addressing_style": "path" if remote.get("use_path_style")
                              else "virtual"}, connect_timeout=10, read_timeout=60,
                          retries={"max_attempts": 2}))

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.name, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()

    def keys(self) -> list[str]:
        out: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.name}
            if token:
                kw["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.name, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]]})

"""Remote snapshots: VolumeSnapshotClasses of ``type`` S3 or Linstor (LINSTOR backup shipping).

Ids as LINBIT's driver writes them (linstor-csi-facts "Snapshot ID"), so existing
VolumeSnapshotContents keep working: ``S3://<remote>/<rd>/<snapshot>`` and
``Linstor://<remote>/<rd>/<snapshot>``.

- The class's remote is created in LINSTOR when missing and updated when its settings (or the
  snapshotter secret's keys) changed since this process last made sure of it:
  ``POST /v1/remotes/s3`` / ``PUT /v1/remotes/s3/{r}`` (``linstor`` alike).
- S3 CreateSnapshot: ``POST /v1/remotes/{r}/backups {rsc_name, snap_name, incremental}``. LINSTOR
  takes the snapshot and uploads it; ready_to_use is its snapshot-definition prop
  ``BackupShipping/Source/<remote>/ShippingStatus == Success``; after ``delete-local`` removed
  the local snapshot, the backup listing (``GET .../backups?rsc_name=&snap_name=``) answers.
  ``allow-incremental`` asks for an increment unless the chain already has ``max-increments``
  increments or its full backup is older than ``full-snapshot-after`` (LINSTOR itself falls back
  to a full backup when the previous snapshot is gone).
- Linstor CreateSnapshot: ``POST /v1/remotes/{r}/backups/ship`` into ``backup-<rd>`` of the
  other cluster (LINBIT's naming), download only; ready when the shipment succeeded.
- Restore (CreateVolume from such an id): the local snapshot when this cluster still has it;
  else ``backups/info`` + ``backups/restore {download_only}`` into snapshot ``<rd>/<snapshot>``
  of this cluster, from which the volume is restored as from any snapshot. A cluster that only
  shares the bucket needs the remote of the same name (see docs/backups.md).
- Delete: a backup another backup is based on is not deleted (FAILED_PRECONDITION: the
  snapshotter retries, so the chain drains newest first); otherwise
  ``DELETE /v1/remotes/{r}/backups?id=<id>`` per backup of the snapshot, then the local snapshot.

The access and secret keys come from the snapshotter secret (``access-key``, ``secret-key``) and
go to LINSTOR only in the remote's request body: never into a log line or an error message.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition, InvalidArgument, NotFound
from csi_linstor.linstor import consts, queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.linstor.models import Snapshot
from csi_linstor.mapping import ids
from csi_linstor.mapping.volume_model import PROP_DELETED

log = logging.getLogger("csi_linstor.backups")

SRC = "BackupShipping/Source/{}/"
TGT = "BackupShipping/Target/"
ACCESS_KEY = "access-key"
SECRET_KEY = "secret-key"
FAIL_DEPENDEND_BACKUP = 977  # ApiConsts, | MASK_ERROR
FAIL_NOT_FOUND_BACKUP = 322
FAIL_EXISTS_REMOTE = 527
FAIL_INVLD_REMOTE_NAME = 239
L2L_PREFIX = "backup-"  # LINBIT's destination RD for LINSTOR-to-LINSTOR shipping

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``168h``, ``1h30m``) in seconds."""
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"{text!r} is not a duration like 168h or 1h30m")
    return total


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "t", "true", "yes"):
        return True
    if v in ("0", "f", "false", "no", ""):
        return False
    raise InvalidArgument(f"snapshot class parameter {key}: {value!r} is not a boolean")


@dataclass(frozen=True)
class BackupClass:
    """A VolumeSnapshotClass's shipping settings (no secrets: those travel separately)."""
    type: str  # S3 or Linstor
    remote: str
    delete_local: bool = False
    allow_incremental: bool = False
    max_increments: int | None = None
    full_after_s: float | None = None
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = ""
    s3_path_style: bool = False
    target_url: str = ""
    target_cluster_id: str = ""
    target_pool: str = ""


def backup_class(kind: str, settings: Mapping[str, str]) -> BackupClass:
    """The class of ``kind`` (S3/Linstor) from its canonical ``settings`` (key -> value)."""
    def key(name: str) -> str:
        return f"snap.linstor.csi.linbit.com/{name}"

    remote = settings.get("remote-name", "")
    if not remote or not ids.is_valid_name(remote):
        raise InvalidArgument(f"snapshot class parameter {key('remote-name')} is required for "
                              f"type {kind} and must be a valid LINSTOR name (got {remote!r})")
    kw: dict[str, Any] = {"type": kind, "remote": remote}
    for name, value in settings.items():
        if name in ("delete-local", "allow-incremental", "s3-use-path-style"):
            kw[{"delete-local": "delete_local", "allow-incremental": "allow_incremental",
                "s3-use-path-style": "s3_path_style"}[name]] = _bool(key(name), value)
        elif name == "max-increments":
            try:
                kw["max_increments"] = int(value)
            except ValueError:
                kw["max_increments"] = -1
            if kw["max_increments"] < 0:
                raise InvalidArgument(f"snapshot class parameter {key(name)}: {value!r} is not "
                                      "an integer >= 0")
        elif name == "full-snapshot-after":
            try:
                kw["full_after_s"] = parse_duration(value)
            except ValueError as err:
                raise InvalidArgument(f"snapshot class parameter {key(name)}: {err}") from None
        elif name in ("s3-endpoint", "s3-bucket", "s3-signing-region"):
            kw[{"s3-endpoint": "s3_endpoint", "s3-bucket": "s3_bucket",
                "s3-signing-region": "s3_region"}[name]] = value
        elif name in ("linstor-target-url", "linstor-target-cluster-id",
                      "linstor-target-storage-pool"):
            kw[{"linstor-target-url": "target_url",
                "linstor-target-cluster-id": "target_cluster_id",
                "linstor-target-storage-pool": "target_pool"}[name]] = value
    return BackupClass(**kw)


def _status(snap: Snapshot, remote: str) -> str:
    """The shipping status LINSTOR recorded on a snapshot for ``remote`` ('' when none)."""
    props = snap.definition_props
    if props.get(SRC.format(remote) + "BackupTargetRemote"):
        return props.get(SRC.format(remote) + "ShippingStatus", "")
    if props.get(TGT + "BackupSrcRemote"):
        return props.get(TGT + "ShippingStatus", "")
    return ""


@dataclass
class RemoteInfo:
    """What restore and listing need from a remote snapshot, local or only in the remote."""
    id: str
    size_bytes: int
    created_ms: int
    ready: bool


class Backups:
    def __init__(self, client: LinstorClient, snapshots: Any) -> None:
        self.client = client
        self.snapshots = snapshots  # csi_linstor.snapshots.Snapshots (local deletes, RD GC)
        self._reconciled: dict[str, str] = {}  # remote -> digest of what we last made sure of
        self._lock = threading.Lock()

    # -- remotes -------------------------------------------------------------------------------

    def reconcile_remote(self, cls: BackupClass, secrets: Mapping[str, str],
                         deadline: Deadline) -> None:
        if cls.type == "S3":
            want: dict[str, Any] = {"remote_name": cls.remote, "endpoint": cls.s3_endpoint,
                                    "bucket": cls.s3_bucket, "region": cls.s3_region,
                                    "use_path_style": cls.s3_path_style}
            keys = {"access_key": secrets.get(ACCESS_KEY, ""),
                    "secret_key": secrets.get(SECRET_KEY, "")}
            kind = "s3"
        else:
            want = {"remote_name": cls.remote, "url": cls.target_url}
            if cls.target_cluster_id:
                want["cluster_id"] = cls.target_cluster_id
            keys = {}
            kind = "linstor"
        digest = hashlib.sha256(repr(sorted({**want, **keys}.items())).encode()).hexdigest()
        with self._lock:
            if self._reconciled.get(cls.remote) == digest:
                return
        have = {r.get("remote_name", "").upper(): r
                for r in self.client.get(f"/v1/remotes/{kind}", deadline=deadline) or []}
        current = have.get(cls.remote.upper())
        configured = [k for k in want if k != "remote_name" and want[k] not in ("", None)]
        if current is None:
            missing = [k for k, v in {**want, **keys}.items()
                       if v in ("", None) and k not in ("use_path_style", "cluster_id")]
            if missing:
                raise InvalidArgument(
                    f"LINSTOR has no {kind} remote {cls.remote} and the VolumeSnapshotClass "
                    f"cannot create it: {', '.join(missing)} missing (the S3 keys come from the "
                    "snapshotter secret's access-key and secret-key)")
            try:
                self.client.post(f"/v1/remotes/{kind}", deadline=deadline, body={**want, **keys})
            except LinstorError as err:
                if not err.has(FAIL_EXISTS_REMOTE):
                    raise
            log.info("created %s remote %s in LINSTOR", kind, cls.remote)
        else:
            body = {k: want[k] for k in configured} | {k: v for k, v in keys.items() if v}
            self.client.put(f"/v1/remotes/{kind}/{cls.remote}", deadline=deadline,
                            body={"remote_name": cls.remote, **body})
            log.info("made sure %s remote %s in LINSTOR has the class's settings", kind,
                     cls.remote)
        with self._lock:
            self._reconciled[cls.remote] = digest

    # -- lookups -------------------------------------------------------------------------------

    def _local(self, rd: str, snap: str, deadline: Deadline) -> Snapshot | None:
        try:
            return queries.snapshot(self.client, rd, snap, deadline)
        except LinstorError as err:
            if err.is_not_found():
                return None
            raise

    def _list(self, remote: str, deadline: Deadline, rd: str,
              snap: str | None = None) -> dict[str, dict[str, Any]]:
        """The backups of ``rd`` (and ``snap``) in S3 remote ``remote``: id -> Backup."""
        params = {"rsc_name": rd} | ({"snap_name": snap} if snap else {})
        try:
            data = self.client.get(f"/v1/remotes/{remote}/backups", deadline=deadline,
                                   params=params) or {}
        except LinstorError as err:
            if err.is_not_found():
                return {}
            raise
        return dict(data.get("linstor") or {})

    def get(self, sid: ids.SnapshotId, deadline: Deadline) -> RemoteInfo | None:
        local = self._local(sid.resource, sid.snapshot, deadline)
        if local is not None and not local.deleting:
            status = _status(local, sid.remote)
            if status:
                return RemoteInfo(str(sid), local.size_kib(0) * 1024, local.created_ms,
                                  status == "Success")
        if sid.type != "S3":
            return None
        found = [b for b in self._list(sid.remote, deadline, sid.resource, sid.snapshot).values()
                 if b.get("origin_snap", "").upper() == sid.snapshot.upper()]
        if not found:
            return None
        b = max(found, key=lambda x: x.get("start_timestamp", 0))
        size = 0
        try:
            info = self.client.post_raw(f"/v1/remotes/{sid.remote}/backups/info",
                                        deadline=deadline,
                                        body={"src_rsc_name": sid.resource,
                                              "src_snap_name": sid.snapshot})
            size = int(info.get("dl_size_kib", 0)) * 1024
        except LinstorError as err:
            if not err.is_not_found():
                raise
        return RemoteInfo(str(sid), size, int(b.get("start_timestamp", 0)),
                          bool(b.get("success")) and not b.get("shipping"))

    def remotes(self, deadline: Deadline) -> dict[str, str]:
        """Remote name -> ``S3`` or ``Linstor``, for every remote LINSTOR knows."""
        remotes = self.client.get("/v1/remotes", deadline=deadline) or {}
        kinds = {r["remote_name"]: "S3" for r in remotes.get("s3_remotes") or []}
        kinds |= {r["remote_name"]: "Linstor" for r in remotes.get("linstor_remotes") or []}
        return kinds

    def relabel(self, infos: list[Any], deadline: Deadline, make: Any,
                kinds: dict[str, str] | None = None) -> list[Any]:
        """ListSnapshots: local snapshots shipped to a remote answer with their remote id (as
        CreateSnapshot returned it), and S3 backups whose local snapshot is gone are added
        (LINBIT's driver lists every S3 remote's backups too). ``infos`` are SnapshotInfo, and
        ``make`` is that class (made here for the S3-only backups)."""
        if kinds is None:
            kinds = self.remotes(deadline)
        if not kinds:
            return infos
        seen = set()
        for info in infos:
            for name, kind in kinds.items():
                if info.props.get(SRC.format(name) + "BackupTargetRemote"):
                    status = info.props.get(SRC.format(name) + "ShippingStatus")
                elif kind == "S3" and info.props.get(TGT + "BackupSrcRemote") == name:
                    status = info.props.get(TGT + "ShippingStatus")  # downloaded from it
                else:
                    continue
                info.handle = str(ids.SnapshotId(kind, name, info.resource, info.name))
                info.ready = status == "Success"
                seen.add(info.handle)
                break
        extra = []
        for name, kind in sorted(kinds.items()):
            if kind != "S3":
                continue
            try:
                data = self.client.get(f"/v1/remotes/{name}/backups", deadline=deadline) or {}
            except LinstorError as err:
                log.warning("ListSnapshots: cannot list the backups of remote %s: %s", name,
                            err.message)
                continue
            for b in (data.get("linstor") or {}).values():
                rd, snap = b.get("origin_rsc", ""), b.get("origin_snap", "")
                if not (ids.is_valid_name(rd) and ids.is_valid_name(snap)):
                    continue
                sid = str(ids.SnapshotId("S3", name, rd, snap))
                if sid not in seen:
                    seen.add(sid)
                    extra.append((sid, rd, snap, b))
        return infos + [make(resource=rd, name=snap, size_bytes=0,
                             created_ms=int(b.get("start_timestamp", 0)),
                             ready=bool(b.get("success")) and not b.get("shipping"),
                             failed=False, props={}, handle=sid)
                        for sid, rd, snap, b in extra]

    # -- create --------------------------------------------------------------------------------

    def create(self, name: str, source: str, cls: BackupClass, secrets: Mapping[str, str],
               deadline: Deadline) -> RemoteInfo:
        if not ids.is_valid_name(source) or self.snapshots.volumes.find(source,
                                                                        deadline) is None:
            raise NotFound(f"source volume {source} does not exist")
        self.reconcile_remote(cls, secrets, deadline)
        snap = ids.snapshot_name(name)
        sid = ids.SnapshotId(cls.type, cls.remote, source, snap)
        local = self._local(source, snap, deadline)
        if local is not None and not local.deleting and cls.type == "Linstor" and \
                not _status(local, cls.remote):
            # our own snapshot, taken before a crash or a failed ship call: ship it now
            self._ship(cls, source, snap, deadline)
            local = self._local(source, snap, deadline)
        if local is not None and not local.deleting:
            status = _status(local, cls.remote)
            if not status:
                raise FailedPrecondition(f"volume {source} has a snapshot {snap} that was not "
                                         f"shipped to remote {cls.remote}; delete it or use "
                                         "another VolumeSnapshot name")
            if status == "Failed":
                raise FailedPrecondition(
                    f"shipping snapshot {source}/{snap} to remote {cls.remote} failed in "
                    "LINSTOR (see `linstor error-reports list`); delete the VolumeSnapshot and "
                    "take it again")
        else:
            existing = self.get(sid, deadline)
            if existing is not None:
                return existing  # shipped earlier, local copy deleted (delete-local)
            self._ship(cls, source, snap, deadline)
        info = self.get(sid, deadline)
        if info is None:
            raise NotFound(f"the backup {sid} vanished right after LINSTOR started it; retry")
        if info.ready and cls.delete_local:
            self.snapshots._delete(source, snap, deadline)
        return info

    def _ship(self, cls: BackupClass, source: str, snap: str, deadline: Deadline) -> None:
        if cls.type == "Linstor":
            # LINSTOR ships an existing src_snap_name; for a missing one it would invent a name
            # (CtrlBackupL2LSrcApiCallHandler), so the snapshot is taken first
            self.snapshots.index.claim(snap, [source], deadline)  # mapping/snapshot_index.py
            try:
                self.client.post(f"/v1/resource-definitions/{source}/snapshots",
                                 deadline=deadline, body={"name": snap})
            except LinstorError as err:
                if not err.has(consts.FAIL_EXISTS_SNAPSHOT_DFN):
                    raise
            body: dict[str, Any] = {"src_rsc_name": source, "src_snap_name": snap,
                                    "dst_rsc_name": L2L_PREFIX + source, "download_only": True}
            if cls.target_pool:
                body["dst_stor_pool"] = cls.target_pool
            self.client.post(f"/v1/remotes/{cls.remote}/backups/ship", deadline=deadline,
                             body=body)
            return
        incremental = cls.allow_incremental and self._may_increment(cls, source, deadline)
        self.snapshots.index.claim(snap, [source], deadline)  # LINSTOR takes snapshot ``snap``
        self.client.post(f"/v1/remotes/{cls.remote}/backups", deadline=deadline,
                         body={"rsc_name": source, "snap_name": snap,
                               "incremental": incremental})

    def _may_increment(self, cls: BackupClass, source: str, deadline: Deadline) -> bool:
        """False when the newest chain of ``source`` reached max-increments or its full backup
        is older than full-snapshot-after."""
        if cls.max_increments is None and cls.full_after_s is None:
            return True
        backups = self._list(cls.remote, deadline, source)
        if not backups:
            return True
        newest = max(backups.values(), key=lambda b: b.get("start_timestamp", 0))
        increments, b = 0, newest
        while b.get("based_on_id"):
            base = b["based_on_id"].removesuffix(".meta")
            if base not in backups:
                break
            increments += 1
            b = backups[base]
        if cls.max_increments is not None and increments >= cls.max_increments:
            return False
        age = time.time() - b.get("start_timestamp", 0) / 1000
        return not (cls.full_after_s is not None and age >= cls.full_after_s)

    # -- delete --------------------------------------------------------------------------------

    def delete(self, sid: ids.SnapshotId, deadline: Deadline) -> None:
        if sid.type == "S3":
            self._delete_backups(sid, deadline)
        local = self._local(sid.resource, sid.snapshot, deadline)
        if local is not None:
            self.snapshots._delete(sid.resource, sid.snapshot, deadline)

    def _delete_backups(self, sid: ids.SnapshotId, deadline: Deadline) -> None:
        try:
            backups = self._list(sid.remote, deadline, sid.resource)
        except LinstorError as err:
            if err.has(FAIL_INVLD_REMOTE_NAME):
                return  # the remote is not an S3 remote (any more): nothing of ours there
            raise
        mine = {i for i, b in backups.items()
                if b.get("origin_snap", "").upper() == sid.snapshot.upper()}
        for other_id, b in sorted(backups.items()):
            base = (b.get("based_on_id") or "").removesuffix(".meta")
            if base in mine and other_id not in mine:
                raise FailedPrecondition(
                    f"the backup of {sid} is the base of the newer incremental backup "
                    f"{other_id}; it is deleted once that one is (delete the newer "
                    "VolumeSnapshots first, or wait: the snapshotter retries)")
        for bid in sorted(mine):
            try:
                self.client.delete(f"/v1/remotes/{sid.remote}/backups", deadline=deadline,
                                   params={"id": bid})
            except LinstorError as err:
                if err.has(FAIL_DEPENDEND_BACKUP):
                    raise FailedPrecondition(f"LINSTOR keeps backup {bid} of {sid}: a newer "
                                             f"backup depends on it ({err.message}); retry "
                                             "after that one is deleted") from err
                if not err.is_not_found():
                    raise

    # -- restore -------------------------------------------------------------------------------

    def materialize(self, sid: ids.SnapshotId, deadline: Deadline) -> Snapshot | None:
        """A local LINSTOR snapshot holding ``sid``'s data (downloaded when needed)."""
        local = self._local(sid.resource, sid.snapshot, deadline)
        if local is not None and not local.deleting:
            return local
        if sid.type != "S3":
            return None
        try:
            info = self.client.post_raw(f"/v1/remotes/{sid.remote}/backups/info",
                                        deadline=deadline,
                                        body={"src_rsc_name": sid.resource,
                                              "src_snap_name": sid.snapshot})
        except LinstorError as err:
            if err.is_not_found() or err.has(FAIL_NOT_FOUND_BACKUP):
                return None
            raise
        pools = [p.get("name", "") for p in info.get("storpools") or []]
        node, mapping = self._restore_target(pools, deadline)
        holder_existed = self.snapshots.volumes.find(sid.resource, deadline,
                                                     include_deleted=True) is not None
        body: dict[str, Any] = {"src_rsc_name": sid.resource, "src_snap_name": sid.snapshot,
                                "target_rsc_name": sid.resource, "node_name": node,
                                "download_only": True}
        if mapping:
            body["stor_pool_map"] = mapping
        self.client.post(f"/v1/remotes/{sid.remote}/backups/restore", deadline=deadline,
                         body=body)
        log.info("downloaded backup %s to node %s", sid, node)
        if not holder_existed:
            # the RD LINSTOR made to hold the download is no volume: retired like a deleted
            # volume's, so no volume RPC sees it and DeleteSnapshot removes it with the snapshot
            self.client.put(f"/v1/resource-definitions/{sid.resource}", deadline=deadline,
                            body={"override_props": {PROP_DELETED: "true"}})
        return self._local(sid.resource, sid.snapshot, deadline)

    def _restore_target(self, pools: list[str], deadline: Deadline
                        ) -> tuple[str, dict[str, str]]:
        """An online node for the download: one with the backup's pool, else the first pool
        with the same name missing mapped to one the node has."""
        sps = queries.storage_pools(self.client, deadline)
        online = {n.name for n in queries.nodes(self.client, deadline)
                  if n.connection_status.upper() == "ONLINE"}
        diskful = [p for p in sps if p.node_name in online
                   and p.provider_kind.upper() != "DISKLESS"]
        for p in sorted(diskful, key=lambda p: p.node_name):
            if p.storage_pool_name in pools:
                return p.node_name, {}
        if not diskful:
            raise FailedPrecondition("no online node with a storage pool to download the "
                                     "backup to")
        p = sorted(diskful, key=lambda p: (p.node_name, p.storage_pool_name))[0]
        return p.node_name, {src: p.storage_pool_name for src in pools if src}

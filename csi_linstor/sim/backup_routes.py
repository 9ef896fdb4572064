"""The simulator's remotes and backup shipping (``/v1/remotes...``), a mixin of the Controller.

Modelled on LINSTOR 1.33.3 (controller: rest/v1/Remotes.java, rest/v1/Backups.java,
CtrlRemoteApiCallHandler, backup/CtrlBackupCreateApiCallHandler, CtrlBackupApiCallHandler,
CtrlBackupRestoreApiCallHandler, CtrlBackupL2LSrcApiCallHandler/DstApiCallHandler):

- S3 remotes ``POST /v1/remotes/s3`` / ``PUT /v1/remotes/s3/{name}``, LINSTOR remotes
  ``POST /v1/remotes/linstor`` / ``PUT /v1/remotes/linstor/{name}``; a taken name is
  FAIL_EXISTS_REMOTE; a new S3 remote must list its bucket with its keys; listings never show
  the keys or the passphrase (Json.apiToS3Remote). Not modelled: LINSTOR stores the keys
  encrypted and refuses an S3 remote while no master passphrase is set
  (FAIL_NOT_FOUND_CRYPT_KEY, EncryptionHelper.encrypt); the simulator has no passphrase.
- ``POST /v1/remotes/{r}/backups`` takes snapshot ``snap_name`` (default: the backup id) and
  uploads it: one data object per volume, then the ``.meta`` file (backup_store.py has the key
  layout). An incremental backup is based on the snapshot named by the RD prop
  ``BackupShipping/Source/<remote>/BackupLastSnapshot`` when that snapshot still exists, shipped
  with status Success, its backup is still in the bucket and its sizes did not change
  (getIncrementalBase); otherwise a full one is made.
- The snapshot carries ``BackupShipping/Source/<remote>/{BackupTargetRemote,
  BackupStartTimestamp,ShippingStatus}``; a downloaded or received one
  ``BackupShipping/Target/{BackupSrcRemote,ShippingStatus}`` (InternalApiConsts).
- ``DELETE /v1/remotes/{r}/backups?id=|id_prefix=|s3key=|resource_name=|all=`` deletes a backup's
  meta and data objects; a backup another backup is based on is FAIL_DEPENDEND_BACKUP unless
  ``cascading`` (addToDeleteList); the local snapshots the deleted backups were made from are
  deleted too unless ``keep_snaps``.
- ``POST .../backups/restore`` downloads a backup chain into snapshot ``<snap>`` of
  ``target_rsc_name`` on ``node_name`` (and, without ``download_only``, restores the resource).
- ``POST .../backups/ship`` (LINSTOR remote) sends a snapshot to the other controller, which
  stores it as a snapshot of ``dst_rsc_name``.

Simplifications (stated, not hidden): shipping and downloading finish within the request (LINSTOR
runs them in the background; status ``Shipping`` is never seen here, so abort finds nothing to
abort), and LINSTOR-to-LINSTOR transfers carry the data inline in one internal request instead of
LINSTOR's satellite-to-satellite stream, always as a full copy.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import backup_store as store
from . import consts as C
from .schemas import REQUEST_SCHEMAS

# ApiConsts (linstor-common/consts.json) not in consts.py yet
FAIL_INVLD_BACKUP_CONFIG = 238 | C.MASK_ERROR
FAIL_NOT_FOUND_BACKUP = 322 | C.MASK_ERROR
FAIL_EXISTS_REMOTE = 527 | C.MASK_ERROR
FAIL_DEPENDEND_BACKUP = 977 | C.MASK_ERROR
INFO_NOOP = 10007 | C.MASK_INFO
MASK_REMOTE = 0x040000

SRC = "BackupShipping/Source/{}/"
TGT = "BackupShipping/Target/"

REQUEST_SCHEMAS.update({
    "S3Remote": {"remote_name": "s", "endpoint": "s", "bucket": "s", "region": "s",
                 "access_key": "s", "secret_key": "s", "use_path_style": "b"},
    "LinstorRemote": {"remote_name": "s", "url": "s", "passphrase": "s", "cluster_id": "s"},
    "BackupCreate": {"rsc_name": "s", "node_name": "s", "snap_name": "s", "incremental": "b",
                     "dst_snap_name": "s"},
    "BackupRestore": {"src_rsc_name": "s", "src_snap_name": "s", "last_backup": "s",
                      "stor_pool_map": "d", "target_rsc_name": "s", "passphrase": "s",
                      "node_name": "s", "download_only": "b", "force_restore": "b",
                      "dst_rsc_grp": "s", "force_mv_rsc_grp": "b"},
    "BackupInfoRequest": {"src_rsc_name": "s", "src_snap_name": "s", "last_backup": "s",
                          "stor_pool_map": "d", "node_name": "s"},
    "BackupAbort": {"rsc_name": "s", "restore": "b", "create": "b", "snapshot": "s"},
    "BackupShip": {"src_node_name": "s", "src_rsc_name": "s", "dst_rsc_name": "s",
                   "dst_node_name": "s", "dst_net_if_name": "s", "dst_stor_pool": "s",
                   "stor_pool_rename": "d", "download_only": "b", "force_restore": "b",
                   "allow_incremental": "b", "dst_rsc_grp": "s", "force_mv_rsc_grp": "b",
                   "src_snap_name": "s", "dst_snap_name": "s"},
})

ROUTES: list[tuple[str, str, str, tuple[int, int, int] | None]] = [
    ("GET", "/v1/remotes", "h_bk_remotes", None),
    ("DELETE", "/v1/remotes", "h_bk_remote_delete", None),
    ("GET", "/v1/remotes/s3", "h_bk_remotes_kind", None),
    ("POST", "/v1/remotes/s3", "h_bk_s3_create", None),
    ("PUT", "/v1/remotes/s3/{remote}", "h_bk_s3_modify", None),
    ("GET", "/v1/remotes/linstor", "h_bk_remotes_kind", None),
    ("POST", "/v1/remotes/linstor", "h_bk_linstor_create", None),
    ("PUT", "/v1/remotes/linstor/{remote}", "h_bk_linstor_modify", None),
    ("GET", "/v1/remotes/ebs", "h_bk_remotes_kind", None),
    ("GET", "/v1/remotes/{remote}/backups", "h_bk_list", None),
    ("POST", "/v1/remotes/{remote}/backups", "h_bk_create", None),
    ("DELETE", "/v1/remotes/{remote}/backups", "h_bk_delete", None),
    ("POST", "/v1/remotes/{remote}/backups/info", "h_bk_info", None),
    ("POST", "/v1/remotes/{remote}/backups/restore", "h_bk_restore", None),
    ("POST", "/v1/remotes/{remote}/backups/abort", "h_bk_abort", None),
    ("POST", "/v1/remotes/{remote}/backups/ship", "h_bk_ship", None),
    # the receiving controller's side of a LINSTOR-to-LINSTOR shipment (simulator form)
    ("POST", "/v1/internal/backups/requestShip", "h_bk_receive", None),
]


@dataclass
class BackupState:
    s3: dict[str, dict[str, Any]] = field(default_factory=dict)  # key: upper name
    cluster_id: str = field(default_factory=lambda: str(_uuid.uuid4()))
    dl_counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class BackupRoutes:
    """Mixin: every attribute it reads (rds, nodes, linstor_remotes, devices, the helpers) is
    the Controller's."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def _bk(self) -> BackupState:
        st = self.__dict__.get("_backup_state")
        if st is None:
            st = self.__dict__["_backup_state"] = BackupState()
        return st

    def _ctl(self) -> Any:
        from . import controller as ctl  # the Controller's module (helpers, Reply, ApiError)
        return ctl

    def _remote_reply(self, op: int) -> Any:
        return self._ctl().Reply(op, MASK_REMOTE)

    def _s3_remote(self, name: str) -> dict[str, Any]:
        # BackupHelper.getS3Remote: missing -> FAIL_NOT_FOUND_REMOTE, another kind ->
        # FAIL_INVLD_REMOTE_NAME, both | MASK_BACKUP
        ctl = self._ctl()
        rem = self._bk.s3.get(name.upper())
        if rem is not None:
            return rem
        if name not in self.linstor_remotes:  # type: ignore[attr-defined]
            raise ctl.ApiError([ctl.make_rc(C.FAIL_NOT_FOUND_REMOTE | C.MASK_BACKUP,
                                            f"The remote {name} does not exist. Please provide "
                                            "a valid remote or create a new one.")])
        raise ctl.ApiError([ctl.make_rc(C.FAIL_INVLD_REMOTE_NAME | C.MASK_BACKUP,
                                        f"The remote {name} is not an s3 remote.")])

    def _bucket(self, remote: dict[str, Any]) -> store.Bucket:
        return store.Bucket(remote)

    def _s3_failure(self, remote: dict[str, Any], err: Exception) -> Exception:
        ctl = self._ctl()
        return ctl.ApiError([ctl.make_rc(
            C.FAIL_UNKNOWN_ERROR | C.MASK_BACKUP,
            f"Access to bucket '{remote['bucket']}' of remote '{remote['remote_name']}' failed: "
            f"{type(err).__name__}: {err}", report=True)])

    # -- remotes -------------------------------------------------------------------------------

    @staticmethod
    def _s3_json(rem: dict[str, Any]) -> dict[str, Any]:
        return {k: rem[k] for k in ("remote_name", "endpoint", "bucket", "region") if k in rem}

    def _linstor_json(self) -> list[dict[str, Any]]:
        return [{"remote_name": v["remote_name"], "url": v["url"]}
                for v in self.linstor_remotes.values()]  # type: ignore[attr-defined]

    def h_bk_remotes(self, req: Any) -> tuple[int, Any]:
        # rest/v1/Remotes.java getRemotes: one RemoteList object, empty lists dropped (C1)
        return 200, self._ctl().prune({
            "s3_remotes": [self._s3_json(r) for r in self._bk.s3.values()],
            "linstor_remotes": self._linstor_json(), "ebs_remotes": []})

    def h_bk_remotes_kind(self, req: Any) -> tuple[int, Any]:
        if req.path.rstrip("/").endswith("/s3"):
            return 200, [self._s3_json(r) for r in self._bk.s3.values()]
        if req.path.rstrip("/").endswith("/linstor"):
            return 200, self._linstor_json()
        return 200, []

    def _taken(self, name: str) -> bool:
        return name.upper() in self._bk.s3 or any(
            n.upper() == name.upper() for n in self.linstor_remotes)  # type: ignore[attr-defined]

    def h_bk_s3_create(self, req: Any) -> tuple[int, Any]:
        body = self._body(req, "S3Remote")  # type: ignore[attr-defined]
        r = self._remote_reply(C.MASK_CRT)
        name = self._ctl().check_name(body.get("remote_name"), C.FAIL_INVLD_REMOTE_NAME,
                                      "remote", r)
        if self._taken(name):
            # CtrlRemoteApiCallHandler.createS3Remote
            raise r.error(FAIL_EXISTS_REMOTE, f"A remote with the name '{name}' already "
                          "exists. Please use a different name or try to modify the remote "
                          "instead.")
        # CtrlRemoteApiCallHandler.createS3Remote: missing settings, then a listing of the
        # bucket with the keys ("check if url and keys work together"), then "Remote created"
        missing = [k for k in ("endpoint", "bucket", "region", "access_key", "secret_key")
                   if not body.get(k)]
        if missing:
            raise r.error(FAIL_INVLD_BACKUP_CONFIG | C.MASK_BACKUP, "The remote could not be "
                          "created because the following required "
                          f"{'parameter is' if len(missing) == 1 else 'parameters are'} "
                          f"missing: [{', '.join(missing)}]", report=True)
        rem = {"remote_name": name, "endpoint": body["endpoint"], "bucket": body["bucket"],
               "region": body["region"], "access_key": body["access_key"],
               "secret_key": body["secret_key"], "use_path_style": bool(body.get("use_path_style"))}
        try:
            self._bucket(rem).keys()
        except Exception:  # noqa: BLE001 - LINSTOR: SdkClientException, details in its report
            raise self._ctl().ApiError([self._ctl().make_rc(
                C.FAIL_UNKNOWN_ERROR | C.MASK_BACKUP,
                "The remote could not be reached with the given parameters and therefore wasn't "
                "created.\nPlease check for spelling errors and that you have the correct "
                "access-key and secret-key.\nFor more information on the error, please check the "
                "error-report.", report=True)]) from None
        self._bk.s3[name.upper()] = rem
        # rest/v1/Remotes.java answers 200 (linstor-facts 3.11); the entry is CREATED|MASK_REMOTE
        return 200, [self._ctl().make_rc(C.CREATED | MASK_REMOTE, "Remote created")]

    def h_bk_s3_modify(self, req: Any) -> tuple[int, Any]:
        body = self._body(req, "S3Remote")  # type: ignore[attr-defined]
        r = self._remote_reply(C.MASK_MOD)
        name = req.params["remote"]
        rem = self._bk.s3.get(name.upper())
        if rem is None:
            raise r.error(C.FAIL_NOT_FOUND_REMOTE, f"Remote '{name}' not found.", status=404)
        for k in ("endpoint", "bucket", "region", "access_key", "secret_key"):
            if body.get(k):
                rem[k] = body[k]
        if body.get("use_path_style") is not None:
            rem["use_path_style"] = bool(body["use_path_style"])
        r.add(C.MODIFIED, f"S3 remote '{rem['remote_name']}' modified.")
        return 200, r.entries

    def h_bk_linstor_create(self, req: Any) -> tuple[int, Any]:
        body = self._body(req, "LinstorRemote")  # type: ignore[attr-defined]
        r = self._remote_reply(C.MASK_CRT)
        name = self._ctl().check_name(body.get("remote_name"), C.FAIL_INVLD_REMOTE_NAME,
                                      "remote", r)
        if self._taken(name):
            raise r.error(FAIL_EXISTS_REMOTE, f"A remote with the name '{name}' already "
                          "exists. Please use a different name or try to modify the remote "
                          "instead.")
        if not body.get("url"):
            raise r.error(FAIL_INVLD_BACKUP_CONFIG | C.MASK_BACKUP, "The remote could not be "
                          "created because the following required parameter is missing: [url]",
                          report=True)
        self.linstor_remotes[name] = {  # type: ignore[attr-defined]
            "remote_name": name, "url": body["url"], "cluster_id": body.get("cluster_id", "")}
        return 200, [self._ctl().make_rc(C.CREATED | MASK_REMOTE, "Remote created")]

    def h_bk_linstor_modify(self, req: Any) -> tuple[int, Any]:
        body = self._body(req, "LinstorRemote")  # type: ignore[attr-defined]
        r = self._remote_reply(C.MASK_MOD)
        name = req.params["remote"]
        rem = self.linstor_remotes.get(name)  # type: ignore[attr-defined]
        if rem is None:
            raise r.error(C.FAIL_NOT_FOUND_REMOTE, f"Remote '{name}' not found.", status=404)
        for k in ("url", "cluster_id"):
            if body.get(k):
                rem[k] = body[k]
        r.add(C.MODIFIED, f"LINSTOR remote '{name}' modified.")
        return 200, r.entries

    def h_bk_remote_delete(self, req: Any) -> tuple[int, Any]:
        # rest/v1/Remotes.java deleteRemote: DELETE /v1/remotes?remote_name=NAME
        name = (req.query.get("remote_name") or [""])[0]
        r = self._ctl().Reply(C.MASK_DEL, 0)
        if self._bk.s3.pop(name.upper(), None) is None and \
                self.linstor_remotes.pop(name, None) is None:  # type: ignore[attr-defined]
            raise r.error(C.FAIL_NOT_FOUND_REMOTE, f"Remote '{name}' not found.", status=404)
        r.add(C.DELETED, f"Remote '{name}' deleted.")
        return 200, r.entries

    # -- reading the bucket ----------------------------------------------------------------------

    def _metas(self, remote: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Every LINSTOR meta file in the bucket (key -> document) and every key."""
        try:
            bucket = self._bucket(remote)
            keys = bucket.keys()
            metas = {}
            for k in keys:
                if k.endswith(".meta") and "_back_" in k:
                    try:
                        metas[k] = json.loads(bucket.get(k))
                    except ValueError:
                        continue  # not one of ours: listed under "other"
        except Exception as err:  # noqa: BLE001 - botocore's errors have no common base here
            raise self._s3_failure(remote, err) from err
        return metas, keys

    @staticmethod
    def _backup_json(key: str, meta: dict[str, Any], keys: set[str],
                     metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
        restorable = all(v["key"] in keys for v in meta["volumes"].values())
        base = meta.get("basedOn")
        seen = {key}
        while restorable and base:
            if base not in metas or base in seen:
                restorable = False
                break
            seen.add(base)
            restorable = all(v["key"] in keys for v in metas[base]["volumes"].values())
            base = metas[base].get("basedOn")
        out = {
            "id": key[:-len(".meta")],
            "start_time": _iso(meta["startTimestamp"]),
            "start_timestamp": meta["startTimestamp"],
            "finished_time": _iso(meta["finishTimestamp"]),
            "finished_timestamp": meta["finishTimestamp"],
            "origin_rsc": meta["rscName"], "origin_snap": meta["snapName"],
            "origin_node": meta["nodeName"],
            "vlms": [{"vlm_nr": int(nr), "finished_time": _iso(v["finishedTimestamp"]),
                      "finished_timestamp": v["finishedTimestamp"], "s3": {"key": v["key"]}}
                     for nr, v in sorted(meta["volumes"].items(), key=lambda i: int(i[0]))],
            "success": True, "restorable": restorable, "s3": {"meta_name": key},
        }
        if base := meta.get("basedOn"):
            out["based_on_id"] = base
        return out

    def h_bk_list(self, req: Any) -> tuple[int, Any]:
        remote = self._s3_remote(req.params["remote"])
        rsc, snap = req.q1("rsc_name", ""), req.q1("snap_name", "")
        metas, keys = self._metas(remote)
        known = set(metas)
        for m in metas.values():
            known |= {v["key"] for v in m["volumes"].values()}
        linstor = {}
        for k, m in metas.items():
            if rsc and m["rscName"].upper() != rsc.upper():
                continue
            if snap and m["snapName"].upper() != snap.upper():
                continue
            b = self._backup_json(k, m, set(keys), metas)
            linstor[b["id"]] = b
        other = [k for k in keys if k not in known]
        return 200, self._ctl().prune({"linstor": linstor, "other": {"files": other}})

    def _find(self, remote: dict[str, Any], rsc: str, snap: str, last: str
              ) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
        metas, _keys = self._metas(remote)
        if last:
            key = last if last.endswith(".meta") else last + ".meta"
            cands = [key] if key in metas else []
        else:
            cands = sorted((k for k, m in metas.items()
                            if m["rscName"].upper() == rsc.upper()
                            and (not snap or m["snapName"].upper() == snap.upper())),
                           key=lambda k: metas[k]["startTimestamp"])
        if not cands:
            what = last or f"{rsc}" + (f" (snapshot {snap})" if snap else "")
            raise self._ctl().ApiError([self._ctl().make_rc(
                FAIL_NOT_FOUND_BACKUP | C.MASK_BACKUP,
                f"Could not find a backup for {what} on remote '{remote['remote_name']}'.")],
                status=404)
        return cands[-1], metas[cands[-1]], metas

    @staticmethod
    def _chain(key: str, metas: dict[str, dict[str, Any]]) -> list[str]:
        """Meta keys from the full backup to ``key``."""
        chain = [key]
        while metas[chain[-1]].get("basedOn"):
            base = metas[chain[-1]]["basedOn"]
            if base not in metas or base in chain:
                raise ValueError(f"backup {chain[-1]} is based on {base}, which is missing")
            chain.append(base)
        return list(reversed(chain))

    # -- create (S3) ---------------------------------------------------------------------------

    def _incremental_base(self, rd: Any, remote: str) -> Any:
        """CtrlBackupCreateApiCallHandler.getIncrementalBase (see the module docstring)."""
        prev = rd.props.get(SRC.format(remote) + "BackupLastSnapshot")
        if not prev:
            return None
        snap = rd.snapshots.get(prev.upper())
        if snap is None or "DELETE" in snap.flags or \
                snap.props.get(SRC.format(remote) + "ShippingStatus") != "Success":
            return None
        if snap.sizes != {vd.nr: vd.size_kib for vd in rd.vds.values()}:
            return None
        return snap

    def h_bk_create(self, req: Any) -> tuple[int, Any]:
        ctl = self._ctl()
        body = self._body(req, "BackupCreate")  # type: ignore[attr-defined]
        r = ctl.Reply(C.MASK_CRT, C.MASK_BACKUP)
        remote = self._s3_remote(req.params["remote"])
        rname = remote["remote_name"]
        rd = self._rd(body.get("rsc_name") or "", r)  # type: ignore[attr-defined]
        ts = ctl.now_ms()
        bid = store.backup_id(ts)
        snap_name = body.get("snap_name") or bid
        base = self._incremental_base(rd, rname) if body.get("incremental") else None
        base_meta = None
        metas: dict[str, dict[str, Any]] = {}
        if base is not None:
            metas, _keys = self._metas(remote)
            base_meta = next((k for k, m in metas.items() if m.get("snapDfnUuid") == base.uuid),
                             None)
            if base_meta is None:
                base = None  # "the previous backup ... has already been deleted": full
        snap = self._take_snapshot(rd, {"name": snap_name}, r)  # type: ignore[attr-defined]
        try:
            self._capture(rd, snap)  # type: ignore[attr-defined]
        except OSError as e:
            self._drop_snapshot_files(snap)  # type: ignore[attr-defined]
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Snapshot copy failed: {e}") from None
        snap.flags.append("BACKUP")
        ns = SRC.format(rname)
        snap.props.update({ns + "BackupTargetRemote": rname, ns + "BackupStartTimestamp": str(ts),
                           ns + "ShippingStatus": "Shipping"})
        rd.snapshots[snap.name.upper()] = snap
        rd.props[ns + "BackupLastStartedOrQueued"] = snap.name
        node = snap.nodes[0]
        meta = {"rscName": rd.name, "snapName": snap.name, "backupId": bid, "nodeName": node,
                "startTimestamp": ts, "clusterId": self._bk.cluster_id,
                "snapDfnUuid": snap.uuid, "basedOn": base_meta,
                "storPool": snap.pools.get(node.upper(), ""),
                "rscDfnProps": dict(snap.rd_props), "volumes": {}}
        try:
            bucket = self._bucket(remote)
            for nr, path in sorted(snap.files.items()):
                key = store.volume_key(rd.name, nr, bid, snap.name)
                bucket.put(key, store.encode(path, base.files.get(nr) if base else None))
                meta["volumes"][str(nr)] = {"key": key, "sizeKib": snap.sizes[nr],
                                            "finishedTimestamp": ctl.now_ms()}
            meta["finishTimestamp"] = ctl.now_ms()
            bucket.put(store.meta_key(rd.name, bid, snap.name), json.dumps(meta).encode())
        except Exception as err:  # noqa: BLE001 - any S3 failure fails the shipment
            snap.props[ns + "ShippingStatus"] = "Failed"
            raise self._s3_failure(remote, err) from err
        snap.props[ns + "ShippingStatus"] = "Success"
        rd.props[ns + "BackupLastSnapshot"] = snap.name
        kind = "incremental" if base is not None else "full"
        r.add(C.CREATED, f"Shipping of the {kind} backup of resource '{rd.name}' (snapshot "
              f"'{snap.name}') to remote '{rname}' started.",
              refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 201, r.entries

    # -- info / restore ------------------------------------------------------------------------

    def h_bk_info(self, req: Any) -> tuple[int, Any]:
        body = self._body(req, "BackupInfoRequest")  # type: ignore[attr-defined]
        remote = self._s3_remote(req.params["remote"])
        key, meta, metas = self._find(remote, body.get("src_rsc_name") or "",
                                      body.get("src_snap_name") or "",
                                      body.get("last_backup") or "")
        chain = self._chain(key, metas)
        sizes = {nr: v["sizeKib"] for nr, v in meta["volumes"].items()}
        pool = meta.get("storPool", "")
        rename = body.get("stor_pool_map") or {}
        return 200, {
            "rsc": meta["rscName"], "snap": meta["snapName"],
            "full": chain[0][:-len(".meta")], "latest": key[:-len(".meta")],
            "count": len(chain), "dl_size_kib": sum(sizes.values()),
            "alloc_size_kib": sum(sizes.values()),
            "storpools": [{"name": pool, "target_name": rename.get(pool, pool),
                           "vlms": [{"name": v["key"], "layer_type": "STORAGE",
                                     "dl_size_kib": v["sizeKib"],
                                     "alloc_size_kib": v["sizeKib"],
                                     "usable_size_kib": v["sizeKib"]}
                                    for _nr, v in sorted(meta["volumes"].items())]}]}

    def _new_file(self, tag: str) -> Path:
        with self._bk.lock:
            self._bk.dl_counter += 1
            n = self._bk.dl_counter
        path = self.devices.state_dir / f"snap-dl-{tag}-{n}.img"  # type: ignore[attr-defined]
        self.devices.register_file(path)  # type: ignore[attr-defined]
        return path

    def _target_rd(self, name: str, grp: str | None, r: Any) -> Any:
        rd = self.rds.get(name.upper())  # type: ignore[attr-defined]
        if rd is None:
            rg = self._rg(grp or self._ctl().DEFAULT_RG, r)  # type: ignore[attr-defined]
            rd = self._create_rd(name, rg, {}, r)  # type: ignore[attr-defined]
        elif rd.resources:
            # CtrlBackupRestoreApiCallHandler: no download into an RD that has resources
            raise r.error(C.FAIL_IN_USE, f"Cannot download backup into resource definition "
                          f"'{rd.name}' because it has resources.", refs={"RscDfn": rd.name})
        return rd

    def _store_snapshot(self, rd: Any, snap_name: str, node: Any, pool: str,
                        sizes: dict[int, int], files: dict[int, Path], rd_props: dict[str, str],
                        props: dict[str, str], r: Any) -> Any:
        ctl = self._ctl()
        if snap_name.upper() in rd.snapshots:
            for p in files.values():
                self.devices.remove_file(p)  # type: ignore[attr-defined]
            # CtrlBackupRestoreApiCallHandler: FAIL_EXISTS_SNAPSHOT
            raise r.error(516 | C.MASK_ERROR, f"Snapshot '{snap_name}' of resource "
                          f"'{rd.name}' already exists.", refs={"RscDfn": rd.name})
        seq = 1 + max((int(x.props.get("SequenceNumber", "0") or 0)
                       for x in rd.snapshots.values()), default=0)
        snap = ctl.Snapshot(name=snap_name, rd_name=rd.name, nodes=[node.name],
                            pools={node.name.upper(): pool}, sizes=sizes, files=files,
                            timestamps={node.name.upper(): ctl.now_ms()},
                            props={"SequenceNumber": str(seq), **props}, rd_props=rd_props,
                            flags=["SUCCESSFUL", "BACKUP"])
        rd.snapshots[snap_name.upper()] = snap
        return snap

    def _pool_on(self, node: Any, pool: str, rename: dict[str, str], r: Any) -> str:
        name = rename.get(pool, pool)
        if name.upper() not in node.pools:
            raise r.error(C.FAIL_NOT_FOUND_STOR_POOL, f"Storage pool '{name}' on node "
                          f"'{node.name}' not found; map the backup's pool '{pool}' with "
                          "stor_pool_map.")
        return node.pools[name.upper()].name

    def _restore_resource(self, req: Any, rd: Any, snap: Any, node: Any,
                          rename: dict[str, str]) -> list[dict]:
        """Without download_only: restore the resource from the downloaded snapshot (the same
        handlers as snapshot-restore-volume-definition / -resource)."""
        ctl = self._ctl()
        out: list[dict] = []
        for handler in (self.h_restore_vd, self.h_restore_resource):  # type: ignore[attr-defined]
            sub = ctl.Request(method="POST", path=req.path,
                              params={"rd": rd.name, "snap": snap.name}, query={},
                              raw_body=json.dumps({"to_resource": rd.name,
                                                   "nodes": [node.name]}).encode(),
                              after=req.after)
            _status, entries = handler(sub)
            out += entries
        return out

    def h_bk_restore(self, req: Any) -> tuple[int, Any]:
        ctl = self._ctl()
        body = self._body(req, "BackupRestore")  # type: ignore[attr-defined]
        r = ctl.Reply(C.MASK_CRT, C.MASK_BACKUP)
        remote = self._s3_remote(req.params["remote"])
        target = ctl.check_name(body.get("target_rsc_name"), C.FAIL_INVLD_RSC_NAME,
                                "resource", r)
        node = self._node(body.get("node_name") or "", r)  # type: ignore[attr-defined]
        if not node.online:
            raise r.error(C.FAIL_NOT_CONNECTED, f"Node '{node.name}' is not connected.")
        key, meta, metas = self._find(remote, body.get("src_rsc_name") or "",
                                      body.get("src_snap_name") or "",
                                      body.get("last_backup") or "")
        try:
            chain = self._chain(key, metas)
        except ValueError as err:
            raise r.error(FAIL_NOT_FOUND_BACKUP, str(err), status=404) from None
        rename = body.get("stor_pool_map") or {}
        pool = self._pool_on(node, meta.get("storPool", ""), rename, r)
        rd = self._target_rd(target, body.get("dst_rsc_grp"), r)
        if meta["snapName"].upper() in rd.snapshots:
            raise r.error(516 | C.MASK_ERROR, f"Snapshot '{meta['snapName']}' of resource "
                          f"'{rd.name}' already exists.", refs={"RscDfn": rd.name})
        files: dict[int, Path] = {}
        try:
            bucket = self._bucket(remote)
            for nr in meta["volumes"]:
                path = files[int(nr)] = self._new_file(f"{target}-{nr}")
                for link in chain:
                    store.apply(bucket.get(metas[link]["volumes"][nr]["key"]), path)
        except Exception as err:  # noqa: BLE001 - a failed download leaves nothing behind
            for p in files.values():
                self.devices.remove_file(p)  # type: ignore[attr-defined]
            raise self._s3_failure(remote, err) from err
        snap = self._store_snapshot(
            rd, meta["snapName"], node, pool,
            {int(nr): v["sizeKib"] for nr, v in meta["volumes"].items()}, files,
            dict(meta.get("rscDfnProps") or {}),
            {TGT + "BackupSrcRemote": remote["remote_name"], TGT + "ShippingStatus": "Success"},
            r)
        r.add(C.CREATED, f"Backup '{key[:-len('.meta')]}' of remote '{remote['remote_name']}' "
              f"downloaded into snapshot '{snap.name}' of resource '{rd.name}' on node "
              f"'{node.name}'.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        if body.get("download_only"):
            r.add(1019 | C.MASK_WARN, "The backup was only downloaded (download_only); restore "
                  "a resource from the snapshot to use it.")  # WARN_BACKUP_DL_ONLY
            return 201, r.entries
        return 201, r.entries + self._restore_resource(req, rd, snap, node, rename)

    def h_bk_abort(self, req: Any) -> tuple[int, Any]:
        ctl = self._ctl()
        body = self._body(req, "BackupAbort")  # type: ignore[attr-defined]
        r = ctl.Reply(C.MASK_MOD, C.MASK_BACKUP)
        rd = self._rd(body.get("rsc_name") or "", r)  # type: ignore[attr-defined]
        # shipments finish within their request here: there is never one in progress
        r.add(INFO_NOOP, f"No backup shipment or restore of resource '{rd.name}' is in "
              "progress; nothing to abort.", refs={"RscDfn": rd.name})
        return 200, r.entries

    # -- delete --------------------------------------------------------------------------------

    def h_bk_delete(self, req: Any) -> tuple[int, Any]:
        ctl = self._ctl()
        r = ctl.Reply(C.MASK_DEL, C.MASK_BACKUP)
        remote = self._s3_remote(req.params["remote"])
        metas, keys = self._metas(remote)
        cascading = req.qbool("cascading") or req.qbool("all")
        selected: list[str] = []
        not_found: list[str] = []
        bid, prefix, s3key = req.q1("id", ""), req.q1("id_prefix", ""), req.q1("s3key", "")
        rsc = req.q1("resource_name", "")
        if bid:
            key = bid if bid.endswith(".meta") else bid + ".meta"
            (selected if key in metas else not_found).append(key)
        elif prefix:
            selected = sorted(k for k in metas if k.startswith(prefix))
            if not selected:
                r.add(C.WARN_NOT_FOUND, f"No backup with id prefix '{prefix}' found on remote "
                      f"'{remote['remote_name']}'")
        elif s3key:
            (selected if s3key in metas else not_found).append(s3key)
        elif rsc:
            selected = sorted(k for k, m in metas.items() if m["rscName"].upper() == rsc.upper())
        elif req.qbool("all"):
            selected = sorted(metas)
        else:
            raise r.error(C.FAIL_INVLD_REQUEST, "Name at least one of id, id_prefix, s3key, "
                          "resource_name or all.", status=400)
        todo: list[str] = []

        def add(key: str) -> None:  # CtrlBackupApiCallHandler.addToDeleteList
            if key in todo:
                return
            todo.append(key)
            for other, m in metas.items():
                if m.get("basedOn") == key and other not in todo:
                    if not cascading:
                        raise r.error(FAIL_DEPENDEND_BACKUP, f"{key} should be deleted, but at "
                                      f"least {other} is referencing it. Use --cascading to "
                                      "delete recursively")
                    add(other)

        for key in selected:
            add(key)
        objects = [k for key in todo for k in
                   [key, *(v["key"] for v in metas[key]["volumes"].values())] if k in keys]
        if req.qbool("dryrun"):
            r.add(0, f"Would delete {sorted(objects)}")
            return 200, r.entries
        if objects:
            try:
                self._bucket(remote).delete(objects)
            except Exception as err:  # noqa: BLE001
                raise self._s3_failure(remote, err) from err
            r.add(0, f"Successfully deleted {sorted(objects)}")
        else:
            r.add(INFO_NOOP, "Could not find any backups to delete.")
        if not_found:
            r.add(C.WARN_NOT_FOUND, "The following S3 keys were not found in the given "
                  "remote:\n" + "".join(f"  {k}\n" for k in not_found))
        if not req.qbool("keep_snaps"):
            # the snapshots the deleted backups were shipped from go too
            uuids = {metas[k].get("snapDfnUuid") for k in todo}
            for rd in self.rds.values():  # type: ignore[attr-defined]
                for skey, snap in list(rd.snapshots.items()):
                    if snap.uuid in uuids:
                        del rd.snapshots[skey]
                        self._drop_snapshot_files(snap)  # type: ignore[attr-defined]
                        r.add(C.DELETED, f"Snapshot '{snap.name}' of resource '{rd.name}' "
                              "deleted.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 200, r.entries

    # -- LINSTOR to LINSTOR --------------------------------------------------------------------

    def h_bk_ship(self, req: Any) -> tuple[int, Any]:
        ctl = self._ctl()
        body = self._body(req, "BackupShip")  # type: ignore[attr-defined]
        r = ctl.Reply(C.MASK_CRT, C.MASK_BACKUP)
        name = req.params["remote"]
        remote = self.linstor_remotes.get(name)  # type: ignore[attr-defined]
        if remote is None:
            if name.upper() in self._bk.s3:
                raise r.error(C.FAIL_INVLD_REMOTE_NAME, f"The remote {name} is not a linstor "
                              "remote.")
            raise r.error(C.FAIL_NOT_FOUND_REMOTE, f"The remote {name} does not exist. Please "
                          "provide a valid remote or create a new one.", status=404)
        rd = self._rd(body.get("src_rsc_name") or "", r)  # type: ignore[attr-defined]
        dst = ctl.check_name(body.get("dst_rsc_name"), C.FAIL_INVLD_RSC_NAME, "resource", r)
        ts = ctl.now_ms()
        # CtrlBackupL2LSrcApiCallHandler: an existing src_snap_name is shipped (not if it
        # failed or is being deleted); otherwise a new snapshot named after the backup id
        snap = rd.snapshots.get((body.get("src_snap_name") or "").upper())
        if snap is not None and ({"DELETE", "FAILED_DEPLOYMENT", "FAILED_DISCONNECT"}
                                 & set(snap.flags)):
            raise r.error(C.FAIL_INVLD_REMOTE_NAME, "The given snapshot was not successful and "
                          "can therefore not be shipped", report=True)
        if snap is None:
            snap_name = store.backup_id(ts)
            snap = self._take_snapshot(rd, {"name": snap_name}, r)  # type: ignore[attr-defined]
            try:
                self._capture(rd, snap)  # type: ignore[attr-defined]
            except OSError as e:
                self._drop_snapshot_files(snap)  # type: ignore[attr-defined]
                raise r.error(C.FAIL_UNKNOWN_ERROR, f"Snapshot copy failed: {e}") from None
            rd.snapshots[snap.name.upper()] = snap
        ns = SRC.format(name)
        snap.props.update({ns + "BackupTargetRemote": name, ns + "BackupStartTimestamp": str(ts),
                           ns + "ShippingStatus": "Shipping"})
        volumes = {}
        for nr, path in sorted(snap.files.items()):
            volumes[str(nr)] = {"sizeKib": snap.sizes[nr], "data": base64.b64encode(
                store.encode(path, None)).decode()}
        payload = {"srcClusterId": self._bk.cluster_id, "dstClusterId": remote.get("cluster_id"),
                   "srcRscName": rd.name, "srcSnapName": snap.name, "dstRscName": dst,
                   "dstSnapName": body.get("dst_snap_name") or snap.name,
                   "dstNodeName": body.get("dst_node_name") or "",
                   "dstStorPool": body.get("dst_stor_pool") or "",
                   "storPoolRename": body.get("stor_pool_rename") or {},
                   "srcStorPool": snap.pools.get(snap.nodes[0].upper(), ""),
                   "downloadOnly": bool(body.get("download_only")),
                   "dstRscGrp": body.get("dst_rsc_grp") or "",
                   "rscDfnProps": dict(snap.rd_props), "volumes": volumes}
        try:
            # LINSTOR's source controller asks the target's /v1/internal/backups/requestShip
            reply = requests.post(remote["url"].rstrip("/") + "/v1/internal/backups/requestShip",
                                  json=payload, timeout=60)
            answer = reply.json()
        except (requests.RequestException, ValueError) as err:
            snap.props[ns + "ShippingStatus"] = "Failed"
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Shipping to remote '{name}' "
                          f"({remote['url']}) failed: {err}", report=True) from None
        if reply.status_code >= 300:
            snap.props[ns + "ShippingStatus"] = "Failed"
            msgs = "; ".join(e.get("message", "") for e in answer) if isinstance(answer, list) \
                else str(answer)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Remote '{name}' refused the shipment: {msgs}",
                          report=True)
        snap.props[ns + "ShippingStatus"] = "Success"
        rd.props[ns + "BackupLastSnapshot"] = snap.name
        r.add(C.CREATED, f"Shipping of snapshot '{snap.name}' of resource '{rd.name}' to "
              f"remote '{name}' started.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 201, r.entries

    def h_bk_receive(self, req: Any) -> tuple[int, Any]:
        ctl = self._ctl()
        r = ctl.Reply(C.MASK_CRT, C.MASK_BACKUP)
        try:
            body = json.loads(req.raw_body)
        except ValueError as e:
            raise r.error(C.FAIL_INVLD_REQUEST, f"Malformed shipment: {e}", status=400) from None
        if body.get("dstClusterId") and body["dstClusterId"] != self._bk.cluster_id:
            raise r.error(FAIL_INVLD_BACKUP_CONFIG, f"This cluster's id is "
                          f"{self._bk.cluster_id}, the shipment is for {body['dstClusterId']}.")
        nodes = [n for n in self.nodes.values() if n.online]  # type: ignore[attr-defined]
        if body.get("dstNodeName"):
            nodes = [self._node(body["dstNodeName"], r)]  # type: ignore[attr-defined]
        rename = dict(body.get("storPoolRename") or {})
        if body.get("dstStorPool"):
            rename[body.get("srcStorPool", "")] = body["dstStorPool"]
        src_pool = body.get("srcStorPool", "")
        node = next((n for n in nodes if rename.get(src_pool, src_pool).upper() in n.pools),
                    None)
        if node is None:
            raise r.error(C.FAIL_NOT_FOUND_STOR_POOL, f"No online node has storage pool "
                          f"'{rename.get(src_pool, src_pool)}'; name one with dst_stor_pool.")
        pool = self._pool_on(node, src_pool, rename, r)
        rd = self._target_rd(body["dstRscName"], body.get("dstRscGrp"), r)
        if body["dstSnapName"].upper() in rd.snapshots:
            raise r.error(516 | C.MASK_ERROR, f"Snapshot '{body['dstSnapName']}' of resource "
                          f"'{rd.name}' already exists.", refs={"RscDfn": rd.name})
        files: dict[int, Path] = {}
        for nr, v in body["volumes"].items():
            path = files[int(nr)] = self._new_file(f"{rd.name}-{nr}")
            store.apply(base64.b64decode(v["data"]), path)
        snap = self._store_snapshot(
            rd, body["dstSnapName"], node, pool,
            {int(nr): v["sizeKib"] for nr, v in body["volumes"].items()}, files,
            dict(body.get("rscDfnProps") or {}),
            {TGT + "BackupSrcRemote": body.get("srcClusterId", ""),
             TGT + "ShippingStatus": "Success",
             "Backup/FromClusterUUID": body.get("srcClusterId", "")}, r)
        r.add(C.CREATED, f"Snapshot '{snap.name}' of resource '{rd.name}' received.",
              refs={"RscDfn": rd.name, "Snapshot": snap.name})
        if body.get("downloadOnly"):
            return 201, r.entries
        return 201, r.entries + self._restore_resource(req, rd, snap, node, rename)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"

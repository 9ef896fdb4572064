"""Remotes and the backup listing: /v1/remotes[/s3|/linstor|/ebs][/{name}], DELETE
/v1/remotes?remote_name=, GET /v1/remotes/{remote}/backups (LINSTOR 1.33.3: rest/v1/Remotes.java,
CtrlRemoteApiCallHandler, Backups.listBackups, BackupHelper).

- S3 remotes ``POST /v1/remotes/s3`` / ``PUT /v1/remotes/s3/{name}``, LINSTOR remotes
  ``POST /v1/remotes/linstor`` / ``PUT /v1/remotes/linstor/{name}``: 200 with
  CREATED|MASK_REMOTE; a taken name is FAIL_EXISTS_REMOTE; missing settings
  FAIL_INVLD_BACKUP_CONFIG|MASK_BACKUP; a new S3 remote must list its bucket with its keys;
  listings never show the keys or the passphrase (Json.apiToS3Remote). Not modelled: LINSTOR
  stores the keys encrypted and refuses an S3 remote while no master passphrase is set
  (FAIL_NOT_FOUND_CRYPT_KEY, EncryptionHelper.encrypt); the simulator has no passphrase.
- Backups are read from the bucket (sim/backup_store.py: LINSTOR's key layout); a missing remote
  is FAIL_NOT_FOUND_REMOTE, another kind FAIL_INVLD_REMOTE_NAME, both | MASK_BACKUP.
"""

from __future__ import annotations

import json
import threading
import time
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any

from . import backup_store as store
from . import consts as C
from .model import ApiError, Reply, check_name, make_rc, prune
from .schemas import REQUEST_SCHEMAS
from .state import ControllerState

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

@dataclass
class BackupState:
    s3: dict[str, dict[str, Any]] = field(default_factory=dict)  # key: upper name
    cluster_id: str = field(default_factory=lambda: str(_uuid.uuid4()))
    dl_counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RemoteRoutes(ControllerState):
    """Remotes, and reading a bucket's backups (sim/backups.py ships and restores)."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def _bk(self) -> BackupState:
        st = self.__dict__.get("_backup_state")
        if st is None:
            st = self.__dict__["_backup_state"] = BackupState()
        return st

    def _remote_reply(self, op: int) -> Any:
        return Reply(op, MASK_REMOTE)

    def _s3_remote(self, name: str) -> dict[str, Any]:
        # BackupHelper.getS3Remote: missing -> FAIL_NOT_FOUND_REMOTE, another kind ->
        # FAIL_INVLD_REMOTE_NAME, both | MASK_BACKUP
        rem = self._bk.s3.get(name.upper())
        if rem is not None:
            return rem
        if name not in self.linstor_remotes:  # type: ignore[attr-defined]
            raise ApiError([make_rc(C.FAIL_NOT_FOUND_REMOTE | C.MASK_BACKUP,
                                            f"The remote {name} does not exist. Please provide "
                                            "a valid remote or create a new one.")])
        raise ApiError([make_rc(C.FAIL_INVLD_REMOTE_NAME | C.MASK_BACKUP,
                                        f"The remote {name} is not an s3 remote.")])

    def _bucket(self, remote: dict[str, Any]) -> store.Bucket:
        return store.Bucket(remote)

    def _s3_failure(self, remote: dict[str, Any], err: Exception) -> Exception:
        return ApiError([make_rc(
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

    def h_remotes(self, req: Any) -> tuple[int, Any]:
        # rest/v1/Remotes.java getRemotes: one RemoteList object, empty lists dropped (C1)
        return 200, prune({
            "s3_remotes": [self._s3_json(r) for r in self._bk.s3.values()],
            "linstor_remotes": self._linstor_json(), "ebs_remotes": []})

    def h_remotes_kind(self, req: Any) -> tuple[int, Any]:
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
        name = check_name(body.get("remote_name"), C.FAIL_INVLD_REMOTE_NAME,
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
            raise ApiError([make_rc(
                C.FAIL_UNKNOWN_ERROR | C.MASK_BACKUP,
                "The remote could not be reached with the given parameters and therefore wasn't "
                "created.\nPlease check for spelling errors and that you have the correct "
                "access-key and secret-key.\nFor more information on the error, please check the "
                "error-report.", report=True)]) from None
        self._bk.s3[name.upper()] = rem
        # rest/v1/Remotes.java answers 200 (linstor-facts 3.11); the entry is CREATED|MASK_REMOTE
        return 200, [make_rc(C.CREATED | MASK_REMOTE, "Remote created")]

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
        name = check_name(body.get("remote_name"), C.FAIL_INVLD_REMOTE_NAME,
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
        return 200, [make_rc(C.CREATED | MASK_REMOTE, "Remote created")]

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

    def h_remote_delete(self, req: Any) -> tuple[int, Any]:
        # rest/v1/Remotes.java deleteRemote: DELETE /v1/remotes?remote_name=NAME
        name = (req.query.get("remote_name") or [""])[0]
        r = Reply(C.MASK_DEL, 0)
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

    def h_backups(self, req: Any) -> tuple[int, Any]:
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
        return 200, prune({"linstor": linstor, "other": {"files": other}})

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
            raise ApiError([make_rc(
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

def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"

"""Backup shipping: create, info, restore, delete, abort and ship under /v1/remotes/{remote}/backups.

Modelled on LINSTOR 1.33.3 (controller: rest/v1/Remotes.java, rest/v1/Backups.java,
CtrlRemoteApiCallHandler, backup/CtrlBackupCreateApiCallHandler, CtrlBackupApiCallHandler,
CtrlBackupRestoreApiCallHandler, CtrlBackupL2LSrcApiCallHandler/DstApiCallHandler):

- Remotes and the backup listing: sim/remotes.py.
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
from pathlib import Path
from typing import Any

import requests

from . import backup_store as store
from . import consts as C
from .model import DEFAULT_RG, Reply, Request, Snapshot, check_name, now_ms
from .remotes import (
    FAIL_DEPENDEND_BACKUP,
    FAIL_INVLD_BACKUP_CONFIG,
    FAIL_NOT_FOUND_BACKUP,
    INFO_NOOP,
    SRC,
    TGT,
    RemoteRoutes,
)


class BackupRoutes(RemoteRoutes):
    """Shipping to S3 and to another LINSTOR, downloading, deleting."""

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
        body = self._body(req, "BackupCreate")  # type: ignore[attr-defined]
        r = Reply(C.MASK_CRT, C.MASK_BACKUP)
        remote = self._s3_remote(req.params["remote"])
        rname = remote["remote_name"]
        rd = self._rd(body.get("rsc_name") or "", r)  # type: ignore[attr-defined]
        ts = now_ms()
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
                                            "finishedTimestamp": now_ms()}
            meta["finishTimestamp"] = now_ms()
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
            rg = self._rg(grp or DEFAULT_RG, r)  # type: ignore[attr-defined]
            rd = self._create_rd(name, rg, {}, r)  # type: ignore[attr-defined]
        elif rd.resources:
            # CtrlBackupRestoreApiCallHandler: no download into an RD that has resources
            raise r.error(C.FAIL_IN_USE, f"Cannot download backup into resource definition "
                          f"'{rd.name}' because it has resources.", refs={"RscDfn": rd.name})
        return rd

    def _store_snapshot(self, rd: Any, snap_name: str, node: Any, pool: str,
                        sizes: dict[int, int], files: dict[int, Path], rd_props: dict[str, str],
                        props: dict[str, str], r: Any) -> Any:
        if snap_name.upper() in rd.snapshots:
            for p in files.values():
                self.devices.remove_file(p)  # type: ignore[attr-defined]
            # CtrlBackupRestoreApiCallHandler: FAIL_EXISTS_SNAPSHOT
            raise r.error(516 | C.MASK_ERROR, f"Snapshot '{snap_name}' of resource "
                          f"'{rd.name}' already exists.", refs={"RscDfn": rd.name})
        seq = 1 + max((int(x.props.get("SequenceNumber", "0") or 0)
                       for x in rd.snapshots.values()), default=0)
        snap = Snapshot(name=snap_name, rd_name=rd.name, nodes=[node.name],
                            pools={node.name.upper(): pool}, sizes=sizes, files=files,
                            timestamps={node.name.upper(): now_ms()},
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
        out: list[dict] = []
        for handler in (self.h_restore_vd, self.h_restore_resource):  # type: ignore[attr-defined]
            sub = Request(method="POST", path=req.path,
                              params={"rd": rd.name, "snap": snap.name}, query={},
                              raw_body=json.dumps({"to_resource": rd.name,
                                                   "nodes": [node.name]}).encode(),
                              after=req.after)
            _status, entries = handler(sub)
            out += entries
        return out

    def h_bk_restore(self, req: Any) -> tuple[int, Any]:
        body = self._body(req, "BackupRestore")  # type: ignore[attr-defined]
        r = Reply(C.MASK_CRT, C.MASK_BACKUP)
        remote = self._s3_remote(req.params["remote"])
        target = check_name(body.get("target_rsc_name"), C.FAIL_INVLD_RSC_NAME,
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
        body = self._body(req, "BackupAbort")  # type: ignore[attr-defined]
        r = Reply(C.MASK_MOD, C.MASK_BACKUP)
        rd = self._rd(body.get("rsc_name") or "", r)  # type: ignore[attr-defined]
        # shipments finish within their request here: there is never one in progress
        r.add(INFO_NOOP, f"No backup shipment or restore of resource '{rd.name}' is in "
              "progress; nothing to abort.", refs={"RscDfn": rd.name})
        return 200, r.entries

    # -- delete --------------------------------------------------------------------------------

    def h_bk_delete(self, req: Any) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_BACKUP)
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
        body = self._body(req, "BackupShip")  # type: ignore[attr-defined]
        r = Reply(C.MASK_CRT, C.MASK_BACKUP)
        name = req.params["remote"]
        remote = self.linstor_remotes.get(name)  # type: ignore[attr-defined]
        if remote is None:
            if name.upper() in self._bk.s3:
                raise r.error(C.FAIL_INVLD_REMOTE_NAME, f"The remote {name} is not a linstor "
                              "remote.")
            raise r.error(C.FAIL_NOT_FOUND_REMOTE, f"The remote {name} does not exist. Please "
                          "provide a valid remote or create a new one.", status=404)
        rd = self._rd(body.get("src_rsc_name") or "", r)  # type: ignore[attr-defined]
        dst = check_name(body.get("dst_rsc_name"), C.FAIL_INVLD_RSC_NAME, "resource", r)
        ts = now_ms()
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
        r = Reply(C.MASK_CRT, C.MASK_BACKUP)
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

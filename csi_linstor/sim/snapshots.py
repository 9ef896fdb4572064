"""Snapshots: /v1/resource-definitions/{rd}/snapshots[/{snap}], /v1/actions/snapshot/multi,
snapshot-restore-volume-definition and snapshot-restore-resource.
"""

from __future__ import annotations

import time
from typing import Any

from . import consts as C
from .model import (
    LOCAL_REMOTE,
    SNAPSHOT_PROVIDERS,
    Reply,
    Request,
    ResourceDef,
    Snapshot,
    check_name,
    now_ms,
)
from .state import ControllerState


class SnapshotRoutes(ControllerState):
    """Snapshot routes and the deferred snapshot deletion (reap)."""

    def reap(self) -> None:
        """Finish the snapshot deletions whose satellites are done (see h_snapshot_delete)."""
        now = time.monotonic()
        for rd in self.rds.values():
            for key, snap in list(rd.snapshots.items()):
                if snap.delete_at is not None and snap.delete_at <= now:
                    del rd.snapshots[key]
                    self._drop_snapshot_files(snap)

    def _take_snapshot(self, rd: ResourceDef, sb: dict, r: Reply) -> Snapshot:
        name = check_name(sb.get("name"), C.FAIL_INVLD_SNAPSHOT_NAME, "snapshot", r)
        refs = {"RscDfn": rd.name, "Snapshot": name}
        if name.upper() in rd.snapshots:
            raise r.error(C.FAIL_EXISTS_SNAPSHOT_DFN,
                          f"A snapshot definition with the name '{name}' already exists in "
                          f"resource definition '{rd.name}'.", refs=refs)
        diskful = rd.diskful()
        if sb.get("nodes"):
            want = {n.upper() for n in sb["nodes"]}
            for n in sb["nodes"]:
                self._node(n, r)
                if n.upper() not in rd.resources or rd.resources[n.upper()].diskless:
                    raise r.error(C.FAIL_NOT_FOUND_RSC,
                                  f"Resource '{rd.name}' has no disk on node '{n}'.", refs=refs)
            diskful = [res for res in diskful if res.node.upper() in want]
        if not diskful:
            raise r.error(C.FAIL_NOT_ENOUGH_NODES,
                          f"Resource '{rd.name}' has no diskful resources to snapshot.",
                          refs=refs)
        for res in diskful:
            pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
            if pool is None or pool.kind not in SNAPSHOT_PROVIDERS:
                raise r.error(C.FAIL_SNAPSHOTS_NOT_SUPPORTED,
                              f"Storage pool '{res.pool}' on node '{res.node}' "
                              f"(provider {pool.kind if pool else '?'}) does not support "
                              "snapshots.", refs=refs)
        offline = [res.node for res in diskful if not self.nodes[res.node.upper()].online]
        if offline:
            raise r.error(C.FAIL_NOT_CONNECTED,
                          f"Cannot create snapshot: no connection to {', '.join(offline)}.",
                          refs=refs)
        # rest/v1/Snapshots.createSnapshot and Actions (snapshot/multi) read the new snapshot's
        # props from snapshot_definition_props only; "props", its deprecated spelling, is ignored
        user_props = dict(sb.get("snapshot_definition_props") or {})
        self._validate_props(user_props, r)
        ts = now_ms()
        # SnapshotDefinitionControllerFactory: SequenceNumber = the RD's highest + 1; and the
        # backup-shipping bookkeeping key, empty (LINSTOR 1.33.3).
        seq = 1 + max((int(x.props.get("SequenceNumber", "0") or 0)
                       for x in rd.snapshots.values()), default=0)
        sd_props = {**user_props, "SequenceNumber": str(seq),
                    "BackupShipping/BackupNodeIdsToReset": ""}
        return Snapshot(name=name, rd_name=rd.name, nodes=[res.node for res in diskful],
                        pools={res.node.upper(): res.pool for res in diskful},
                        sizes={vd.nr: vd.size_kib for vd in rd.vds.values()}, files={},
                        timestamps={res.node.upper(): ts for res in diskful},
                        vd_props={vd.nr: dict(vd.props) for vd in rd.vds.values()},
                        props=sd_props, rd_props=dict(rd.props),
                        flags=["FAILED_DEPLOYMENT"] if self.snapshot_fail else ["SUCCESSFUL"])

    def _capture(self, rd: ResourceDef, snap: Snapshot) -> None:
        for vd in rd.vds.values():
            if vd.device is not None:
                snap.files[vd.nr] = self.devices.snapshot_file(
                    vd.device, f"{rd.name}-{snap.name}-{vd.nr}")

    def _drop_snapshot_files(self, snap: Snapshot) -> None:
        for p in snap.files.values():
            self.devices.remove_file(p)
        snap.files.clear()

    def h_snapshot_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "Snapshot")
        r = Reply(C.MASK_CRT, C.MASK_SNAPSHOT)
        rd = self._rd(req.params["rd"], r)
        snap = self._take_snapshot(rd, body, r)
        try:
            self._capture(rd, snap)
        except OSError as e:
            self._drop_snapshot_files(snap)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Snapshot copy failed: {e}") from None
        rd.snapshots[snap.name.upper()] = snap
        r.add(C.CREATED, f"New snapshot '{snap.name}' of resource '{rd.name}' registered.",
              refs={"RscDfn": rd.name, "Snapshot": snap.name})
        r.add(C.CREATED, f"Snapshot '{snap.name}' of resource '{rd.name}' successfully "
              "taken.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 201, r.entries

    def h_snapshot_multi(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "CreateMultiSnapshotRequest")
        r = Reply(C.MASK_CRT, C.MASK_SNAPSHOT)
        items = body.get("snapshots") or []
        if not items:
            raise r.error(C.FAIL_INVLD_REQUEST, "No snapshots requested.")
        planned: list[tuple[ResourceDef, Snapshot]] = []
        seen = set()
        for sb in items:
            rd = self._rd(sb.get("resource_name") or "", r)
            key = (rd.key, str(sb.get("name", "")).upper())
            if key in seen:
                raise r.error(C.FAIL_EXISTS_SNAPSHOT_DFN,
                              f"Snapshot '{sb.get('name')}' requested twice for '{rd.name}'.")
            seen.add(key)
            planned.append((rd, self._take_snapshot(rd, sb, r)))
        try:
            for rd, snap in planned:
                self._capture(rd, snap)
        except OSError as e:
            for _rd, snap in planned:
                self._drop_snapshot_files(snap)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Snapshot copy failed: {e}") from None
        for rd, snap in planned:
            rd.snapshots[snap.name.upper()] = snap
            r.add(C.CREATED, f"Snapshot '{snap.name}' of resource '{rd.name}' successfully "
                  "taken.", refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 201, r.entries

    def h_snapshots(self, req: Request) -> tuple[int, Any]:
        rd = self._rd(req.params["rd"], Reply(0, C.MASK_SNAPSHOT))
        return 200, self._page([self._snapshot_json(rd, s)
                                       for s in self._sorted(rd.snapshots)], req)

    def h_snapshot(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_SNAPSHOT)
        rd = self._rd(req.params["rd"], r)
        return 200, self._snapshot_json(rd, self._snap(rd, req.params["snap"], r))

    def h_snapshot_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_SNAPSHOT)
        name, sname = req.params["rd"], req.params["snap"]
        rd = self.rds.get(name.upper())
        snap = rd.snapshots.get(sname.upper()) if rd is not None else None
        refs = {"RscDfn": name, "Snapshot": sname}
        if rd is None or snap is None:
            r.add(C.WARN_NOT_FOUND, f"Snapshot '{sname}' of resource '{name}' not found.",
                  refs=refs)
            return 200, r.entries
        only = self._names(req, "nodes")
        if only is not None:
            snap.nodes = [n for n in snap.nodes if n.upper() not in only]
        if only is None or not snap.nodes:
            if self.snapshot_delete_seconds > 0:
                # CtrlSnapshotDeleteApiCallHandler flags the snapshot definition DELETE and
                # removes it once the satellites have deleted their parts: until then it is
                # listed (flag DELETE) and its name is taken (FAIL_EXISTS_SNAPSHOT_DFN).
                if "DELETE" not in snap.flags:
                    snap.flags.append("DELETE")
                if snap.delete_at is None:
                    snap.delete_at = time.monotonic() + self.snapshot_delete_seconds
            else:
                del rd.snapshots[snap.name.upper()]
                self._drop_snapshot_files(snap)
        r.add(C.DELETED, f"Snapshot '{snap.name}' of resource '{rd.name}' deleted.",
              refs={"RscDfn": rd.name, "Snapshot": snap.name})
        return 200, r.entries

    def h_restore_vd(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "SnapshotRestore")
        r = Reply(C.MASK_CRT, C.MASK_VLM_DFN)
        src = self._rd(req.params["rd"], r)
        snap = self._snap(src, req.params["snap"], r)
        target = self._rd(body.get("to_resource") or "", r)
        if target.vds:
            raise r.error(C.FAIL_EXISTS_VLM_DFN,
                          f"Resource definition '{target.name}' already has volume "
                          "definitions.", refs={"RscDfn": target.name})
        for nr, size in sorted(snap.sizes.items()):
            self._create_vd(target, {"volume_number": nr, "size_kib": size}, None, r,
                            seed=snap.files.get(nr))
        return 200, r.entries

    def h_restore_resource(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "SnapshotRestore")
        r = Reply(C.MASK_CRT, C.MASK_RSC)
        src = self._rd(req.params["rd"], r)
        snap = self._snap(src, req.params["snap"], r)
        target = self._rd(body.get("to_resource") or "", r)
        refs = {"RscDfn": target.name, "Snapshot": snap.name}
        if target.resources:
            raise r.error(C.FAIL_EXISTS_RSC, f"Resource definition '{target.name}' already "
                          "has resources.", refs=refs)
        if not target.vds:
            r.add(C.WARN_NOT_FOUND, "No volumes to restore.", refs=refs)
            return 200, r.entries
        for nr, vd in target.vds.items():
            if nr not in snap.sizes:
                raise r.error(C.FAIL_NOT_FOUND_SNAPSHOT_VLM_DFN,
                              f"Snapshot '{snap.name}' has no volume {nr}.", refs=refs)
            # LINSTOR restores only into a volume definition of exactly the snapshot's size,
            # smaller or larger (CtrlSnapshotRestoreApiCallHandler.restoreOnNode: snapshot size
            # != required size -> FAIL_INVLD_VLM_SIZE); grow after the restore instead.
            if vd.size_kib != snap.sizes[nr]:
                raise r.error(C.FAIL_INVLD_VLM_SIZE,
                              f"Snapshot size does not match for volume number {nr}; snapshot "
                              f"size: {snap.sizes[nr]}KiB, required size: {vd.size_kib}KiB", refs=refs)
        nodes = body.get("nodes") or list(snap.nodes)
        rename = body.get("stor_pool_rename") or {}
        plan = []
        for n in nodes:
            node = self._node(n, r)
            src_pool = snap.pools.get(node.name.upper())
            if src_pool is None:
                raise r.error(C.FAIL_NOT_FOUND_SNAPSHOT,
                              f"Snapshot '{snap.name}' does not exist on node '{node.name}'.",
                              refs=refs)
            pname = rename.get(src_pool, src_pool)
            pool = node.pools.get(pname.upper())
            if pool is None:
                raise r.error(C.FAIL_NOT_FOUND_STOR_POOL,
                              f"Storage pool '{pname}' on node '{node.name}' not found.",
                              refs=refs)
            plan.append((node, pool))
        # make sure the target's data is the snapshot's (VDs may have been created by hand)
        for nr, vd in target.vds.items():
            f = snap.files.get(nr)
            if f is not None and vd.device is not None:
                if vd.seed != f:
                    vd.device.destroy()
                    vd.device = self._new_device(vd.minor, vd.size_kib, seed=f)
                    vd.seed = f
        # CtrlSnapshotRestoreApiCallHandler: the snapshot's copy of its RD's props goes onto the
        # target RD (ctrlPropsHelper.copy: a union, the snapshot's values win)
        target.props.update(snap.rd_props)
        if not target.resources:
            # restoreOnNode (copyIntoVlmDfn: the target has no resources yet): each snapshot
            # volume definition's props go onto the target's volume definition the same way
            for nr, vd in target.vds.items():
                vd.props.update(snap.vd_props.get(nr, {}))
        for node, pool in plan:
            self._add_resource(target, node, pool, r)
        # LINSTOR 1.33.3 registers a LINSTOR remote for itself on the first restore
        # (CopySnapsHelper.LOCAL_REMOTE, http://localhost:3370)
        self.linstor_remotes.setdefault(LOCAL_REMOTE, {
            "remote_name": LOCAL_REMOTE, "url": "http://localhost:3370"})
        # CtrlSnapshotRestoreApiCallHandler runs the auto helpers on the target RD
        self._tb_manage(target, r)
        self._schedule_attach(req, target)
        return 200, r.entries

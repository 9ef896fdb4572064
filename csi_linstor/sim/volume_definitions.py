"""Volume definitions: /v1/resource-definitions/{rd}/volume-definitions[/{vnr}].
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from . import consts as C
from .devices import Device
from .model import VD_INTERNAL_PROPS, Reply, Request, ResourceDef, VolumeDef
from .state import ControllerState


class VolumeDefinitionRoutes(ControllerState):
    """Volume-definition routes (create, resize, delete)."""

    def _create_vd(self, rd: ResourceDef, vdb: dict, minor: int | None, r: Reply,
                   seed: Device | Path | None = None) -> VolumeDef:
        nr = vdb.get("volume_number")
        if nr is None:
            # CtrlRscDfnApiCallHandler.getVlmNr: the lowest number used neither by a volume
            # definition nor by a snapshot of the RD ("re-using snapshot volume numbers would
            # result in confusion when restoring from the snapshot").
            taken = set(rd.vds) | {n for snap in rd.snapshots.values() for n in snap.sizes}
            nr = 0
            while nr in taken:
                nr += 1
        if nr < 0 or nr > 31999:
            raise r.error(C.FAIL_INVLD_VLM_NR, f"Invalid volume number {nr}")
        if nr in rd.vds:
            raise r.error(C.FAIL_EXISTS_VLM_DFN,
                          f"A volume definition with the number {nr} already exists in "
                          f"resource definition '{rd.name}'.",
                          refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        size = vdb.get("size_kib")
        if not isinstance(size, int) or size <= 0:
            raise r.error(C.FAIL_INVLD_VLM_SIZE, f"Invalid volume size {size}",
                          refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        self._check_vlm_size(rd, size, r)
        # internal props copied from another VD (clone, restore) are made anew below
        props = {k: v for k, v in (vdb.get("props") or {}).items() if k not in VD_INTERNAL_PROPS}
        self._validate_props(props, r)
        if rd.resources:
            for res in rd.diskful():
                pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                if pool is not None and not self._pool_fits(pool, size, {}):
                    raise r.error(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                  f"Not enough free space in '{pool.name}' on '{pool.node}'.")
            for res in rd.diskful():
                pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                if pool is not None:
                    self._consume(pool, size)
        m = self._alloc_minor(minor)
        try:
            dev = self._new_device(m, size, seed=seed)
        except (OSError, OverflowError) as e:  # e.g. a size no file can have (EFBIG)
            self.minors_used.discard(m)
            raise r.error(C.FAIL_UNKNOWN_ERROR, f"Creating the backing device failed: {e}") from None
        # Internal props LINSTOR puts on every new volume definition: a random DRBD current GI
        # (CtrlVlmDfnApiCallHandler, KEY_DRBD_CURRENT_GI) and the block size the controller
        # derives from the backing storage (auto-block-size; 512 on loop-backed file pools).
        internal = {"DrbdCurrentGi": secrets.token_hex(8).upper()}
        vd = VolumeDef(nr=nr, size_kib=size, minor=m, device=dev,
                       props={**internal, **props},
                       flags=[f for f in vdb.get("flags") or [] if not f.startswith("-")],
                       seed=seed if isinstance(seed, Path) else None)
        rd.vds[nr] = vd
        r.add(C.CREATED, f"New volume definition with number '{nr}' of resource definition "
              f"'{rd.name}' created.", obj=C.MASK_VLM_DFN,
              refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        return vd

    def _check_vlm_size(self, rd: ResourceDef, size_kib: int, r: Reply) -> None:
        """VolumeDefinition.checkVolumeSize: once a DRBD resource is deployed (the VD has DRBD
        layer data), 4 KiB to 2^40 KiB (MetaData.DRBD_MIN_NET_kiB .. DRBD_MAX_kiB); before
        that, or without DRBD, up to Long.MAX_VALUE KiB."""
        drbd = "DRBD" in rd.layer_stack and any(not res.own_minor for res in
                                                rd.resources.values())
        lo, hi, which = (4, 1 << 40, "DRBD") if drbd else (0, (1 << 63) - 1, "non-DRBD")
        if not lo <= size_kib <= hi:
            raise r.error(C.FAIL_INVLD_VLM_SIZE, f"Volume size value {size_kib} is out of range "
                          f"[{lo} - {hi}] for {which}")

    def h_vds(self, req: Request) -> tuple[int, Any]:
        rd = self._rd(req.params["rd"], Reply(0, C.MASK_VLM_DFN))
        return 200, [self._vd_json(rd, v) for v in sorted(rd.vds.values(), key=lambda v: v.nr)]

    def h_vd(self, req: Request) -> tuple[int, Any]:
        r = Reply(0, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        return 200, self._vd_json(rd, self._vd(rd, int(req.params["vnr"]), r))

    def h_vd_create(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "VolumeDefinitionCreate")
        r = Reply(C.MASK_CRT, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        self._create_vd(rd, body.get("volume_definition") or {}, body.get("drbd_minor_number"),
                        r)
        if rd.resources:
            self._schedule_attach(req, rd)
        return 200, r.entries

    def h_vd_modify(self, req: Request) -> tuple[int, Any]:
        body = self._body(req, "VolumeDefinitionModify")
        r = Reply(C.MASK_MOD, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        vd = self._vd(rd, int(req.params["vnr"]), r)
        refs = {"RscDfn": rd.name, "VlmNr": str(vd.nr)}
        self._modify_props(vd.props, body, r)
        for f in body.get("flags") or []:
            if f.startswith("-"):
                if f[1:] in vd.flags:
                    vd.flags.remove(f[1:])
            elif f not in vd.flags:
                vd.flags.append(f)
        size = body.get("size_kib")
        if size is not None:
            if size == vd.size_kib:
                r.add(C.WARN_VLMDFN_RESIZE_SAME_SIZE,
                      f"Volume definition {vd.nr} of '{rd.name}' already has the size "
                      f"{size} KiB.", refs=refs)
            elif size < vd.size_kib and "DRBD" in rd.layer_stack:
                # CtrlVlmDfnModifyApiCallHandler.ensureShrinkingIsSupported: every layer and
                # provider must support shrinking; of the layers only DRBD does not
                # (DeviceLayerKind), so a STORAGE-only volume shrinks and a DRBD one cannot.
                raise r.error(C.FAIL_INVLD_VLM_SIZE, "Shrinking volumes is not supported by "
                              "layer 'DRBD'. "
                              f"Current size: {vd.size_kib} KiB, requested: {size} KiB.",
                              refs=refs)
            else:
                self._check_vlm_size(rd, size, r)
                bad = [res.node for res in rd.diskful()
                       if self._disk_state(res) != "UpToDate"] if size > vd.size_kib else []
                if bad:
                    # CtrlVlmDfnModifyApiCallHandler: this message, no node named, no report
                    raise r.error(C.FAIL_NOT_ALL_UPTODATE, "Cannot resize volume, because we "
                                  "have a non-UpToDate DRBD device.", refs=refs)
                delta = size - vd.size_kib
                for res in rd.diskful():
                    pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                    if pool is not None and not self._pool_fits(pool, delta, {}):
                        raise r.error(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                      f"Not enough free space in storage pool '{pool.name}' "
                                      f"on node '{pool.node}' for the resize.", refs=refs)
                for res in rd.diskful():
                    pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
                    if pool is not None:
                        self._consume(pool, delta)
                vd.size_kib = size
                for dev in [vd.device, *(res.own_device.get(vd.nr)
                                         for res in rd.resources.values())]:
                    if dev is not None:
                        dev.resize(size * 1024)
                r.add(C.MODIFIED, f"Volume definition {vd.nr} of '{rd.name}' resized to "
                      f"{size} KiB.", refs=refs)
                self._offline_warnings(rd, r)
        if not r.entries:
            r.add(C.MODIFIED, f"Volume definition {vd.nr} of '{rd.name}' modified.", refs=refs)
        return 200, r.entries

    def h_vd_delete(self, req: Request) -> tuple[int, Any]:
        r = Reply(C.MASK_DEL, C.MASK_VLM_DFN)
        rd = self._rd(req.params["rd"], r)
        nr = int(req.params["vnr"])
        vd = rd.vds.get(nr)
        if vd is None:
            r.add(C.WARN_NOT_FOUND, f"Volume definition {nr} of '{rd.name}' not found.")
            return 200, r.entries
        if any(self._in_use(rd, res) for res in rd.resources.values()):
            raise r.error(C.FAIL_IN_USE, f"Resource '{rd.name}' is in use.")
        for res in rd.diskful():
            pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
            if pool is not None:
                self._consume(pool, vd.size_kib, -1)
        del rd.vds[nr]
        self.minors_used.discard(vd.minor)
        if vd.device is not None:
            vd.device.destroy()
        r.add(C.DELETED, f"Volume definition {nr} of '{rd.name}' deleted.",
              refs={"RscDfn": rd.name, "VlmNr": str(nr)})
        return 200, r.entries

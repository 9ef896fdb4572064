"""Satellite-side rules: minors, ports, backing devices, mkfs on first attach, DRBD auto-promote
from real opens, disk states and the drbdsetup status stand-in.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from . import consts as C
from . import opens
from .devices import Device
from .model import ApiError, Request, Resource, ResourceDef, VolumeDef, log, make_rc
from .state import ControllerState


class SatelliteRules(ControllerState):
    """What the satellites do and report for the controller's resources."""

    def _opened_on(self, rd: ResourceDef, res: Resource) -> bool:
        """DRBD 9 auto-promote: the resource is Primary where its device is open for writing
        (a rw mount or a write open under the node's path prefixes, SimConfig.node_roots)."""
        roots = getattr(self.cfg, "node_roots", None) or {}
        if not roots or self._storage_only(rd):
            return False
        if self._openers is None:
            rdevs = {vd.device.rdev for o in self.rds.values() if not self._storage_only(o)
                     for vd in o.vds.values() if vd.device is not None and vd.device.rdev}
            self._openers = opens.openers({n.upper(): list(p) for n, p in roots.items()}, rdevs)
            for o in self.rds.values():
                for vd in o.vds.values():
                    if vd.device is None or vd.device.rdev is None:
                        continue
                    nodes = sorted(self._openers.get(vd.device.rdev, ()))
                    if len(nodes) > 1 and o.props.get(
                            "DrbdOptions/Net/allow-two-primaries") != "yes":
                        log.warning("%s is open for writing on %s at once: DRBD would have "
                                    "refused all but the first", o.name, ", ".join(nodes))
                        self.double_opens.append((o.name, nodes))
        if not self._reported(res):
            return False  # an offline satellite reports no state (LINSTOR: no in_use)
        key = res.node.upper()
        return any(vd.device is not None and vd.device.rdev is not None
                   and key in self._openers.get(vd.device.rdev, ()) for vd in rd.vds.values())

    def _in_use(self, rd: ResourceDef, res: Resource) -> bool:
        return res.in_use or self._opened_on(rd, res)

    def _alloc_minor(self, wanted: int | None = None) -> int:
        if wanted is not None:
            if wanted in self.minors_used:
                raise ApiError([make_rc(C.FAIL_INVLD_REQUEST | 0,
                                        f"Minor number {wanted} is already in use.")])
            self.minors_used.add(wanted)
            return wanted
        m = 1000
        while m in self.minors_used or (self.devices.enabled and self.devices.node_path_taken(m)):
            m += 1
        self.minors_used.add(m)
        return m

    def _alloc_port(self) -> int:
        p = 7000
        while p in self.ports_used:
            p += 1
        self.ports_used.add(p)
        return p

    def _new_device(self, minor: int, size_kib: int, seed: Device | Path | None = None,
                    tag: str = "vol") -> Device | None:
        if not self.devices.enabled:
            return None
        dev = self.devices.create(minor, size_kib * 1024, seed=seed, tag=tag)
        dev.check_fs = seed is None
        return dev

    def _schedule_attach(self, req: Request | None, rd: ResourceDef) -> None:
        devs = [vd.device for vd in rd.vds.values() if vd.device is not None]
        devs += [d for res in rd.resources.values() for d in res.own_device.values()
                 if d is not None]
        if not devs:
            return
        mkfs = self._mkfs_plan(rd)

        def attach() -> None:
            for d in devs:
                d.ensure()
            for dev, fstype, params in mkfs:
                self._satellite_mkfs(rd.name, dev, fstype, params)

        if req is None:
            attach()
        else:
            req.after.append(attach)

    def _mkfs_plan(self, rd: ResourceDef) -> list[tuple[Device, str, str]]:
        """New storage that the satellite formats (MkfsUtils.makeFileSystemOnMarked): when
        FileSystem/Type is set on the resource, VD, volume group, RD or RG (first wins), for
        each diskful replica's new volume; (device, fs type, FileSystem/MkfsParams)."""
        rg = self.rgs.get(rd.rg)
        plan = []
        for res in rd.resources.values():
            if res.diskless:
                continue
            for vd in rd.vds.values():
                dev = res.own_device.get(vd.nr) if vd.nr in res.own_minor else vd.device
                if dev is None or not dev.check_fs:
                    continue
                vg = rg.vgs.get(vd.nr) if rg is not None else None
                chain = [res.props, vd.props, vg.props if vg else {}, rd.props,
                         rg.props if rg else {}]
                fstype = next((c["FileSystem/Type"] for c in chain if "FileSystem/Type" in c), "")
                if fstype:
                    params = next((c["FileSystem/MkfsParams"] for c in chain
                                   if "FileSystem/MkfsParams" in c), "")
                    plan.append((dev, fstype, params))
                dev.check_fs = False
        return plan

    @staticmethod
    def _satellite_mkfs(rd: str, dev: Device, fstype: str, params: str) -> None:
        """blkid first, never over an existing signature; then ``mkfs.<fs> -q <params>`` with
        ``-F -E nodiscard`` (ext4) or ``-f -K`` (xfs), as MkfsUtils runs them. A failure is
        logged as the satellite reports it (the resource stays, unformatted)."""
        path = str(dev.node_path)
        found = subprocess.run(["blkid", "-o", "export", path], capture_output=True, text=True,
                               timeout=60, check=False)
        if "TYPE=" in found.stdout:
            return
        extra = {"ext4": ["-F", "-E", "nodiscard"], "xfs": ["-f", "-K"]}.get(fstype, [])
        argv = [f"mkfs.{fstype}", "-q", *shlex.split(params), *extra, path]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            log.error("satellite mkfs of %s failed: %s: %s", rd, " ".join(argv),
                      done.stderr.strip())

    def _ensure_devices(self, rd: ResourceDef) -> None:
        if rd.resources:
            for vd in rd.vds.values():
                if vd.device is not None:
                    vd.device.ensure()
            for res in rd.resources.values():
                for dev in res.own_device.values():
                    if dev is not None:
                        dev.ensure()

    def _dev_path(self, vd: VolumeDef, res: Resource | None = None) -> str:
        if res is not None and vd.nr in res.own_minor:
            return str(self.devices.device_dir / f"drbd{res.own_minor[vd.nr]}")
        return str(self.devices.device_dir / f"drbd{vd.minor}")

    @staticmethod
    def _storage_only(rd: ResourceDef) -> bool:
        """No DRBD layer: each replica is a plain storage device of its own (linstor-facts
        §9 C6; the layer stack follows the RD's layer_list, CtrlRscLayerDataFactory)."""
        return "DRBD" not in rd.layer_stack

    def _disk_state(self, res: Resource) -> str:
        if res.diskless:
            return "Diskless"
        return res.disk_state or "UpToDate"

    def _reported(self, res: Resource) -> bool:
        return res.reported and self.nodes[res.node.upper()].online

    def _may_promote(self, rd: ResourceDef, res: Resource) -> bool:
        if not self._reported(res) or not res.quorum or self._in_use(rd, res):
            return False
        # a peer that cannot be reached has role Unknown: it does not block promotion
        if any(self._in_use(rd, o) for o in rd.resources.values()
               if o is not res and self._reported(o)):
            two = rd.props.get("DrbdOptions/Net/allow-two-primaries") == "yes"
            if not two:
                return False
        if not res.diskless:
            return self._disk_state(res) == "UpToDate"
        return any(not o.diskless and self._disk_state(o) == "UpToDate"
                   and self._reported(o) for o in rd.resources.values())

    def _storage_dev(self, rd: ResourceDef, res: Resource, vd: VolumeDef) -> str:
        return f"/dev/{res.pool.lower()}/{rd.name}_{vd.nr:05d}"

    def drbd_status(self, rd_name: str, node_name: str) -> list[dict]:
        rd = self.rds.get(rd_name.upper())
        if rd is None:
            return []
        res = rd.resources.get(node_name.upper())
        if res is None:
            return []
        self._ensure_devices(rd)
        devices = []
        for vd in sorted(rd.vds.values(), key=lambda v: v.nr):
            devices.append({
                "volume": vd.nr, "minor": vd.minor, "disk-state": self._disk_state(res),
                "client": res.diskless, "open": self._in_use(rd, res), "quorum": res.quorum,
                "size": vd.size_kib, "read": 0, "written": 0, "al-writes": 0, "bm-writes": 0,
                "upper-pending": 0, "lower-pending": 0,
            })
        me_online = self.nodes[res.node.upper()].online
        conns = []
        for o in sorted(rd.resources.values(), key=lambda x: x.node_id):
            if o is res:
                continue
            up = me_online and self.nodes[o.node.upper()].online
            peer_devs = []
            for vd in sorted(rd.vds.values(), key=lambda v: v.nr):
                peer_devs.append({
                    "volume": vd.nr,
                    "replication-state": "Established" if up else "Off",
                    "peer-disk-state": self._disk_state(o) if up else "DUnknown",
                    "peer-client": o.diskless, "resync-suspended": "no",
                    "received": 0, "sent": 0, "out-of-sync": 0, "pending": 0, "unacked": 0,
                    "has-sync-details": False, "has-online-verify-details": False,
                    "percent-in-sync": 100.0,
                })
            conns.append({
                "peer-node-id": o.node_id, "name": o.node,
                "connection-state": "Connected" if up else "Connecting",
                "congested": False,
                "peer-role": ("Primary" if self._in_use(rd, o) else "Secondary") if up
                else "Unknown",
                "tls": False, "ap-in-flight": 0, "rs-in-flight": 0,
                "peer_devices": peer_devs,
            })
        return [{
            "name": rd.name, "node-id": res.node_id,
            "role": "Primary" if self._in_use(rd, res) else "Secondary",
            "suspended": res.suspended,
            "suspended-user": res.suspended and res.quorum,
            "suspended-no-data": False, "suspended-fencing": False,
            "suspended-quorum": res.suspended and not res.quorum,
            "force-io-failures": False, "write-ordering": "flush",
            "devices": devices, "connections": conns,
        }]

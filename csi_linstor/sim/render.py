"""JSON shapes of the simulated LINSTOR objects as the REST API returns them (paging, name
filters, pools, nodes, groups, definitions, resources, volumes, snapshots).
"""

from __future__ import annotations

from typing import Any

from . import consts as C
from . import luks
from .model import (
    SNAPSHOT_PROVIDERS,
    THIN_PROVIDERS,
    Node,
    Pool,
    Request,
    Resource,
    ResourceDef,
    ResourceGroup,
    Snapshot,
    VolumeDef,
    VolumeGroup,
    make_rc,
    new_uuid,
    prune,
)
from .state import ControllerState


class JsonRendering(ControllerState):
    """The REST JSON of each object."""

    @staticmethod
    def _sorted(objects: dict[str, Any]) -> list[Any]:
        """The values of a map keyed by upper-cased name in LINSTOR's list order: resource
        definitions and each one's snapshots live in TreeMaps keyed by name, which compare by
        their upper-cased value (CoreModule.ResourceDefinitionMapImpl, ResourceDefinitionDbDriver
        snapshotDfnMap, GenericName.compareTo), and lists walk them in that order before
        ``offset``/``limit`` apply."""
        return [objects[key] for key in sorted(objects)]

    @staticmethod
    def _page(items: list, req: Request) -> list:
        try:
            limit = int(req.q1("limit", "0") or 0)
            offset = int(req.q1("offset", "0") or 0)
        except ValueError:
            return items
        if limit > 0:
            return items[offset:offset + limit]
        return items

    @staticmethod
    def _names(req: Request, key: str) -> set[str] | None:
        vals = [v for v in req.query.get(key, []) if v]
        return {v.upper() for v in vals} if vals else None

    def _pool_json(self, p: Pool) -> dict:
        node = self.nodes[p.node.upper()]
        d: dict[str, Any] = {
            "storage_pool_name": p.name,
            "node_name": p.node,
            "provider_kind": p.kind,
            "props": dict(p.props),
            "static_traits": {"SupportsSnapshots": str(p.kind in SNAPSHOT_PROVIDERS).lower()},
            "free_space_mgr_name": f"{p.node}:{p.name}",
            "uuid": p.uuid,
            "supports_snapshots": p.kind in SNAPSHOT_PROVIDERS,
            "external_locking": False,
        }
        if p.kind != "DISKLESS":
            d["static_traits"]["Provisioning"] = "Thin" if p.kind in THIN_PROVIDERS else "Fat"
            if node.online:
                d["free_capacity"] = p.free_kib
                d["total_capacity"] = p.total_kib
        if not node.online:
            d["reports"] = [make_rc(C.WARN_NOT_CONNECTED,
                                    f"No active connection to satellite '{p.node}'",
                                    obj=C.MASK_STOR_POOL, refs={"Node": p.node})]
        return prune(d)

    def _node_json(self, n: Node) -> dict:
        kinds = sorted({p.kind for p in n.pools.values()})
        return prune({
            "name": n.name,
            "type": "SATELLITE",
            "props": {"CurStltConnName": "default", "NodeUname": n.name, **n.props},
            "net_interfaces": [{"name": "default", "address": n.address,
                                "satellite_port": 3366, "satellite_encryption_type": "PLAIN",
                                "is_active": True, "uuid": new_uuid()}],
            "connection_status": "ONLINE" if n.online else "OFFLINE",
            "uuid": n.uuid,
            # A production Linux satellite with DRBD, LVM and ZFS installed: every provider
            # but SPDK (no rpc.py) and Windows' storage spaces, reported as LINSTOR 1.33.3 does
            # (StltExtToolsChecker: supported kinds listed, the others with their reasons).
            # LINSTOR also lists REMOTE_SPDK, which the OpenAPI enum lacks: left out here.
            "storage_providers": sorted({"DISKLESS", "LVM", "LVM_THIN", "ZFS", "ZFS_THIN",
                                         "FILE", "FILE_THIN", "EBS_INIT", "EBS_TARGET",
                                         *kinds}),
            "resource_layers": ["DRBD", "LUKS", "NVME", "WRITECACHE", "CACHE", "BCACHE",
                                "STORAGE"],
            "unsupported_providers": {
                "SPDK": ["IO exception occured when running 'rpc.py spdk_get_version': Cannot "
                         "run program \"rpc.py\": error=2, No such file or directory"],
                "STORAGE_SPACES": ["This tool does not exist on the Linux platform."],
                "STORAGE_SPACES_THIN": ["This tool does not exist on the Linux platform."],
            },
        })

    def _rg_json(self, rg: ResourceGroup) -> dict:
        return prune({"name": rg.name, "description": rg.description, "props": dict(rg.props),
                      "select_filter": dict(rg.select_filter), "uuid": rg.uuid,
                      "peer_slots": rg.peer_slots})

    @staticmethod
    def _vg_json(vg: VolumeGroup) -> dict:
        return prune({"volume_number": vg.nr, "props": dict(vg.props), "flags": list(vg.flags),
                      "uuid": vg.uuid})

    def _vd_json(self, rd: ResourceDef, vd: VolumeDef) -> dict:
        # Layer data (and the block size derived from the backing storage) exist once a
        # resource is deployed; a bare definition has neither (LINSTOR 1.33.3).
        deployed = bool(rd.resources)
        props = {**vd.props, "DrbdOptions/Disk/block-size": "512"} if deployed else vd.props
        return prune({
            "volume_number": vd.nr, "size_kib": vd.size_kib, "props": dict(props),
            "flags": list(vd.flags),
            "layer_data": None if not deployed else [{"type": "STORAGE"}]
            if self._storage_only(rd) else [
                {"type": "DRBD", "data": {"volume_number": vd.nr, "minor_number": vd.minor}},
                {"type": "STORAGE"},
            ],
            "uuid": vd.uuid,
        })

    def _rd_json(self, rd: ResourceDef, with_vds: bool) -> dict:
        d = {
            "name": rd.name,
            "external_name": rd.external_name,
            "props": dict(rd.props),
            "flags": list(rd.flags),
            "layer_data": None if not rd.resources else [{"type": "STORAGE"}]
            if self._storage_only(rd) else [
                {"type": "DRBD", "data": {"peer_slots": rd.peer_slots, "al_stripes": 1,
                                          "al_stripe_size_kib": 32, "port": rd.port,
                                          "transport_type": "IP", "secret": rd.secret,
                                          "down": False}},
                {"type": "STORAGE"},
            ],
            "uuid": rd.uuid,
            "resource_group_name": self.rgs[rd.rg].name if rd.rg in self.rgs else rd.rg,
        }
        if with_vds:
            d["volume_definitions"] = [self._vd_json(rd, v) for v in sorted(
                rd.vds.values(), key=lambda v: v.nr)]
        return prune(d)

    def _storage_volume_json(self, rd: ResourceDef, res: Resource, vd: VolumeDef) -> dict:
        """The STORAGE layer's volume of a STORAGE-only resource: the device is the storage
        device itself; LINSTOR 1.33.3 reports its disk_state as the string "[]"."""
        return {"volume_number": vd.nr, "device_path": self._dev_path(vd, res),
                "allocated_size_kib": vd.size_kib, "usable_size_kib": vd.size_kib,
                "disk_state": "[]"}

    def _volume_json(self, rd: ResourceDef, res: Resource, vd: VolumeDef) -> dict:
        pool = self.nodes[res.node.upper()].pools.get(res.pool.upper())
        kind = pool.kind if pool else "DISKLESS"
        if self._storage_only(rd):
            # No DRBD: no volume state and no top-level usable size (Json.apiToVolume fills
            # them from the DRBD layer's satellite state), the device is the storage device.
            st = self._storage_volume_json(rd, res, vd)
            return prune({"volume_number": vd.nr, "storage_pool_name": res.pool,
                          "provider_kind": kind, "device_path": st["device_path"],
                          "allocated_size_kib": vd.size_kib,
                          "layer_data_list": ([{"type": "LUKS", "data": luks.luks_volume(
                              rd.name, vd.nr, st["device_path"], vd.size_kib,
                              self._reported(res))}] if "LUKS" in rd.layer_stack else [])
                          + [{"type": "STORAGE", "data": st}],
                          "uuid": vd.uuid})
        dev = self._dev_path(vd)
        reported = self._reported(res)
        ds = self._disk_state(res)
        drbd_data: dict[str, Any] = {
            "drbd_volume_definition": {"volume_number": vd.nr, "minor_number": vd.minor},
            "device_path": dev,
            "usable_size_kib": vd.size_kib,
        }
        layers = [{"type": "DRBD", "data": drbd_data}]
        if reported:
            drbd_data["disk_state"] = ds
        if not res.diskless:
            drbd_data["backing_device"] = self._storage_dev(rd, res, vd)
            drbd_data["meta_disk"] = "internal"
            drbd_data["allocated_size_kib"] = vd.size_kib + 4
            st: dict[str, Any] = {"volume_number": vd.nr,
                                  "device_path": self._storage_dev(rd, res, vd),
                                  "allocated_size_kib": vd.size_kib + 4,
                                  "usable_size_kib": vd.size_kib + 4}
            if "LUKS" in rd.layer_stack:  # DRBD on LUKS on STORAGE (sim/luks.py)
                drbd_data["backing_device"] = luks.luks_device(rd.name, vd.nr)
                layers.append({"type": "LUKS", "data": luks.luks_volume(
                    rd.name, vd.nr, st["device_path"], vd.size_kib + 4, reported)})
            layers.append({"type": "STORAGE", "data": st})
        v: dict[str, Any] = {
            "volume_number": vd.nr,
            "storage_pool_name": res.pool,
            "provider_kind": kind,
            "device_path": dev,
            "usable_size_kib": vd.size_kib,
            "layer_data_list": layers,
            "uuid": vd.uuid,
        }
        if not res.diskless:
            v["allocated_size_kib"] = vd.size_kib
        if reported:
            state: dict[str, Any] = {"disk_state": ds}
            if self.rest_version >= (1, 25, 0):
                reps = {}
                for o in rd.resources.values():
                    if o is res:
                        continue
                    on = self._reported(o)
                    reps[o.node] = {"replication_state": "Established" if on else "Off"}
                state["replication_states"] = reps
            v["state"] = state
        return prune(v)

    def _resource_json(self, rd: ResourceDef, res: Resource, with_volumes: bool) -> dict:
        vds = sorted(rd.vds.values(), key=lambda v: v.nr)
        reported = self._reported(res)
        if self._storage_only(rd):
            # No DRBD layer: a STORAGE layer object only, and a state object with nothing in it
            # (in_use comes from DRBD; Jackson keeps the empty bean: "state": {}).
            d = prune({
                "name": rd.name, "node_name": res.node,
                "props": {"StorPoolName": res.pool, **res.props}, "flags": list(res.flags),
                "layer_object": {"type": "STORAGE", "storage": {"storage_volumes": [
                    self._storage_volume_json(rd, res, vd) for vd in vds]}},
                "uuid": res.uuid, "create_timestamp": res.create_timestamp,
                "volumes": [self._volume_json(rd, res, vd) for vd in vds] if with_volumes
                else None,
            })
            if reported:
                d["state"] = {}
            return d
        conns = {}
        for o in rd.resources.values():
            if o is res:
                continue
            ok = reported and self._reported(o)
            conns[o.node] = {"connected": ok, "message": "Connected" if ok else "Connecting"}
        drbd_vols = []
        storage_vols = []
        for vd in vds:
            dv: dict[str, Any] = {
                "drbd_volume_definition": {"volume_number": vd.nr, "minor_number": vd.minor},
                "device_path": self._dev_path(vd), "usable_size_kib": vd.size_kib}
            if reported:
                dv["disk_state"] = self._disk_state(res)
            if not res.diskless:
                dv["backing_device"] = self._storage_dev(rd, res, vd)
                dv["meta_disk"] = "internal"
                dv["allocated_size_kib"] = vd.size_kib + 4
                storage_vols.append({"volume_number": vd.nr,
                                     "device_path": self._storage_dev(rd, res, vd),
                                     "allocated_size_kib": vd.size_kib + 4,
                                     "usable_size_kib": vd.size_kib + 4})
            drbd_vols.append(dv)
        may = self._may_promote(rd, res)
        drbd = {
            "drbd_resource_definition": {"peer_slots": rd.peer_slots, "al_stripes": 1,
                                         "al_stripe_size_kib": 32, "port": rd.port,
                                         "transport_type": "IP", "secret": rd.secret,
                                         "down": False},
            "node_id": res.node_id,
            "tcp_ports": [rd.port] if self.rest_version >= (1, 26, 0) else None,
            "peer_slots": rd.peer_slots,
            "al_stripes": 1,
            "al_size": 32,
            "flags": ["DISKLESS", "INITIALIZED"] if res.diskless else ["INITIALIZED"],
            "drbd_volumes": drbd_vols,
            "connections": conns,
            "promotion_score": (10102 if not res.diskless else 10101) if may else 0,
            "may_promote": may,
        }
        layer: dict[str, Any] = {"type": "DRBD", "drbd": drbd}
        if not res.diskless:
            child: dict[str, Any] = {"type": "STORAGE",
                                     "storage": {"storage_volumes": storage_vols}}
            if "LUKS" in rd.layer_stack:  # sim/luks.py: DRBD on LUKS on STORAGE
                child = {"type": "LUKS", "luks": {"luks_volumes": [luks.luks_volume(
                    rd.name, sv["volume_number"], sv["device_path"], sv["allocated_size_kib"],
                    reported) for sv in storage_vols]}, "children": [child]}
            layer["children"] = [child]
        d: dict[str, Any] = {
            "name": rd.name,
            "node_name": res.node,
            "props": {"StorPoolName": res.pool, **res.props},
            "flags": list(res.flags),
            "layer_object": layer,
            "uuid": res.uuid,
            "create_timestamp": res.create_timestamp,
        }
        if reported:
            d["state"] = {"in_use": self._in_use(rd, res)}
        if with_volumes:
            d["volumes"] = [self._volume_json(rd, res, vd) for vd in vds]
        return prune(d)

    def _snapshot_json(self, rd: ResourceDef, s: Snapshot) -> dict:
        # Json.apiToSnapshot: "props" is the merged view of the snapshot definition's and the
        # copied RD's props; per node the copied resource props; per volume the copied VD
        # props; a snapshot volume's state only for EBS (EbsStatusManagerService), so none.
        return prune({
            "name": s.name,
            "resource_name": rd.name,
            "nodes": list(s.nodes),
            "props": {**s.rd_props, **s.props},
            "snapshot_definition_props": dict(s.props),
            "resource_definition_props": dict(s.rd_props),
            "flags": list(s.flags),
            "volume_definitions": [{"volume_number": nr, "size_kib": size,
                                    "volume_definition_props": dict(s.vd_props.get(nr, {}))}
                                   for nr, size in sorted(s.sizes.items())],
            "uuid": s.uuid,
            "snapshots": [{"snapshot_name": s.name, "node_name": n,
                           "create_timestamp": s.timestamps.get(n.upper()),
                           "resource_props": {"StorPoolName": s.pools.get(n.upper(), "")},
                           "uuid": new_uuid(),
                           "snapshot_volumes": [{"vlm_nr": nr, "uuid": new_uuid()}
                                                for nr in sorted(s.sizes)]}
                          for n in s.nodes],
        })

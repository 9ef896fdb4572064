"""Bulk seeding: fill the simulator with thousands of volumes and snapshots in seconds.

Creating 10,000 volumes through the REST front end takes minutes (and as many loop devices), so
scale benchmarks copy a *template*: a resource definition made the ordinary way (through the
driver, so it carries exactly the props, resource group and layout the driver gives its volumes)
is replicated ``count`` times in the state model, under new names, with new minors, ports and
UUIDs, its replicas spread round-robin over the nodes, and its snapshots copied along. What a
client then reads back is what LINSTOR would answer for that many objects: the seeded objects go
through the same ``*_json`` renderers and filters as the rest.

The copies have no backing device or snapshot file (``SimConfig.real_devices=False`` models the
same): deleting, publishing or expanding them changes the model only.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .controller import Controller
from .model import ResourceDef, Snapshot, new_uuid

_NAMESPACE = uuid.UUID("6c0d6a4c-8f0e-4a55-9d1b-2f3b0f0a5eed")


def volume_name(index: int) -> str:
    """A CSI-provisioner-like PV name, stable per index: ``pvc-<uuid>``."""
    return f"pvc-{uuid.uuid5(_NAMESPACE, f'volume-{index}')}"


def snapshot_name(index: int) -> str:
    """An external-snapshotter-like name, stable per index: ``snapshot-<uuid>``."""
    return f"snapshot-{uuid.uuid5(_NAMESPACE, f'snapshot-{index}')}"


@dataclass
class Seeded:
    volumes: list[str]
    snapshots: list[tuple[str, str]]  # (resource definition, snapshot name)


def _rename(props: dict[str, str], old: str, new: str) -> dict[str, str]:
    lower, upper = old.lower(), old.upper()
    return {k: v.replace(old, new).replace(lower, new.lower()).replace(upper, new.upper())
            for k, v in props.items()}


def replicate(ctrl: Controller, template: str, count: int, *,
              names: Callable[[int], str] = volume_name,
              snapshot_names: Callable[[int], str] = snapshot_name,
              start: int = 0) -> Seeded:
    """Copy resource definition ``template`` (and its snapshots) ``count`` times.

    Copy ``i`` is named ``names(start + i)``; its replicas sit on the nodes the template's are on,
    shifted by ``i`` in the node list (so 10,000 two-replica volumes spread evenly over 100
    nodes), each consuming its pool's space as a created resource would; each snapshot of the
    template becomes ``snapshot_names(start + i)`` on the copy.
    """
    with ctrl.lock:
        src = ctrl.rds[template.upper()]
        nodes = list(ctrl.nodes.values())
        order = {n.name.upper(): i for i, n in enumerate(nodes)}
        minor = max(ctrl.minors_used, default=999) + 1
        port = max(ctrl.ports_used, default=6999) + 1
        seeded = Seeded([], [])
        for i in range(count):
            name = names(start + i)
            if name.upper() in ctrl.rds:
                raise ValueError(f"resource definition {name} exists already")
            rd = _copy_rd(src, name, port)
            ctrl.ports_used.add(port)
            port += 1
            for vd in rd.vds.values():
                vd.minor = minor
                ctrl.minors_used.add(minor)
                minor += 1
            shift = start + i
            for key, res in list(src.resources.items()):
                node = nodes[(order[key] + shift) % len(nodes)]
                copy_res = copy.deepcopy(res)
                copy_res.rd, copy_res.node, copy_res.uuid = rd.key, node.name, new_uuid()
                copy_res.props = _rename(res.props, src.name, name)
                copy_res.own_minor, copy_res.own_device = {}, {}
                rd.resources[node.name.upper()] = copy_res
                pool = node.pools.get(res.pool.upper())
                if pool is not None:
                    for vd in rd.vds.values():
                        ctrl._consume(pool, vd.size_kib)
            for snap in src.snapshots.values():
                snap_copy = _copy_snapshot(snap, src, rd, snapshot_names(start + i), nodes,
                                           order, shift)
                rd.snapshots[snap_copy.name.upper()] = snap_copy
                seeded.snapshots.append((rd.name, snap_copy.name))
            ctrl.rds[rd.key] = rd
            seeded.volumes.append(name)
        return seeded


def _copy_rd(src: ResourceDef, name: str, port: int) -> ResourceDef:
    rd = ResourceDef(name=name, rg=src.rg, port=port, secret=new_uuid()[:20],
                     props=_rename(src.props, src.name, name), flags=list(src.flags),
                     external_name=None, layer_stack=list(src.layer_stack),
                     peer_slots=src.peer_slots)
    for nr, vd in src.vds.items():
        vd_copy = copy.copy(vd)
        vd_copy.device, vd_copy.seed, vd_copy.uuid = None, None, new_uuid()
        vd_copy.props, vd_copy.flags = dict(vd.props), list(vd.flags)
        rd.vds[nr] = vd_copy
    return rd


def _copy_snapshot(snap: Snapshot, src: ResourceDef, rd: ResourceDef, name: str,
                   nodes: list, order: dict[str, int], shift: int) -> Snapshot:
    moved = {key: nodes[(order[key] + shift) % len(nodes)].name
             for key in (n.upper() for n in snap.nodes)}
    props = _rename(snap.props, snap.name, name)
    return Snapshot(
        name=name, rd_name=rd.name, nodes=[moved[n.upper()] for n in snap.nodes],
        pools={moved[k].upper(): v for k, v in snap.pools.items()}, sizes=dict(snap.sizes),
        files={}, timestamps={moved[k].upper(): v for k, v in snap.timestamps.items()},
        props=props, rd_props=_rename(snap.rd_props, src.name, rd.name),
        flags=list(snap.flags), vd_props={k: dict(v) for k, v in snap.vd_props.items()})

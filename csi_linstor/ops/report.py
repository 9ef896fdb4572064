"""``csi-linstor report``: StorageClass -> PVC -> PV -> LINSTOR resource definition, joined, and
the orphans both ways (LINSTOR volumes of this driver with no PV; PVs whose volume is gone).

The join is a pure function of the objects read (``build``), so it is unit-tested on plain
dicts; ``collect`` does the reading."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from csi_linstor.mapping import ids
from csi_linstor.mapping.volume_model import PROP_DELETED, PROP_DONE, PROP_NAME
from csi_linstor.ops.common import FAIL, INFO, WARN, Finding, human_kib
from csi_linstor.ops.linstor_view import LinstorState


@dataclass
class KubeObjects:
    storage_classes: list[dict[str, Any]] = field(default_factory=list)
    pvcs: list[dict[str, Any]] = field(default_factory=list)
    pvs: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    snapshot_contents: list[dict[str, Any]] = field(default_factory=list)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def pv_handle(pv: dict[str, Any], driver: str) -> str | None:
    """The volume handle (= LINSTOR resource definition name) of a PV of ``driver``."""
    csi = _spec(pv).get("csi") or {}
    return str(csi.get("volumeHandle")) if csi.get("driver") == driver else None


def attached_nodes(attachments: list[dict[str, Any]], driver: str) -> dict[str, set[str]]:
    """PV name -> nodes whose VolumeAttachment of ``driver`` says attached."""
    out: dict[str, set[str]] = defaultdict(set)
    for va in attachments:
        spec = _spec(va)
        pv = (spec.get("source") or {}).get("persistentVolumeName")
        if spec.get("attacher") == driver and pv and _status(va).get("attached"):
            out[pv].add(str(spec.get("nodeName")))
    return out


def attached_by_rd(k: KubeObjects, driver: str) -> dict[str, set[str]]:
    """LINSTOR resource name -> nodes Kubernetes attached it to (every PV of ``driver``)."""
    by_pv = attached_nodes(k.attachments, driver)
    out: dict[str, set[str]] = {}
    for pv in k.pvs:
        handle = pv_handle(pv, driver)
        if handle:
            out[handle] = by_pv.get(_meta(pv).get("name", ""), set())
    return out


def snapshot_handles(contents: list[dict[str, Any]], driver: str) -> dict[tuple[str, str], str]:
    """(rd, LINSTOR snapshot) -> "namespace/VolumeSnapshot" for every content of ``driver``."""
    out = {}
    for c in contents:
        spec, st = _spec(c), _status(c)
        if spec.get("driver") != driver:
            continue
        handle = st.get("snapshotHandle") or (spec.get("source") or {}).get("snapshotHandle")
        sid = ids.parse_snapshot_id(str(handle)) if handle else None
        if sid is None:
            continue
        ref = spec.get("volumeSnapshotRef") or {}
        out[(sid.resource.lower(), sid.snapshot.lower())] = \
            f"{ref.get('namespace', '?')}/{ref.get('name', '?')}"
    return out


def owned(rd_props: Any) -> bool:
    """Whether a resource definition was created by a CSI driver for LINSTOR (this one or
    LINBIT's: both set Aux/csi-volume-name / the completion marker)."""
    return bool(rd_props.get(PROP_NAME) or str(rd_props.get(PROP_DONE, "")).startswith(
        "linstor-csi"))


def _linstor(state: LinstorState, rd_name: str, attached: set[str],
             snaps_by_vs: dict[tuple[str, str], str]) -> dict[str, Any] | None:
    rd = state.rd(rd_name)
    if rd is None:
        return None
    reps = sorted(state.replicas_of(rd_name), key=lambda r: (r.diskless, r.node))
    size = sum(vd.size_kib for vd in rd.volume_definitions)
    snaps = []
    for s in sorted(state.snapshots_of(rd_name), key=lambda s: s.name):
        snaps.append({"name": s.name,
                      "state": "failed" if s.failed else "ready" if s.successful else "pending",
                      "volume_snapshot": snaps_by_vs.get((rd_name.lower(), s.name.lower()))})
    return {"resource": rd.name, "resource_group": rd.resource_group_name, "size_kib": size,
            "replicas": [r.as_json() for r in reps],
            "in_use_on": sorted(r.node for r in reps if r.in_use),
            "attached_to": sorted(attached), "snapshots": snaps}


def build(driver: str, k: KubeObjects, state: LinstorState) -> dict[str, Any]:
    classes = {(_meta(sc).get("name") or ""): sc for sc in k.storage_classes
               if sc.get("provisioner") == driver}
    pvs_by_name = {_meta(pv).get("name"): pv for pv in k.pvs}
    our_pvs = {name: pv for name, pv in pvs_by_name.items() if pv_handle(pv, driver)}
    attached = attached_nodes(k.attachments, driver)
    snaps_by_vs = snapshot_handles(k.snapshot_contents, driver)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    claimed: set[str] = set()
    for pvc in k.pvcs:
        spec, st, meta = _spec(pvc), _status(pvc), _meta(pvc)
        cls = spec.get("storageClassName") or ""
        pv_name = spec.get("volumeName") or ""
        pv = our_pvs.get(pv_name)
        if cls not in classes and pv is None:
            continue  # another driver's claim
        claimed.add(pv_name)
        rows[cls].append(_row(driver, state, pv, attached, snaps_by_vs, meta.get("namespace"),
                              meta.get("name"), st.get("phase", ""),
                              (st.get("capacity") or {}).get("storage")
                              or ((spec.get("resources") or {}).get("requests") or {}
                                  ).get("storage"),
                              spec.get("accessModes") or []))
    for name, pv in sorted(our_pvs.items()):
        if name in claimed:
            continue
        ref = _spec(pv).get("claimRef") or {}
        rows[_spec(pv).get("storageClassName") or ""].append(_row(
            driver, state, pv, attached, snaps_by_vs, ref.get("namespace"), ref.get("name"),
            "", None, _spec(pv).get("accessModes") or [], claim_missing=True))
    out_classes = []
    for name in sorted(set(classes) | set(rows)):
        sc = classes.get(name)
        out_classes.append({
            "name": name or "(none)", "exists": sc is not None,
            "parameters": (sc or {}).get("parameters") or {},
            "reclaim_policy": (sc or {}).get("reclaimPolicy"),
            "claims": sorted(rows.get(name, []), key=lambda r: (r["namespace"] or "",
                                                                 r["claim"] or "")),
        })
    orphans = find_orphans(driver, k, state)
    return {"driver": driver, "storage_classes": out_classes, "orphans": orphans,
            "findings": [f.as_json() for f in orphan_findings(orphans)]}


def _row(driver: str, state: LinstorState, pv: dict[str, Any] | None,
         attached: dict[str, set[str]], snaps_by_vs: dict[tuple[str, str], str],
         namespace: str | None, claim: str | None, phase: str, size: str | None,
         modes: list[str], claim_missing: bool = False) -> dict[str, Any]:
    pv_name = _meta(pv).get("name") if pv else None
    handle = pv_handle(pv, driver) if pv else None
    return {
        "namespace": namespace, "claim": claim, "claim_missing": claim_missing,
        "phase": phase, "size": size or ((_spec(pv).get("capacity") or {}).get("storage")
                                         if pv else None),
        "access_modes": modes, "pv": pv_name,
        "pv_phase": _status(pv).get("phase") if pv else None,
        "reclaim_policy": _spec(pv).get("persistentVolumeReclaimPolicy") if pv else None,
        "volume_handle": handle,
        "linstor": _linstor(state, handle, attached.get(pv_name or "", set()), snaps_by_vs)
        if handle else None,
    }


def find_orphans(driver: str, k: KubeObjects, state: LinstorState) -> dict[str, Any]:
    """Both directions:

    - ``linstor_without_pv``: resource definitions a CSI driver created (Aux/csi-volume-name)
      that no PV names as its volume handle. Not counted: those DeleteVolume kept because they
      still have snapshots (Aux/csi-deleted, listed as ``retained_for_snapshots``) and the
      temporary clone sources the driver deletes itself;
    - ``pv_without_linstor``: PVs of ``driver`` whose volume handle names no resource
      definition (the data is gone; the PV cannot be attached anywhere);
    - ``snapshot_content_without_linstor``: VolumeSnapshotContents of ``driver`` whose LINSTOR
      snapshot is gone.
    """
    handles = {h.lower() for pv in k.pvs if (h := pv_handle(pv, driver))}
    linstor_without_pv, retained = [], []
    for rd in sorted(state.rds, key=lambda r: r.name):
        if not owned(rd.props) or rd.name.lower() in handles:
            continue
        nodes = sorted(r.node for r in state.replicas_of(rd.name) if not r.diskless)
        entry = {"resource": rd.name, "volume_name": rd.props.get(PROP_NAME, ""),
                 "size_kib": sum(vd.size_kib for vd in rd.volume_definitions),
                 "nodes": nodes, "complete": str(rd.props.get(PROP_DONE, "")).startswith(
                     "linstor-csi"),
                 "snapshots": len(state.snapshots_of(rd.name))}
        if rd.props.get(PROP_DELETED):
            retained.append(entry)
        else:
            linstor_without_pv.append(entry)
    names = {rd.name.lower() for rd in state.rds}
    pv_without_linstor = []
    for pv in sorted(k.pvs, key=lambda p: _meta(p).get("name", "")):
        h = pv_handle(pv, driver)
        if h and h.lower() not in names:
            ref = _spec(pv).get("claimRef") or {}
            pv_without_linstor.append({
                "pv": _meta(pv).get("name"), "volume_handle": h,
                "claim": f"{ref.get('namespace')}/{ref.get('name')}" if ref else None,
                "phase": _status(pv).get("phase")})
    snaps = {(s.resource_name.lower(), s.name.lower()) for s in state.snapshots}
    contents = [{"resource": rd, "snapshot": sn, "volume_snapshot": vs}
                for (rd, sn), vs in sorted(snapshot_handles(k.snapshot_contents, driver).items())
                if (rd, sn) not in snaps]
    return {"linstor_without_pv": linstor_without_pv, "pv_without_linstor": pv_without_linstor,
            "snapshot_content_without_linstor": contents, "retained_for_snapshots": retained}


def orphan_findings(orphans: dict[str, Any]) -> list[Finding]:
    out = []
    for o in orphans["linstor_without_pv"]:
        if not o["complete"]:
            out.append(Finding(WARN, "orphan", f"LINSTOR resource {o['resource']} was never "
                               "completed and no PV names it (a CreateVolume in progress, or "
                               "one that failed and was not retried)",
                               "if no PVC is Pending for it, delete it: linstor "
                               f"resource-definition delete {o['resource']}",
                               subject=f"resource/{o['resource']}"))
            continue
        out.append(Finding(WARN, "orphan", f"LINSTOR volume {o['resource']} "
                           f"({human_kib(o['size_kib'])} on {', '.join(o['nodes']) or 'no node'})"
                           " has no PersistentVolume",
                           "its PV was deleted without the volume (reclaimPolicy Retain, or a "
                           "PV deleted by hand): re-create a PV for it with that volumeHandle, or"
                           f" delete it: linstor resource-definition delete {o['resource']}",
                           subject=f"resource/{o['resource']}"))
    for o in orphans["pv_without_linstor"]:
        out.append(Finding(FAIL, "orphan", f"PersistentVolume {o['pv']} (claim "
                           f"{o['claim'] or 'none'}) names LINSTOR volume {o['volume_handle']}, "
                           "which does not exist",
                           "the data is gone from LINSTOR: restore it from a backup or "
                           "snapshot into a new claim, then delete this PV",
                           subject=f"pv/{o['pv']}"))
    for o in orphans["snapshot_content_without_linstor"]:
        out.append(Finding(WARN, "orphan", f"VolumeSnapshot {o['volume_snapshot']} points at "
                           f"LINSTOR snapshot {o['resource']}/{o['snapshot']}, which does not "
                           "exist", "delete the VolumeSnapshot (restoring from it will fail)",
                           subject=f"snapshot/{o['resource']}/{o['snapshot']}"))
    for o in orphans["retained_for_snapshots"]:
        out.append(Finding(INFO, "retained", f"LINSTOR volume {o['resource']} was deleted in "
                           f"Kubernetes and is kept for its {o['snapshots']} snapshot(s)",
                           "LINSTOR removes it when the last snapshot is deleted",
                           subject=f"resource/{o['resource']}"))
    return out


def _modes(modes: list[str]) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
             "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes)


def report_text(rep: dict[str, Any]) -> str:
    from csi_linstor.ops.output import findings_text, table

    parts = []
    for sc in rep["storage_classes"]:
        params = " ".join(f"{k.rsplit('/', 1)[-1]}={v}" for k, v in sorted(sc["parameters"].items()))
        title = f"StorageClass {sc['name']}" + ("" if sc["exists"] else " (does not exist)")
        parts.append(f"{title}  {params}".rstrip())
        if not sc["claims"]:
            parts.append("  (no claims)")
            parts.append("")
            continue
        rows = []
        for c in sc["claims"]:
            ls = c["linstor"]
            if ls is None:
                replicas = "MISSING" if c["volume_handle"] else ""
                attached = snaps = ""
            else:
                replicas = " ".join(
                    f"{r['node']}:{r['disk_state'] if r['reported'] else 'unknown'}"
                    + ("(tb)" if r["role"] == "tiebreaker" else "")
                    for r in ls["replicas"])
                attached = ",".join(ls["attached_to"] or ls["in_use_on"])
                snaps = str(len(ls["snapshots"])) if ls["snapshots"] else ""
            rows.append([c["namespace"], (c["claim"] or "") + (" (gone)" if c["claim_missing"]
                                                              else ""),
                         c["size"], _modes(c["access_modes"]), c["phase"] or c["pv_phase"],
                         c["pv"], replicas, attached, snaps])
        parts.append(table(["NAMESPACE", "CLAIM", "SIZE", "MODES", "PHASE", "PV",
                            "REPLICAS (node:disk)", "ATTACHED", "SNAPS"], rows, indent="  "))
        parts.append("")
    o = rep["orphans"]
    counts = (len(o["linstor_without_pv"]), len(o["pv_without_linstor"]),
              len(o["snapshot_content_without_linstor"]))
    parts.append(f"Orphans: {counts[0]} LINSTOR volume(s) without a PV, {counts[1]} PV(s) "
                 f"without a LINSTOR volume, {counts[2]} snapshot(s) without a LINSTOR snapshot")
    findings = [Finding(**f) for f in rep["findings"]]
    if findings:
        parts.append(findings_text(findings, indent="  "))
    return "\n".join(parts)


def report_findings(rep: dict[str, Any]) -> list[Finding]:
    return [Finding(**f) for f in rep["findings"]]

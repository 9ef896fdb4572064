"""Differential check: the simulator answers LINSTOR's REST calls as the real LINSTOR 1.33.3 does.

One scenario of REST calls — every route and body shape the driver uses, plus the error cases
(missing objects, objects that already exist, a restore into a volume of another size, a clone on
a pool that cannot clone, unknown fields) — goes to the real controller + satellite of
../shared/linstor-server (tests/real_linstor.py) and to a simulator configured like it (one node,
the same two FILE_THIN pools). For every step the HTTP status, the ret codes (every bit: object
type, operation and code masks) and the reply's shape (field names and JSON types, with empty
fields omitted) must match. What the storage-only real setup cannot show is in ALLOWED, each
entry with its reason; any other difference fails the test, so a new one is seen at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from csi_linstor.sim import SimConfig, Simulator
from csi_linstor.sim.simulator import PoolSpec
from tests.real_linstor import NODE, THIN_POOL, XFS_POOL, RealLinstor, require_real_linstor

require_real_linstor()

RD = "/v1/resource-definitions"
IDX = "CsiSnap-0123456789abcdef0123456789abcdef"  # mapping/snapshot_index.py's instance names


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str
    body: Any = None
    count: bool = False  # the number of listed objects must match too (a filter's effect)


def scenario() -> list[Step]:
    n = NODE
    rg = {"name": "diffrg", "select_filter": {
        "place_count": 1, "storage_pool": XFS_POOL, "layer_stack": ["STORAGE"]}}
    return [
        Step("version", "GET", "/v1/controller/version"),
        Step("nodes", "GET", "/v1/nodes"),
        Step("node", "GET", f"/v1/nodes/{n}"),
        Step("node missing", "GET", "/v1/nodes/nonode"),
        Step("node pools", "GET", f"/v1/nodes/{n}/storage-pools"),
        Step("pool", "GET", f"/v1/nodes/{n}/storage-pools/{XFS_POOL}"),
        Step("pool missing", "GET", f"/v1/nodes/{n}/storage-pools/nopool"),
        Step("view pools", "GET", "/v1/view/storage-pools"),
        Step("remotes", "GET", "/v1/remotes"),
        Step("rg create", "POST", "/v1/resource-groups", rg),
        Step("rg create again", "POST", "/v1/resource-groups", rg),
        Step("rg", "GET", "/v1/resource-groups/diffrg"),
        Step("rg missing", "GET", "/v1/resource-groups/norg"),
        Step("rg modify", "PUT", "/v1/resource-groups/diffrg",
             {"override_props": {"Aux/csi-test": "1"}}),
        Step("vg create", "POST", "/v1/resource-groups/diffrg/volume-groups", {}),
        Step("vgs", "GET", "/v1/resource-groups/diffrg/volume-groups"),
        Step("spawn", "POST", "/v1/resource-groups/diffrg/spawn",
             {"resource_definition_name": "diffvol", "volume_sizes": [65536],
              "resource_definition_props": {"Aux/csi-test": "a", "Aux/empty": ""}}),
        Step("spawn again", "POST", "/v1/resource-groups/diffrg/spawn",
             {"resource_definition_name": "diffvol", "volume_sizes": [65536]}),
        Step("spawn more replicas than nodes", "POST", "/v1/resource-groups/diffrg/spawn",
             {"resource_definition_name": "diffmany", "volume_sizes": [65536],
              "select_filter": {"place_count": 2}}),
        Step("spawn an invalid name", "POST", "/v1/resource-groups/diffrg/spawn",
             {"resource_definition_name": "-bad.name", "volume_sizes": [65536]}),
        Step("spawn 2^41 KiB with DRBD", "POST", "/v1/resource-groups/DfltRscGrp/spawn",
             {"resource_definition_name": "diffhuge", "volume_sizes": [1 << 41],
              "definitions_only": True}),
        Step("spawn in missing rg", "POST", "/v1/resource-groups/norg/spawn",
             {"resource_definition_name": "diffnone", "volume_sizes": [65536]}),
        Step("rd", "GET", f"{RD}/diffvol"),
        Step("rds", "GET", RD),
        Step("rd missing", "GET", f"{RD}/nord"),
        Step("rd create invalid name", "POST", RD, {"resource_definition": {"name": "a/b"}}),
        Step("rd create in missing rg", "POST", RD,
             {"resource_definition": {"name": "diffnorg", "resource_group_name": "norg"}}),
        Step("vd of missing rd", "GET", f"{RD}/nord/volume-definitions/0"),
        Step("vd missing", "GET", f"{RD}/diffvol/volume-definitions/7"),
        Step("resource missing", "GET", f"{RD}/diffvol/resources/nonode"),
        Step("resource on missing node", "POST", f"{RD}/diffvol/resources",
             [{"resource": {"node_name": "nonode"}}]),
        Step("vd grow of missing rd", "PUT", f"{RD}/nord/volume-definitions/0",
             {"size_kib": 131072}),
        Step("vds", "GET", f"{RD}/diffvol/volume-definitions"),
        Step("vd", "GET", f"{RD}/diffvol/volume-definitions/0"),
        Step("resources", "GET", f"{RD}/diffvol/resources"),
        Step("resource", "GET", f"{RD}/diffvol/resources/{n}"),
        Step("view resources", "GET", "/v1/view/resources?resources=diffvol"),
        # the attach-limit read (mapping/attachment_records.py): a props filter on the
        # resource's own props, key present or exact value; an unmatched filter gives []
        Step("resource modify", "PUT", f"{RD}/diffvol/resources/{n}",
             {"override_props": {"Aux/csi-attached": "rw"}}),
        Step("view resources by prop key", "GET",
             f"/v1/view/resources?nodes={n}&props=Aux/csi-attached", count=True),
        Step("view resources by prop value", "GET",
             f"/v1/view/resources?nodes={n}&props=Aux/csi-attached=rw", count=True),
        Step("view resources by other prop value", "GET",
             f"/v1/view/resources?nodes={n}&props=Aux/csi-attached=ro", count=True),
        Step("view resources by absent prop", "GET",
             f"/v1/view/resources?nodes={n}&props=Aux/csi-attached&props=Aux/csi-none",
             count=True),
        Step("view resources by rd prop", "GET", "/v1/view/resources?props=Aux/csi-test",
             count=True),
        Step("resource create again", "POST", f"{RD}/diffvol/resources",
             [{"resource": {"node_name": n}}]),
        Step("rd modify", "PUT", f"{RD}/diffvol", {"override_props": {"Aux/csi-x": "y"}}),
        Step("vd grow", "PUT", f"{RD}/diffvol/volume-definitions/0", {"size_kib": 131072}),
        Step("vd shrink", "PUT", f"{RD}/diffvol/volume-definitions/0", {"size_kib": 65536}),
        Step("snapshot", "POST", f"{RD}/diffvol/snapshots", {"name": "s1"}),
        Step("snapshot again", "POST", f"{RD}/diffvol/snapshots", {"name": "s1"}),
        Step("snapshot of missing rd", "POST", f"{RD}/nord/snapshots", {"name": "s1"}),
        Step("snapshots", "GET", f"{RD}/diffvol/snapshots"),
        Step("snapshot get", "GET", f"{RD}/diffvol/snapshots/s1"),
        Step("snapshot missing", "GET", f"{RD}/diffvol/snapshots/nosnap"),
        Step("view snapshots ignores snapshots=", "GET", "/v1/view/snapshots?snapshots=nosnap"),
        Step("view snapshots by resource", "GET", "/v1/view/snapshots?resources=diffvol"),
        Step("restore target", "POST", RD,
             {"resource_definition": {"name": "diffrest", "resource_group_name": "diffrg"}}),
        Step("restore vd", "POST", f"{RD}/diffvol/snapshot-restore-volume-definition/s1",
             {"to_resource": "diffrest"}),
        Step("restore", "POST", f"{RD}/diffvol/snapshot-restore-resource/s1",
             {"to_resource": "diffrest"}),
        Step("restore again", "POST", f"{RD}/diffvol/snapshot-restore-resource/s1",
             {"to_resource": "diffrest"}),
        Step("remotes after a restore", "GET", "/v1/remotes"),
        Step("backups of a missing remote", "GET", "/v1/remotes/noremote/backups"),
        Step("backups of a LINSTOR remote", "GET",
             "/v1/remotes/local-remote-generated-by-linstor/backups"),
        Step("restore of missing snapshot", "POST",
             f"{RD}/diffvol/snapshot-restore-resource/nosnap", {"to_resource": "diffrest"}),
        Step("wrong-size target", "POST", RD,
             {"resource_definition": {"name": "diffbig", "resource_group_name": "diffrg"}}),
        Step("wrong-size vd", "POST", f"{RD}/diffbig/volume-definitions",
             {"volume_definition": {"size_kib": 262144}}),
        Step("restore into a bigger vd", "POST", f"{RD}/diffvol/snapshot-restore-resource/s1",
             {"to_resource": "diffbig"}),
        Step("clone on FILE_THIN", "POST", f"{RD}/diffvol/clone", {"name": "diffclone"}),
        Step("clone status", "GET", f"{RD}/diffvol/clone/diffclone"),
        Step("thin pool rg", "POST", "/v1/resource-groups", {"name": "diffthin", "select_filter": {
            "place_count": 1, "storage_pool": THIN_POOL, "layer_stack": ["STORAGE"]}}),
        Step("kvs", "GET", "/v1/key-value-store"),
        Step("kvs modify", "PUT", "/v1/key-value-store/diffkv",
             {"override_props": {"a": "b"}}),
        Step("kvs get", "GET", "/v1/key-value-store/diffkv"),
        # the snapshot index (mapping/snapshot_index.py): removing the last key removes the store
        Step("kvs delete last key", "PUT", "/v1/key-value-store/diffkv", {"delete_props": ["a"]}),
        Step("kvs gone with its last key", "GET", "/v1/key-value-store/diffkv"),
        Step("kvs delete key of missing store", "PUT", "/v1/key-value-store/diffnokv",
             {"delete_props": ["a"]}),
        Step("kvs missing", "GET", "/v1/key-value-store/diffnokv"),
        Step("kvs modify again", "PUT", "/v1/key-value-store/diffkv",
             {"override_props": {"a": "b"}}),
        Step("snapshot index claim", "PUT", f"/v1/key-value-store/{IDX}",
             {"override_props": {"source/DIFFVOL": "snapshot-1", "source/DIFFREST": "x"}}),
        Step("snapshot index read", "GET", f"/v1/key-value-store/{IDX}"),
        Step("snapshot index release", "PUT", f"/v1/key-value-store/{IDX}",
             {"delete_props": ["source/DIFFVOL", "source/DIFFREST"]}),
        Step("snapshot index gone", "GET", f"/v1/key-value-store/{IDX}"),
        Step("kvs delete", "DELETE", "/v1/key-value-store/diffkv"),
        Step("spawn unknown field", "POST", "/v1/resource-groups/diffrg/spawn",
             {"resource_definition_name": "diffunk", "volume_sizes": [65536], "nonsense": 1}),
        Step("snapshot delete", "DELETE", f"{RD}/diffvol/snapshots/s1"),
        Step("snapshot delete again", "DELETE", f"{RD}/diffvol/snapshots/s1"),
        Step("rd delete restore", "DELETE", f"{RD}/diffrest"),
        Step("rd delete big", "DELETE", f"{RD}/diffbig"),
        Step("rd delete clone", "DELETE", f"{RD}/diffclone"),
        Step("rd delete unk", "DELETE", f"{RD}/diffunk"),
        Step("rd delete huge", "DELETE", f"{RD}/diffhuge"),
        Step("rd delete", "DELETE", f"{RD}/diffvol"),
        Step("rd delete again", "DELETE", f"{RD}/diffvol"),
        Step("rg delete thin", "DELETE", "/v1/resource-groups/diffthin"),
        Step("rg delete", "DELETE", "/v1/resource-groups/diffrg"),
        Step("rg delete again", "DELETE", "/v1/resource-groups/diffrg"),
    ]


# (step name, difference) → why the real storage-only setup differs from the model. Keep short.
NO_DRBD = ("this satellite has no DRBD module, LUKS, LVM, ZFS or device-mapper targets: it "
           "reports layers a production node has as unsupported")
ALLOWED: dict[tuple[str, str], str] = {
    ("nodes", "only real has [].unsupported_layers (map)"): NO_DRBD,
    ("node", "only real has unsupported_layers (map)"): NO_DRBD,
}
# Differences of the simulator not corrected yet (csi_linstor/sim is changed elsewhere); the
# driver never reads what they concern. Listed so the report shows them; remove when modelled.


# ---------------------------------------------------------------------------------------------
# Comparison


def shape(value: Any, path: str = "") -> dict[str, str]:
    """Field paths → JSON types; lists merge their items; props maps are opaque."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        if path.endswith(("props", "_map", "unsupported_layers", "unsupported_providers")):
            out[path] = "map"
            return out
        out[path or "."] = "object"
        for k, v in value.items():
            out.update(shape(v, f"{path}.{k}" if path else k))
    elif isinstance(value, list):
        out[path or "."] = "array"
        for item in value:
            out.update(shape(item, path + "[]"))
    else:
        out[path or "."] = {bool: "boolean", int: "integer", float: "number", str: "string",
                            type(None): "null"}.get(type(value), type(value).__name__)
    return out


def _is_rc_list(body: Any) -> bool:
    return isinstance(body, list) and bool(body) and all(
        isinstance(x, dict) and "ret_code" in x for x in body)


MASK_TYPE = 0xC000000000000000


def ret_codes(body: Any) -> list[int]:
    """The distinct error, warning and info ret codes, every bit (type, operation, object and
    code masks), plus 0 when the reply carried success entries. LINSTOR reports one success
    entry per object a call touched (RD, VDs, resources, the group), and their number and masks
    follow its internal call path; the driver reads only whether a call succeeded and the codes
    of errors, warnings and infos, so those are compared exactly and success only as success."""
    entries = body if _is_rc_list(body) else (
        body.get("messages") if isinstance(body, dict) and _is_rc_list(body.get("messages"))
        else [])
    codes = set()
    for x in entries:
        code = int(x["ret_code"]) & 0xFFFFFFFFFFFFFFFF
        codes.add(code if code & MASK_TYPE else 0)
    return sorted(codes)


def _rc_shape_free(body: Any) -> Any:
    """ApiCallRc entries carry optional text fields by message (details, cause, correction,
    error_report_ids, obj_refs): their presence follows the message, not the model."""
    if _is_rc_list(body):
        return [{"ret_code": 0, "message": ""}]
    return body


@dataclass
class Answer:
    status: int
    body: Any


def call(session: requests.Session, url: str, step: Step) -> Answer:
    r = session.request(step.method, url + step.path, json=step.body, timeout=120)
    body = r.json() if r.content and "json" in r.headers.get("Content-Type", "json") else None
    return Answer(r.status_code, body)


def compare(step: Step, real: Answer, sim: Answer) -> list[str]:
    diffs = []
    if real.status != sim.status:
        diffs.append(f"status real {real.status} sim {sim.status}")
    rr, sr = ret_codes(real.body), ret_codes(sim.body)
    if rr != sr:
        diffs.append(f"ret codes real {[hex(c & 0xFFFFFFFFFFFFFFFF) for c in rr]} "
                     f"sim {[hex(c & 0xFFFFFFFFFFFFFFFF) for c in sr]}")
    if step.count and isinstance(real.body, list) and isinstance(sim.body, list) \
            and len(real.body) != len(sim.body):
        diffs.append(f"{len(real.body)} objects listed by real, {len(sim.body)} by sim")
    rs, ss = shape(_rc_shape_free(real.body)), shape(_rc_shape_free(sim.body))
    for key in sorted(set(rs) | set(ss)):
        if key not in ss:
            diffs.append(f"only real has {key} ({rs[key]})")
        elif key not in rs:
            diffs.append(f"only sim has {key} ({ss[key]})")
        elif rs[key] != ss[key]:
            diffs.append(f"{key}: real {rs[key]} sim {ss[key]}")
    return diffs


@pytest.fixture
def backends(real_linstor: RealLinstor, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The session's real LINSTOR (tests/conftest.py: left empty, checked) and a simulator
    configured like it."""
    sim = Simulator(SimConfig(
        nodes=[NODE], pools=[PoolSpec(XFS_POOL, "FILE_THIN"), PoolSpec(THIN_POOL, "FILE_THIN")],
        device_dir=tmp_path / "dev", state_dir=tmp_path / "state", real_devices=False))
    try:
        yield real_linstor.url, sim.start()
    finally:
        sim.stop()


def test_simulator_answers_as_real_linstor(backends: tuple[str, str]) -> None:
    real_url, sim_url = backends
    rs, ss = requests.Session(), requests.Session()
    report, unexpected = [], []
    for step in scenario():
        real, sim = call(rs, real_url, step), call(ss, sim_url, step)
        for diff in compare(step, real, sim):
            line = f"{step.name}: {step.method} {step.path}: {diff}"
            report.append(line)
            if (step.name, diff) not in ALLOWED:
                unexpected.append(line)
    print("\n".join(report) or "no difference")
    assert not unexpected, f"{len(unexpected)} difference(s) between the simulator and " \
        "LINSTOR 1.33.3:\n" + "\n".join(unexpected)


# ---------------------------------------------------------------------------------------------
# List order and offset/limit: ListVolumes and ListSnapshots pages (mapping/listing.py) continue
# a listing by offset, which needs LINSTOR's order (by upper-cased name) in the simulator too.

ORDER_RDS = ["ordz", "Orda", "ord_b", "ordA9", "ordb"]  # created in this (unsorted) order
ORDER_SNAPS = ["sz", "Sa", "s_b", "sa9"]


def _names(session: requests.Session, url: str, path: str) -> list[str]:
    r = session.get(url + path, timeout=120)
    r.raise_for_status()
    return [item.get("resource_name", "") + "/" + item["name"]
            if "resource_name" in item else item["name"] for item in r.json()]


def test_lists_come_in_linstor_order_with_offset_and_limit(
        backends: tuple[str, str]) -> None:
    rg = {"name": "ordrg", "select_filter": {
        "place_count": 1, "storage_pool": XFS_POOL, "layer_stack": ["STORAGE"]}}
    reads = [RD, f"{RD}?limit=2&offset=1", f"{RD}?limit=2&offset=4", f"{RD}?offset=3",
             "/v1/view/snapshots", "/v1/view/snapshots?limit=3&offset=2",
             f"{RD}/ordb/snapshots", f"{RD}/ordb/snapshots?limit=2&offset=1"]
    seen = {}
    for url in backends:
        s = requests.Session()
        try:
            assert s.post(url + "/v1/resource-groups", json=rg, timeout=120).ok
            for name in ORDER_RDS:
                r = s.post(url + "/v1/resource-groups/ordrg/spawn", timeout=120, json={
                    "resource_definition_name": name, "volume_sizes": [65536]})
                assert r.ok, r.text
            for rd in ("ordb", "Orda"):
                for snap in ORDER_SNAPS:
                    r = s.post(f"{url}{RD}/{rd}/snapshots", json={"name": snap}, timeout=120)
                    assert r.ok, r.text
            seen[url] = [_names(s, url, path) for path in reads]
        finally:  # snapshots first: LINSTOR keeps a definition that has snapshots
            for rd in ("ordb", "Orda"):
                for snap in ORDER_SNAPS:
                    s.delete(f"{url}{RD}/{rd}/snapshots/{snap}", timeout=120)
            for name in ORDER_RDS:
                s.delete(f"{url}{RD}/{name}", timeout=120)
            s.delete(url + "/v1/resource-groups/ordrg", timeout=120)
    real, sim = (seen[url] for url in backends)
    # by upper-cased name: '_' (0x5F) sorts after the letters, digits before them
    assert real[0] == ["Orda", "ordA9", "ordb", "ordz", "ord_b"], real[0]
    assert real[1] == real[0][1:3] and real[2] == real[0][4:], real[1:3]
    assert real[3] == real[0], "an offset without a limit is ignored"
    snaps = [f"{rd}/{s}" for rd in ("Orda", "ordb") for s in ("Sa", "sa9", "sz", "s_b")]
    assert real[4] == snaps and real[5] == snaps[2:5], real[4:6]
    assert real[6] == snaps[4:] and real[7] == snaps[5:7], real[6:8]
    assert sim == real, f"simulator {sim}\nreal LINSTOR {real}"

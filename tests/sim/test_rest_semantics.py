"""Behaviour of the simulated controller, one test per rule of linstor-facts Part 2 §1-§3."""

from __future__ import annotations

from typing import Any

from csi_linstor.sim import consts as C
from tests.sim.helpers import Api, has_rc, rc_is

GIB = 1024 * 1024


def _walk_empty(obj: Any, path: str = "") -> list[str]:
    bad = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if v is None or (isinstance(v, (dict, list)) and not v):
                bad.append(f"{path}/{k}")
            bad += _walk_empty(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            bad += _walk_empty(v, f"{path}[{i}]")
    return bad


def test_version_health_and_unknown_routes(api: Api) -> None:
    v = api.get("/v1/controller/version").json()
    assert v["rest_api_version"] == "1.27.0" and v["version"] == "1.33.3"
    r = api.get("/health")
    assert r.status_code == 200 and r.content == b""
    r = api.get("/v1/no/such/thing")
    assert r.status_code == 404
    body = r.json()
    assert isinstance(body, list) and rc_is(body[0]["ret_code"], C.FAIL_UNKNOWN_ERROR)
    assert body[0]["ret_code"] < 0
    assert body[0]["message"] == "Path '/v1/no/such/thing' not found on server."
    r = api.put("/v1/view/resources", {})
    assert r.status_code == 405 and rc_is(r.json()[0]["ret_code"], C.FAIL_UNKNOWN_ERROR)
    # 1.28-only route is unknown on a 1.27 controller
    r = api.put("/v1/resource-definitions/x/resources/node-1/toggle-disk", {})
    assert r.status_code == 404


def test_signed_ret_codes_with_context_masks(api: Api) -> None:
    body = {"resource_definition": {"name": "pvc-1"}}
    r = api.post("/v1/resource-definitions", body)
    assert r.status_code == 201
    assert r.json()[0]["ret_code"] == 20447233  # CREATED|MASK_CRT|MASK_RSC_DFN
    r = api.post("/v1/resource-definitions", body)
    assert r.status_code == 500
    e = r.json()[0]
    assert e["ret_code"] == -4611686018406940171  # 0xC0000000013801F5 as a Java long
    assert e["message"] == "A resource definition with the name 'pvc-1' already exists"
    assert e["obj_refs"] == {"RscDfn": "pvc-1"} and "created_at" in e
    r = api.get("/v1/resource-definitions/nope")
    assert r.status_code == 404 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_FOUND_RSC_DFN)


def test_names_case_insensitive_and_validated(api: Api) -> None:
    assert api.post("/v1/resource-definitions",
                    {"resource_definition": {"name": "Pvc-Mixed"}}).status_code == 201
    r = api.get("/v1/resource-definitions/pvc-MIXED")
    assert r.status_code == 200 and r.json()["name"] == "Pvc-Mixed"
    r = api.post("/v1/resource-definitions", {"resource_definition": {"name": "PVC-MIXED"}})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_RSC_DFN)
    for bad in ("1abc", "a", "x" * 49, "a.b", "__", "-ab"):
        r = api.post("/v1/resource-definitions", {"resource_definition": {"name": bad}})
        assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_INVLD_RSC_NAME), bad
    api.rg("rg1")
    r = api.get("/v1/resource-groups/RG1")
    assert r.status_code == 200 and r.json()["name"] == "rg1"


def test_unknown_request_fields_rejected(sim_factory: Any) -> None:
    api = Api(sim_factory(rest_api_version="1.21.0", real_devices=False).url)
    r = api.post("/v1/resource-definitions", {"resource_definition": {"name": "a1"}, "x": 1})
    assert r.status_code == 400 and rc_is(r.json()[0]["ret_code"], C.API_CALL_PARSE_ERROR)
    r = api.post("/v1/resource-groups", {"name": "g1", "select_filter": {"plac_count": 1}})
    assert r.status_code == 400
    api.rg("rg1")
    r = api.spawn("a2", bogus=True)
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.API_CALL_PARSE_ERROR)
    # resource_definition_props only exists from REST 1.22 on
    r = api.spawn("a3", resource_definition_props={"Aux/x": "y"})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.API_CALL_PARSE_ERROR)
    r = api.post("/v1/resource-definitions", {"resource_definition": {"name": 5}})
    assert r.status_code == 400
    assert api.get("/v1/resource-definitions").json() == []


def test_non_empty_omission(api: Api) -> None:
    api.rg("rg1")
    assert api.spawn("pvc-e").status_code == 201
    rd = api.get("/v1/resource-definitions/pvc-e").json()
    assert "props" not in rd and "flags" not in rd and "volume_definitions" not in rd
    rg = api.get("/v1/resource-groups/DfltRscGrp").json()
    assert "select_filter" not in rg and "props" not in rg
    for path in ("/v1/nodes", "/v1/view/storage-pools", "/v1/resource-groups",
                 "/v1/resource-definitions?with_volume_definitions=true", "/v1/view/resources",
                 "/v1/resource-definitions/pvc-e/resources/node-1/volumes"):
        body = api.get(path).json()
        assert body and not _walk_empty(body), (path, _walk_empty(body))
    diskless = [p for p in api.get("/v1/view/storage-pools").json()
                if p["provider_kind"] == "DISKLESS"]
    assert diskless and all("free_capacity" not in p and "total_capacity" not in p
                            for p in diskless)


def test_list_filters_repeat_props_limit(api: Api) -> None:
    for i in range(4):
        props = {"Aux/k": "v" if i % 2 else "w"}
        api.post("/v1/resource-definitions", {"resource_definition": {"name": f"f{i}",
                                                                      "props": props}})
    names = [n["name"] for n in api.get("/v1/nodes?nodes=node-1&nodes=NODE-3").json()]
    assert names == ["node-1", "node-3"]
    got = api.get("/v1/resource-definitions", params={"resource_definitions": ["f0", "f2"]})
    assert sorted(x["name"] for x in got.json()) == ["f0", "f2"]
    got = api.get("/v1/resource-definitions", params={"props": "Aux/k=v"}).json()
    assert sorted(x["name"] for x in got) == ["f1", "f3"]
    assert len(api.get("/v1/resource-definitions", params={"props": "Aux/k"}).json()) == 4
    assert len(api.get("/v1/resource-definitions", params={"props": ["Aux/k=v", "Aux/z"]})
               .json()) == 0
    page = api.get("/v1/resource-definitions?limit=2&offset=1").json()
    assert [x["name"] for x in page] == ["f1", "f2"]
    assert len(api.get("/v1/resource-definitions?limit=0&offset=3").json()) == 4


def test_props_whitelist_and_unset_delete(api: Api) -> None:
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "p1"}})
    r = api.put("/v1/resource-definitions/p1", {"override_props": {"Bogus/key": "1"}})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_INVLD_PROP)
    r = api.put("/v1/resource-definitions/p1", {"override_props": {
        "Aux/anything/goes": "x", "DrbdOptions/Net/allow-two-primaries": "yes",
        "FileSystem/Type": "ext4"}})
    assert r.status_code == 200
    r = api.put("/v1/resource-definitions/p1", {"delete_props": ["Aux/missing"]})
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_DEL_UNSET_PROP)
    props = api.get("/v1/resource-definitions/p1").json()["props"]
    assert props["Aux/anything/goes"] == "x"
    r = api.put("/v1/nodes/node-1", {"override_props": {"Aux/topology/zone": "a"}})
    assert r.status_code == 200
    assert api.get("/v1/nodes/node-1").json()["props"]["Aux/topology/zone"] == "a"


def test_autoplace_most_free_space_first(sim_factory: Any) -> None:
    sim = sim_factory(nodes=["a", "b", "c"])
    for n, cap in (("a", 100 * GIB), ("b", 300 * GIB), ("c", 200 * GIB)):
        sim.controller.nodes[n.upper()].pools["THICK"] = __import__(
            "csi_linstor.sim.model", fromlist=["Pool"]).Pool(n, "thick", "LVM", cap)
    api = Api(sim.url)
    api.rg("rg1", storage_pool_list=["thick"])
    assert api.spawn("r1", size_kib=150 * GIB).status_code == 201
    assert diskful_nodes(api, "r1") == ["b", "c"]
    # now b has 150G free, c 50G, a 100G -> b then a
    assert api.spawn("r2", size_kib=10 * GIB).status_code == 201
    assert diskful_nodes(api, "r2") == ["a", "b"]
    pools = {p["node_name"]: p for p in api.get("/v1/view/storage-pools?storage_pools=thick")
             .json()}
    assert pools["c"]["free_capacity"] == 50 * GIB


def diskful_nodes(api: Api, rd: str) -> list[str]:
    return sorted(r["node_name"] for r in api.get(f"/v1/resource-definitions/{rd}/resources")
                  .json() if "DISKLESS" not in r.get("flags", []))


def test_not_enough_nodes_leaves_nothing(api: Api) -> None:
    api.rg("rg1", place_count=4)
    r = api.spawn("big")
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_ENOUGH_NODES)
    assert "details" in r.json()[0]
    assert api.get("/v1/resource-definitions/big").status_code == 404
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "ap"}})
    api.post("/v1/resource-definitions/ap/volume-definitions",
             {"volume_definition": {"size_kib": 1024}})
    r = api.post("/v1/resource-definitions/ap/autoplace", {"select_filter": {"place_count": 4}})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_ENOUGH_NODES)
    assert api.get("/v1/resource-definitions/ap/resources").json() == []


def test_autoplace_idempotent_and_filters(api: Api, sim: Any) -> None:
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "ap"}})
    r = api.post("/v1/resource-definitions/ap/volume-definitions",
                 {"volume_definition": {"size_kib": 1024}})
    assert r.status_code == 200  # not 201
    sf = {"place_count": 2, "node_name_list": ["node-2", "node-3"], "storage_pool_list": ["sp1"]}
    r = api.post("/v1/resource-definitions/ap/autoplace", {"select_filter": sf})
    assert r.status_code == 201
    res = api.get("/v1/resource-definitions/ap/resources").json()
    assert sorted((x["node_name"], x["props"]["StorPoolName"]) for x in res
                  if "DISKLESS" not in x.get("flags", [])) == [("node-2", "sp1"), ("node-3", "sp1")]
    r = api.post("/v1/resource-definitions/ap/autoplace", {"select_filter": sf})
    assert r.status_code == 201 and has_rc(r.json(), C.WARN_RSC_ALREADY_DEPLOYED)
    r = api.post("/v1/resource-definitions/ap/autoplace",
                 {"select_filter": {"place_count": 2}, "diskless_on_remaining": True})
    assert r.status_code == 201
    n1 = api.get("/v1/resource-definitions/ap/resources/node-1").json()
    assert "DRBD_DISKLESS" in n1["flags"]
    # not_place_with_rsc
    api.spawn  # noqa: B018
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "ap2"}})
    api.post("/v1/resource-definitions/ap2/volume-definitions",
             {"volume_definition": {"size_kib": 1024}})
    r = api.post("/v1/resource-definitions/ap2/autoplace",
                 {"select_filter": {"place_count": 1, "not_place_with_rsc": ["ap"]}})
    assert r.status_code == 500  # every node hosts ap (incl. diskless)


def test_replicas_on_same_and_different(sim_factory: Any) -> None:
    sim = sim_factory(nodes=["a", "b", "c", "d"], real_devices=False,
                      node_props={"a": {"Aux/zone": "z1", "Aux/rack": "r1"},
                                  "b": {"Aux/zone": "z1", "Aux/rack": "r1"},
                                  "c": {"Aux/zone": "z2", "Aux/rack": "r2"},
                                  "d": {"Aux/zone": "z2", "Aux/rack": "r3"}})
    api = Api(sim.url)
    api.rg("rg1")
    r = api.spawn("d1", select_filter={"replicas_on_different": ["Aux/rack"], "place_count": 3})
    assert r.status_code == 201
    nodes = sorted(x["node_name"] for x in api.get("/v1/resource-definitions/d1/resources")
                   .json())
    assert len(nodes) == 3 and not {"a", "b"} <= set(nodes)
    r = api.spawn("s1", select_filter={"replicas_on_same": ["Aux/zone=z2"], "place_count": 2})
    assert r.status_code == 201
    nodes = sorted(x["node_name"] for x in api.get("/v1/resource-definitions/s1/resources")
                   .json())
    assert nodes == ["c", "d"]
    # the tiebreaker must also be in zone z2, which has no free node
    assert has_rc(r.json(), C.WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER)
    r = api.spawn("s2", select_filter={"replicas_on_same": ["Aux/zone"], "place_count": 3})
    assert r.status_code == 500


def test_spawn_props_and_no_place_count(api: Api) -> None:
    r = api.post("/v1/resource-groups", {"name": "noplace"})
    assert r.status_code == 201
    r = api.spawn("sp-a", rg="noplace", resource_definition_props={"Aux/owner": "csi"})
    assert r.status_code == 201 and has_rc(r.json(), C.INFO_NO_RSC_SPAWNED)
    rd = api.get("/v1/resource-definitions/sp-a").json()
    assert rd["props"] == {"Aux/owner": "csi"} and rd["resource_group_name"] == "noplace"
    assert api.get("/v1/resource-definitions/sp-a/volume-definitions/0").json()["size_kib"] \
        == 4096
    r = api.spawn("sp-a", rg="noplace")
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_RSC_DFN)
    api.rg("rg1")
    r = api.post("/v1/resource-groups/rg1/spawn",
                 {"resource_definition_name": "sp-b", "volume_sizes": [1, 2]})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_INVLD_VLM_SIZES)
    r = api.spawn("sp-c", definitions_only=True)
    assert r.status_code == 201 and has_rc(r.json(), C.INFO_NO_RSC_SPAWNED)


def test_make_available(api: Api) -> None:
    api.rg("rg1")
    api.spawn("m1")
    r = api.post("/v1/resource-definitions/m1/resources/node-3/make-available",
                 {"diskful": False})
    assert r.status_code == 200
    res = api.get("/v1/resource-definitions/m1/resources/node-3").json()
    assert {"DISKLESS", "DRBD_DISKLESS"} <= set(res["flags"])
    vol = api.get("/v1/resource-definitions/m1/resources/node-3/volumes/0").json()
    assert vol["storage_pool_name"] == "DfltDisklessStorPool"
    assert vol["provider_kind"] == "DISKLESS" and "allocated_size_kib" not in vol
    assert vol["device_path"].endswith("/drbd1000")
    r = api.post("/v1/resource-definitions/m1/resources/node-3/make-available", {})
    assert r.status_code == 200 and r.json()[0]["ret_code"] == 0
    r = api.post("/v1/resource-definitions/m1/resources/node-1/make-available", {})
    assert r.status_code == 200 and r.json()[0]["ret_code"] == 0
    # tiebreaker -> plain diskless
    api.put("/v1/resource-definitions/m1/resources/node-3", {})
    api.controller_res = None
    r = api.post("/v1/resource-definitions/m1/resources/node-3/make-available",
                 {"diskful": True})
    assert r.status_code == 200
    vol = api.get("/v1/resource-definitions/m1/resources/node-3/volumes/0").json()
    assert vol["provider_kind"] != "DISKLESS"
    assert api.post("/v1/resource-definitions/nope/resources/node-1/make-available",
                    {}).status_code == 404
    assert api.post("/v1/resource-definitions/m1/resources/nonode/make-available",
                    {}).status_code == 404


def test_make_available_tiebreaker(sim: Any, api: Api) -> None:
    api.rg("rg1")
    api.spawn("t1")
    api.post("/v1/resource-definitions/t1/resources/node-3",
             {"resource": {"flags": ["DISKLESS"]}, "layer_list": ["DRBD", "STORAGE"]})
    with sim.controller.lock:
        sim.controller.rds["T1"].resources["NODE-3"].flags.append("TIE_BREAKER")
    r = api.post("/v1/resource-definitions/t1/resources/node-3/make-available", {})
    assert r.status_code == 200
    flags = api.get("/v1/resource-definitions/t1/resources/node-3").json()["flags"]
    assert "TIE_BREAKER" not in flags and "DRBD_DISKLESS" in flags


def test_delete_rules(sim: Any, api: Api) -> None:
    r = api.delete("/v1/resource-definitions/ghost")
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_NOT_FOUND)
    assert r.json()[0]["ret_code"] == -9223372036837998408 or r.json()[0]["ret_code"] < 0
    r = api.delete("/v1/resource-definitions/ghost/resources/node-1")
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_NOT_FOUND)
    api.rg("rg1", place_count=1)
    api.spawn("d1")
    diskful = api.get("/v1/resource-definitions/d1/resources").json()[0]["node_name"]
    other = next(n for n in ("node-1", "node-2", "node-3") if n != diskful)
    api.post(f"/v1/resource-definitions/d1/resources/{other}/make-available", {})
    r = api.delete(f"/v1/resource-definitions/d1/resources/{diskful}")
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_IN_USE)
    sim.set_in_use("d1", other, True)
    r = api.delete(f"/v1/resource-definitions/d1/resources/{other}")
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_IN_USE)
    r = api.delete("/v1/resource-definitions/d1")
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_IN_USE)
    sim.set_in_use("d1", other, False)
    r = api.delete(f"/v1/resource-definitions/d1/resources/{other}?keep_tiebreaker=true")
    assert r.status_code == 200
    r = api.delete("/v1/resource-definitions/d1")
    assert r.status_code == 200
    assert api.get("/v1/resource-definitions/d1").status_code == 404


def test_resize_rules(sim_factory: Any) -> None:
    sim = sim_factory()
    api = Api(sim.url)
    api.rg("rg1")
    api.spawn("z1", size_kib=4096)
    vd = "/v1/resource-definitions/z1/volume-definitions/0"
    r = api.put(vd, {"size_kib": 4096})
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_VLMDFN_RESIZE_SAME_SIZE)
    r = api.put(vd, {"size_kib": 2048})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_INVLD_VLM_SIZE)
    node = api.get("/v1/resource-definitions/z1/resources").json()[0]["node_name"]
    sim.set_disk_state("z1", node, "Outdated")
    r = api.put(vd, {"size_kib": 8192})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_ALL_UPTODATE)
    view = api.get("/v1/view/resources?resources=z1&nodes=" + node).json()[0]
    assert view["volumes"][0]["state"]["disk_state"] == "Outdated"
    sim.set_disk_state("z1", node, None)
    r = api.put(vd, {"size_kib": 8192})
    assert r.status_code == 200
    vol = api.get(f"/v1/resource-definitions/z1/resources/{node}/volumes/0").json()
    assert vol["usable_size_kib"] == 8192
    r = api.put(vd, {"size_kib": 10 * 1024 * GIB})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_ENOUGH_FREE_SPACE)


def test_snapshot_rules(sim_factory: Any) -> None:
    from csi_linstor.sim import SimConfig

    pools = SimConfig().add_pool("thick", "LVM").pools
    sim = sim_factory(pools=pools)
    api = Api(sim.url)
    api.rg("rg1")
    api.rg("thickrg", storage_pool_list=["thick"])
    api.spawn("s1")
    api.spawn("k1", rg="thickrg")
    r = api.post("/v1/resource-definitions/k1/snapshots", {"name": "snap1"})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_SNAPSHOTS_NOT_SUPPORTED)
    r = api.post("/v1/resource-definitions/s1/snapshots", {"name": "snap1"})
    assert r.status_code == 201
    r = api.post("/v1/resource-definitions/s1/snapshots", {"name": "SNAP1"})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_SNAPSHOT_DFN)
    r = api.post("/v1/resource-definitions/nope/snapshots", {"name": "x1"})
    assert r.status_code == 404
    snap = api.get("/v1/resource-definitions/s1/snapshots/snap1").json()
    assert snap["flags"] == ["SUCCESSFUL"] and len(snap["nodes"]) == 2
    assert all(s["create_timestamp"] > 0 for s in snap["snapshots"])
    assert [{k: v for k, v in vd.items() if k != "volume_definition_props"}
            for vd in snap["volume_definitions"]] == [{"volume_number": 0, "size_kib": 4096}]
    # the snapshot definition's own props, as LINSTOR 1.33.3 sets them
    assert snap["snapshot_definition_props"]["SequenceNumber"] == "1"
    assert "state" not in snap["snapshots"][0]["snapshot_volumes"][0]
    assert sim.list_snapshots() == ["s1/snap1"]
    r = api.delete("/v1/resource-definitions/s1")
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_SNAPSHOT_DFN)
    r = api.delete("/v1/resource-definitions/s1/snapshots/nope")
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_NOT_FOUND)
    assert api.delete("/v1/resource-definitions/s1/snapshots/snap1").status_code == 200
    assert api.delete("/v1/resource-definitions/s1").status_code == 200


def test_multi_snapshot_all_or_nothing(api: Api) -> None:
    api.rg("rg1")
    api.spawn("a1")
    api.spawn("a2")
    api.post("/v1/resource-definitions/a2/snapshots", {"name": "g1"})
    body = {"snapshots": [{"name": "g1", "resource_name": "a1"},
                          {"name": "g1", "resource_name": "a2"}]}
    r = api.post("/v1/actions/snapshot/multi", body)
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_SNAPSHOT_DFN)
    assert api.get("/v1/resource-definitions/a1/snapshots").json() == []
    body = {"snapshots": [{"name": "g2", "resource_name": "a1"},
                          {"name": "g2", "resource_name": "a2"}]}
    assert api.post("/v1/actions/snapshot/multi", body).status_code == 201
    # View.listSnapshots has no snapshots= filter: LINSTOR ignores it and lists everything
    view = api.get("/v1/view/snapshots", params={"snapshots": "g2"}).json()
    assert sorted((s["resource_name"], s["name"]) for s in view) == [
        ("a1", "g2"), ("a2", "g1"), ("a2", "g2")]
    assert len(api.get("/v1/view/snapshots", params={"resources": "a2"}).json()) == 2
    n = api.get("/v1/resource-definitions/a1/resources").json()[0]["node_name"]
    assert len(api.get("/v1/view/snapshots", params={"nodes": n}).json()) >= 1


def test_restore_rules(api: Api) -> None:
    api.rg("rg1")
    api.spawn("src", size_kib=8192)
    api.post("/v1/resource-definitions/src/snapshots", {"name": "s1"})
    base = "/v1/resource-definitions/src"
    r = api.post(base + "/snapshot-restore-volume-definition/s1", {"to_resource": "dst"})
    assert r.status_code == 404 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_FOUND_RSC_DFN)
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "dst",
                                                                  "resource_group_name": "rg1"}})
    r = api.post(base + "/snapshot-restore-resource/s1", {"to_resource": "dst"})
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_NOT_FOUND)
    r = api.post(base + "/snapshot-restore-volume-definition/nope", {"to_resource": "dst"})
    assert r.status_code == 404 and rc_is(r.json()[0]["ret_code"], C.FAIL_NOT_FOUND_SNAPSHOT_DFN)
    r = api.post(base + "/snapshot-restore-volume-definition/s1", {"to_resource": "dst"})
    assert r.status_code == 200
    assert api.get("/v1/resource-definitions/dst/volume-definitions/0").json()["size_kib"] == 8192
    r = api.post(base + "/snapshot-restore-resource/s1", {"to_resource": "dst"})
    assert r.status_code == 200
    snap_nodes = api.get(base + "/snapshots/s1").json()["nodes"]
    assert diskful_nodes(api, "dst") == sorted(snap_nodes)
    # restore runs the auto helpers: two replicas get their tiebreaker
    assert len(api.get("/v1/resource-definitions/dst/resources").json()) == 3
    r = api.post(base + "/snapshot-restore-resource/s1", {"to_resource": "dst"})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_RSC)


def _thin_lvm_sim(sim_factory: Any) -> tuple[Any, Api]:
    from csi_linstor.sim.simulator import PoolSpec

    sim = sim_factory(pools=[PoolSpec("DfltStorPool", "LVM_THIN"), PoolSpec("sp1", "LVM_THIN")])
    return sim, Api(sim.url)


def test_clone_refuses_pools_linstor_cannot_clone(api: Api) -> None:
    # CtrlRscDfnApiCallHandler.cloneRscDfn + DeviceProviderKind.isCloneSupported: FILE_THIN
    # (the default pools) cannot clone; the clone is rolled back, the reply is the clone object
    api.rg("rg1")
    api.spawn("f-src")
    r = api.post("/v1/resource-definitions/f-src/clone", {"name": "f-dst"})
    assert r.status_code == 500
    msg = r.json()["messages"][0]
    assert rc_is(msg["ret_code"], C.FAIL_INVLD_PROVIDER)
    assert msg["message"] == "Clone source contains unsupported storage pools"
    assert api.get("/v1/resource-definitions/f-dst").status_code == 404


def test_clone(sim_factory: Any) -> None:
    sim, api = _thin_lvm_sim(sim_factory)
    api.rg("rg1")
    api.spawn("c-src", resource_definition_props={"Aux/a": "1"})
    r = api.post("/v1/resource-definitions/c-src/clone", {"name": "c-dst"})
    assert r.status_code == 201
    body = r.json()
    assert body["location"] == "/v1/resource-definitions/c-src/clone/c-dst"
    assert body["source_name"] == "c-src" and body["clone_name"] == "c-dst"
    assert "CLONING" in api.get("/v1/resource-definitions/c-dst").json()["flags"]
    st = "/v1/resource-definitions/c-src/clone/c-dst"
    assert api.get(st).json() == {"status": "CLONING"}
    assert api.get(st).json() == {"status": "COMPLETE"}
    assert "flags" not in api.get("/v1/resource-definitions/c-dst").json()
    assert len(api.get("/v1/resource-definitions/c-dst/resources").json()) == 2
    r = api.post("/v1/resource-definitions/c-src/clone", {"name": "c-dst"})
    assert r.status_code == 500
    body = r.json()
    assert body["clone_name"] == "c-dst" and rc_is(body["messages"][0]["ret_code"],
                                                   C.FAIL_EXISTS_RSC_DFN)
    sim.set_clone_behaviour(polls=0, fail=True)
    r = api.post("/v1/resource-definitions/c-src/clone", {"name": "c-bad"})
    assert r.status_code == 201
    assert api.get("/v1/resource-definitions/c-src/clone/c-bad").json() == {"status": "FAILED"}
    assert "FAILED" in api.get("/v1/resource-definitions/c-bad").json()["flags"]


def test_query_size_info(sim_factory: Any) -> None:
    from csi_linstor.sim import SimConfig

    pools = SimConfig().add_pool("thick", "LVM", capacity_kib=100 * GIB).pools
    sim = sim_factory(pools=pools, real_devices=False)
    api = Api(sim.url)
    api.rg("rg1", storage_pool_list=["thick"], place_count=2)
    r = api.post("/v1/resource-groups/rg1/query-size-info", {})
    assert r.status_code == 200
    info = r.json()["space_info"]
    assert info["max_vlm_size_in_kib"] == 100 * GIB
    assert len(info["next_spawn_result"]) == 2
    api.spawn("q1", size_kib=30 * GIB)
    info = api.post("/v1/resource-groups/rg1/query-size-info", {}).json()["space_info"]
    assert info["max_vlm_size_in_kib"] == 70 * GIB  # best two: 100G (empty node) and 70G
    api.spawn("q2", size_kib=30 * GIB)
    info = api.post("/v1/resource-groups/rg1/query-size-info",
                    {"select_filter": {"place_count": 3}}).json()["space_info"]
    assert info["max_vlm_size_in_kib"] == 40 * GIB
    r = api.post("/v1/resource-groups/rg1/query-size-info",
                 {"select_filter": {"place_count": 5}})
    assert r.status_code == 200 and r.json()["space_info"]["max_vlm_size_in_kib"] == 0
    assert api.post("/v1/resource-groups/nope/query-size-info", {}).status_code == 404


def test_offline_node(sim: Any, api: Api) -> None:
    sim.set_node_online("node-1", False)
    api.rg("rg1", place_count=2)
    assert api.spawn("o1").status_code == 201
    nodes = {x["node_name"] for x in api.get("/v1/resource-definitions/o1/resources").json()}
    assert nodes == {"node-2", "node-3"}
    assert api.spawn("o2", select_filter={"place_count": 3}).status_code == 500
    assert api.get("/v1/nodes/node-1").json()["connection_status"] == "OFFLINE"
    r = api.post("/v1/resource-definitions/o1/resources/node-1/make-available", {})
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_NOT_CONNECTED)
    view = api.get("/v1/view/resources?resources=o1&nodes=node-1").json()[0]
    assert "state" not in view and "state" not in view["volumes"][0]
    r = api.put("/v1/resource-definitions/o1", {"override_props": {"Aux/x": "y"}})
    assert r.status_code == 200 and has_rc(r.json(), C.WARN_NOT_CONNECTED)
    sim.set_node_online("node-1", True)
    view = api.get("/v1/view/resources?resources=o1&nodes=node-1").json()[0]
    assert view["state"] == {"in_use": False}


def test_view_resources_derived_fields(sim: Any, api: Api) -> None:
    api.rg("rg1")
    api.spawn("v1")
    api.post("/v1/resource-definitions/v1/resources/node-3/make-available", {})
    sim.set_in_use("v1", "node-3", True)
    view = {x["node_name"]: x for x in api.get("/v1/view/resources?resources=v1").json()}
    assert len(view) == 3
    dl = view["node-3"]
    assert dl["state"]["in_use"] is True and dl["volumes"][0]["state"]["disk_state"] == "Diskless"
    assert [x["type"] for x in dl["volumes"][0]["layer_data_list"]] == ["DRBD"]
    assert dl["layer_object"]["drbd"]["may_promote"] is False
    full = view["node-1"]
    vol = full["volumes"][0]
    assert vol["device_path"] == sim.device_path("v1")
    assert vol["allocated_size_kib"] == 4096 and vol["usable_size_kib"] == 4096
    assert [x["type"] for x in vol["layer_data_list"]] == ["DRBD", "STORAGE"]
    drbd = vol["layer_data_list"][0]["data"]
    assert drbd["drbd_volume_definition"]["minor_number"] == 1000
    assert drbd["device_path"] == vol["device_path"] and drbd["disk_state"] == "UpToDate"
    lo = full["layer_object"]
    assert lo["type"] == "DRBD" and set(lo["drbd"]["connections"]) == {"node-2", "node-3"}
    assert lo["drbd"]["may_promote"] is False  # node-3 is Primary
    assert lo["children"][0]["type"] == "STORAGE"
    ids = sorted(v["layer_object"]["drbd"]["node_id"] for v in view.values())
    assert ids == [0, 1, 2]


def test_restore_only_into_a_volume_definition_of_the_snapshot_size(api: Api) -> None:
    # CtrlSnapshotRestoreApiCallHandler: a VD grown before restore-resource never restores
    api.rg("rg1")
    api.spawn("src", size_kib=8192)
    api.post("/v1/resource-definitions/src/snapshots", {"name": "s1"})
    base = "/v1/resource-definitions/src"
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "big",
                                                                  "resource_group_name": "rg1"}})
    assert api.post(base + "/snapshot-restore-volume-definition/s1",
                    {"to_resource": "big"}).status_code == 200
    assert api.put("/v1/resource-definitions/big/volume-definitions/0",
                   {"size_kib": 16384}).status_code == 200
    r = api.post(base + "/snapshot-restore-resource/s1", {"to_resource": "big"})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_INVLD_VLM_SIZE)
    assert r.json()[0]["message"] == ("Snapshot size does not match for volume number 0; "
                                      "snapshot size: 8192KiB, required size: 16384KiB")
    assert api.get("/v1/resource-definitions/big/resources").json() == []


def test_a_deleted_snapshot_keeps_its_name_until_the_satellites_are_done(sim: Any,
                                                                         api: Api) -> None:
    # CtrlSnapshotDeleteApiCallHandler: flag DELETE first, the definition goes once satellites
    # confirm; meanwhile CtrlSnapshotCrtHelper answers FAIL_EXISTS_SNAPSHOT_DFN for the name
    import time

    api.rg("rg1")
    api.spawn("d1")
    base = "/v1/resource-definitions/d1/snapshots"
    api.post(base, {"name": "s1"})
    sim.set_snapshot_delete_delay(0.5)
    assert api.delete(base + "/s1").status_code == 200
    assert "DELETE" in api.get(base + "/s1").json()["flags"]
    r = api.post(base, {"name": "s1"})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_EXISTS_SNAPSHOT_DFN)
    time.sleep(0.6)
    assert api.get(base + "/s1").status_code == 404
    assert api.post(base, {"name": "s1"}).status_code == 201


def test_a_new_volume_number_skips_numbers_held_by_snapshots(api: Api) -> None:
    # CtrlRscDfnApiCallHandler.getVlmNr: a VD created without a number gets the lowest number
    # used neither by a VD nor by a snapshot of the RD (consistency-group members rely on it:
    # a snapshot's member N never names a later, different volume N).
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "vn"}})
    for _ in range(2):
        api.post("/v1/resource-definitions/vn/volume-definitions",
                 {"volume_definition": {"size_kib": 1024}})
    api.post("/v1/resource-definitions/vn/autoplace", {"select_filter": {"place_count": 1}})
    api.post("/v1/resource-definitions/vn/snapshots", {"name": "s1"})
    api.delete("/v1/resource-definitions/vn/volume-definitions/0")
    r = api.post("/v1/resource-definitions/vn/volume-definitions",
                 {"volume_definition": {"size_kib": 1024}})
    assert r.status_code == 200
    refs = [e.get("obj_refs", {}) for e in r.json() if e.get("obj_refs", {}).get("VlmNr")]
    assert refs and refs[0]["VlmNr"] == "2"
    assert sorted(v["volume_number"] for v in api.get(
        "/v1/resource-definitions/vn/volume-definitions").json()) == [1, 2]


def test_the_resource_view_leaves_out_resources_without_volumes(api: Api) -> None:
    # CtrlVlmListApiCallHandler: only resources with at least one volume are in the view
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "nv"}})
    api.post("/v1/resource-definitions/nv/volume-definitions",
             {"volume_definition": {"size_kib": 1024}})
    api.post("/v1/resource-definitions/nv/autoplace", {"select_filter": {"place_count": 1}})
    assert len(api.get("/v1/view/resources", params={"resources": "nv"}).json()) == 1
    api.delete("/v1/resource-definitions/nv/volume-definitions/0")
    assert api.get("/v1/view/resources", params={"resources": "nv"}).json() == []
    assert len(api.get("/v1/resource-definitions/nv/resources").json()) == 1


def test_a_restore_copies_the_snapshot_volume_definition_props(api: Api) -> None:
    # CtrlSnapshotRestoreApiCallHandler.restoreOnNode: into a target without resources, each
    # snapshot volume definition's props are copied onto the target's volume definition
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "vp"}})
    api.post("/v1/resource-definitions/vp/volume-definitions",
             {"volume_definition": {"size_kib": 1024, "props": {"Aux/tag": "m0"}}})
    api.post("/v1/resource-definitions/vp/autoplace", {"select_filter": {"place_count": 1}})
    api.post("/v1/resource-definitions/vp/snapshots", {"name": "s1"})
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "vp2"}})
    api.post("/v1/resource-definitions/vp/snapshot-restore-volume-definition/s1",
             {"to_resource": "vp2"})
    vd = api.get("/v1/resource-definitions/vp2/volume-definitions/0").json()
    assert "Aux/tag" not in vd.get("props", {})  # the VD restore copies no props
    r = api.post("/v1/resource-definitions/vp/snapshot-restore-resource/s1",
                 {"to_resource": "vp2"})
    assert r.status_code == 200, r.text
    vd = api.get("/v1/resource-definitions/vp2/volume-definitions/0").json()
    assert vd["props"]["Aux/tag"] == "m0"

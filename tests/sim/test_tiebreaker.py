"""Automatic quorum tiebreakers (linstor-facts §9 C5): CtrlRscAutoTieBreakerHelper.manage after
every placement change, make-available converting one, DELETE taking a resource over."""

from __future__ import annotations

from typing import Any

from csi_linstor.sim import consts as C
from tests.sim.helpers import Api, has_rc

TB_KEY = "DrbdOptions/auto-add-quorum-tiebreaker"


def rscs(api: Api, rd: str) -> dict[str, list[str]]:
    """node -> flags"""
    return {r["node_name"]: r.get("flags", [])
            for r in api.get(f"/v1/resource-definitions/{rd}/resources").json()}


def tiebreakers(api: Api, rd: str) -> list[str]:
    return sorted(n for n, f in rscs(api, rd).items() if "TIE_BREAKER" in f)


def diskful(api: Api, rd: str) -> list[str]:
    return sorted(n for n, f in rscs(api, rd).items() if "DISKLESS" not in f)


def test_two_replicas_get_a_tiebreaker_on_the_third_node(api: Api) -> None:
    api.rg("rg1", place_count=2)
    r = api.spawn("t1")
    assert r.status_code == 201 and has_rc(r.json(), C.INFO_TIE_BREAKER_CREATED)
    all_ = rscs(api, "t1")
    assert len(all_) == 3 and len(diskful(api, "t1")) == 2
    (tb,) = tiebreakers(api, "t1")
    assert set(all_[tb]) == {"DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"}
    vol = api.get(f"/v1/resource-definitions/t1/resources/{tb}/volumes/0").json()
    assert vol["provider_kind"] == "DISKLESS"


def test_only_an_even_number_of_drbd_replicas_gets_one(api: Api) -> None:
    api.rg("rg1", place_count=1)
    api.rg("rg2", place_count=2)
    api.rg("rg3", place_count=3)
    api.rg("rgs", place_count=2, layer_stack=["STORAGE"])
    for rd, rg, want in (("one", "rg1", 0), ("two", "rg2", 1), ("three", "rg3", 0),
                         ("storage", "rgs", 0)):
        r = api.spawn(rd, rg=rg)
        assert r.status_code == 201
        assert has_rc(r.json(), C.INFO_TIE_BREAKER_CREATED) == bool(want), rd
        assert len(tiebreakers(api, rd)) == want, rd


def test_no_free_node_warns(sim_factory: Any) -> None:
    api = Api(sim_factory(nodes=["a", "b"]).url)
    api.rg("rg1", place_count=2)
    r = api.spawn("t1")
    assert r.status_code == 201 and has_rc(r.json(), C.WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER)
    assert sorted(rscs(api, "t1")) == ["a", "b"]


def test_disabled_by_prop_on_controller_rg_or_rd_or_quorum_off(api: Api) -> None:
    api.rg("rg1", place_count=2)
    api.post("/v1/resource-groups", {"name": "rgoff", "select_filter": {"place_count": 2},
                                     "props": {TB_KEY: "False"}})
    api.post("/v1/resource-groups/rgoff/volume-groups", {})
    api.spawn("rgoff1", rg="rgoff")
    assert len(rscs(api, "rgoff1")) == 2
    api.spawn("rdoff", resource_definition_props={TB_KEY: "false"})
    assert len(rscs(api, "rdoff")) == 2
    api.spawn("noquorum", resource_definition_props={"DrbdOptions/Resource/quorum": "off"})
    assert len(rscs(api, "noquorum")) == 2
    assert api.post("/v1/controller/properties",
                    {"override_props": {TB_KEY: "False"}}).status_code == 201
    api.spawn("ctrloff")
    assert len(rscs(api, "ctrloff")) == 2
    # the RD's own value wins over the controller's; setting it runs the helper
    r = api.put("/v1/resource-definitions/ctrloff", {"override_props": {TB_KEY: "True"}})
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_TIE_BREAKER_CREATED)
    assert len(tiebreakers(api, "ctrloff")) == 1
    r = api.put("/v1/resource-definitions/ctrloff", {"override_props": {TB_KEY: "False"}})
    assert has_rc(r.json(), C.INFO_TIE_BREAKER_DELETING)
    assert tiebreakers(api, "ctrloff") == [] and len(rscs(api, "ctrloff")) == 2


def test_make_available_converts_it_and_delete_takes_it_back(api: Api) -> None:
    api.rg("rg1", place_count=2)
    api.spawn("t1")
    (tb,) = tiebreakers(api, "t1")
    r = api.post(f"/v1/resource-definitions/t1/resources/{tb}/make-available", {})
    assert r.status_code == 200
    assert set(rscs(api, "t1")[tb]) == {"DISKLESS", "DRBD_DISKLESS"}
    assert len(rscs(api, "t1")) == 3  # no second tiebreaker: a diskless one exists
    r = api.delete(f"/v1/resource-definitions/t1/resources/{tb}?keep_tiebreaker=true")
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_TIE_BREAKER_TAKEOVER)
    assert tiebreakers(api, "t1") == [tb]
    # the takeover loop of manage() does not look at keep_tiebreaker: the same without it
    api.post(f"/v1/resource-definitions/t1/resources/{tb}/make-available", {})
    r = api.delete(f"/v1/resource-definitions/t1/resources/{tb}")
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_TIE_BREAKER_TAKEOVER)
    assert tiebreakers(api, "t1") == [tb]


def test_creating_a_resource_on_it_takes_it_over(api: Api) -> None:
    api.rg("rg1", place_count=2)
    api.spawn("t1")
    (tb,) = tiebreakers(api, "t1")
    r = api.post(f"/v1/resource-definitions/t1/resources/{tb}",
                 {"resource": {"flags": ["DRBD_DISKLESS"]}})
    assert r.status_code == 201
    assert set(rscs(api, "t1")[tb]) == {"DISKLESS", "DRBD_DISKLESS"}
    api.spawn("t2")
    (tb2,) = tiebreakers(api, "t2")
    r = api.post(f"/v1/resource-definitions/t2/resources/{tb2}", {"resource": {}})
    assert r.status_code == 201
    assert len(diskful(api, "t2")) == 3 and tiebreakers(api, "t2") == []


def test_deleting_the_tiebreaker_disables_auto_tiebreaker(api: Api) -> None:
    api.rg("rg1", place_count=2)
    api.spawn("t1")
    (tb,) = tiebreakers(api, "t1")
    r = api.delete(f"/v1/resource-definitions/t1/resources/{tb}?keep_tiebreaker=true")
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_TIE_BREAKER_TAKEOVER)
    assert tiebreakers(api, "t1") == [tb]
    r = api.delete(f"/v1/resource-definitions/t1/resources/{tb}")
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_PROP_SET)
    assert len(rscs(api, "t1")) == 2
    props = api.get("/v1/resource-definitions/t1").json()["props"]
    assert props[TB_KEY] == "False"
    # keep_tiebreaker re-enables it and puts one back
    node = diskful(api, "t1")[0]
    api.post(f"/v1/resource-definitions/t1/resources/{tb}/make-available", {})
    r = api.delete(f"/v1/resource-definitions/t1/resources/{tb}?keep_tiebreaker=true")
    assert has_rc(r.json(), C.INFO_PROP_SET) and has_rc(r.json(), C.INFO_TIE_BREAKER_TAKEOVER)
    assert api.get("/v1/resource-definitions/t1").json()["props"][TB_KEY] == "True"
    assert tiebreakers(api, "t1") == [tb] and node in diskful(api, "t1")


def test_removed_when_no_longer_needed(sim_factory: Any) -> None:
    sim = sim_factory(nodes=["a", "b", "c", "d"], real_devices=False)
    api = Api(sim.url)
    api.rg("rg1", place_count=2)
    api.spawn("t1")
    (tb,) = tiebreakers(api, "t1")
    free = next(n for n in "abcd" if n not in rscs(api, "t1"))
    # a wanted diskless elsewhere: quorum has its odd voter, the tiebreaker goes
    r = api.post(f"/v1/resource-definitions/t1/resources/{free}/make-available", {})
    assert has_rc(r.json(), C.INFO_TIE_BREAKER_DELETING)
    assert tb not in rscs(api, "t1") and len(rscs(api, "t1")) == 3
    # and comes back when that one is deleted (taken over on its node)
    api.delete(f"/v1/resource-definitions/t1/resources/{free}")
    assert tiebreakers(api, "t1") == [free]
    # a third replica: no longer needed
    r = api.post("/v1/resource-definitions/t1/autoplace", {"select_filter": {"place_count": 3}})
    assert r.status_code == 201
    assert len(diskful(api, "t1")) == 3 and tiebreakers(api, "t1") == []


def test_not_removed_while_its_node_is_offline(sim_factory: Any) -> None:
    sim = sim_factory(nodes=["a", "b", "c", "d"], real_devices=False)
    api = Api(sim.url)
    api.rg("rg1", place_count=2)
    api.spawn("t1")
    (tb,) = tiebreakers(api, "t1")
    sim.set_node_online(tb, False)
    free = next(n for n in "abcd" if n not in rscs(api, "t1"))
    api.post(f"/v1/resource-definitions/t1/resources/{free}/make-available", {})
    assert tiebreakers(api, "t1") == [tb]


def test_toggle_disk_and_replica_delete(api: Api) -> None:
    api.rg("rg1", place_count=3)
    api.spawn("t1")
    assert tiebreakers(api, "t1") == []
    # deleting one of three replicas leaves two: that one is taken over as the tiebreaker
    victim = diskful(api, "t1")[0]
    r = api.delete(f"/v1/resource-definitions/t1/resources/{victim}")
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_TIE_BREAKER_TAKEOVER)
    assert tiebreakers(api, "t1") == [victim] and len(diskful(api, "t1")) == 2
    # one replica toggled diskless: 1 diskful + 1 diskless, no tiebreaker needed
    other = diskful(api, "t1")[0]
    r = api.put(f"/v1/resource-definitions/t1/resources/{other}/toggle-disk/diskless", {})
    assert r.status_code == 200 and has_rc(r.json(), C.INFO_TIE_BREAKER_DELETING)
    assert tiebreakers(api, "t1") == [] and victim not in rscs(api, "t1")


def test_diskless_on_remaining_takes_the_tiebreaker_over(api: Api) -> None:
    api.rg("rg1", place_count=2)
    api.spawn("t1")
    (tb,) = tiebreakers(api, "t1")
    r = api.post("/v1/resource-definitions/t1/autoplace",
                 {"select_filter": {"place_count": 2}, "diskless_on_remaining": True})
    assert r.status_code == 201
    assert set(rscs(api, "t1")[tb]) == {"DISKLESS", "DRBD_DISKLESS"}

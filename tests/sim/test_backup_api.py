"""The simulator's remotes and backup API against a real S3 server (moto): LINSTOR's codes and
chain rules (sim/remotes.py and sim/backups.py cite the LINSTOR 1.33.3 classes each rule comes from)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from csi_linstor.sim import consts as C
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from tests.sim.helpers import Api, has_rc

FAIL_NOT_FOUND_BACKUP = 322 | C.MASK_ERROR
FAIL_EXISTS_REMOTE = 527 | C.MASK_ERROR
FAIL_DEPENDEND_BACKUP = 977 | C.MASK_ERROR


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.make_bucket("simbk")
    try:
        yield server
    finally:
        server.stop()


def remote(api: Api, s3: S3Server, name: str = "bk") -> Any:
    return api.post("/v1/remotes/s3", {"remote_name": name, "endpoint": s3.url,
                                       "bucket": "simbk", "region": REGION,
                                       "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                       "use_path_style": True})


def test_remotes_create_list_and_codes(sim: Any, api: Api, s3: S3Server) -> None:
    r = api.post("/v1/remotes/s3", {"remote_name": "nobucket", "endpoint": s3.url,
                                    "bucket": "missing-bucket", "region": REGION,
                                    "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                    "use_path_style": True})
    assert r.status_code == 500 and has_rc(r.json(), C.FAIL_UNKNOWN_ERROR), r.text
    r = api.post("/v1/remotes/s3", {"remote_name": "nokeys", "endpoint": s3.url})
    assert has_rc(r.json(), 238 | C.MASK_ERROR) and "access_key" in r.json()[0]["message"]
    assert remote(api, s3).status_code == 200
    r = remote(api, s3)
    assert r.status_code == 500 and has_rc(r.json(), FAIL_EXISTS_REMOTE)
    listed = api.get("/v1/remotes").json()["s3_remotes"]
    assert listed == [{"remote_name": "bk", "endpoint": s3.url, "bucket": "simbk",
                       "region": REGION}]  # never the keys (Json.apiToS3Remote)
    r = api.post("/v1/remotes/linstor", {"remote_name": "bk", "url": "http://x:3370"})
    assert has_rc(r.json(), FAIL_EXISTS_REMOTE)
    r = api.post("/v1/remotes/bk/backups/info", {"src_rsc_name": "nothing"})
    assert r.status_code == 404 and has_rc(r.json(), FAIL_NOT_FOUND_BACKUP)
    assert api.delete("/v1/remotes?remote_name=bk").status_code == 200
    assert api.get("/v1/remotes").json() == {}


def test_chain_delete_rules_and_restore(sim: Any, api: Api, s3: S3Server) -> None:
    api.rg("one", place_count=1)
    assert api.spawn("res1", rg="one").ok
    assert remote(api, s3).status_code == 200
    for i in range(3):
        r = api.post("/v1/remotes/bk/backups", {"rsc_name": "res1", "snap_name": f"s{i}",
                                                 "incremental": True})
        assert r.status_code == 201, r.text
    snap = api.get("/v1/resource-definitions/res1/snapshots/s2").json()
    props = snap["snapshot_definition_props"]
    assert props["BackupShipping/Source/bk/ShippingStatus"] == "Success"
    assert props["BackupShipping/Source/bk/BackupTargetRemote"] == "bk"
    listed = api.get("/v1/remotes/bk/backups", params={"rsc_name": "res1"}).json()["linstor"]
    by_snap = {b["origin_snap"]: b for b in listed.values()}
    assert "based_on_id" not in by_snap["s0"]
    assert by_snap["s1"]["based_on_id"] == by_snap["s0"]["s3"]["meta_name"]
    assert by_snap["s2"]["based_on_id"] == by_snap["s1"]["s3"]["meta_name"]
    assert all(b["restorable"] for b in listed.values())
    # a backup another one is based on: FAIL_DEPENDEND_BACKUP unless cascading
    r = api.delete("/v1/remotes/bk/backups", params={"id": by_snap["s1"]["id"]})
    assert r.status_code == 500 and has_rc(r.json(), FAIL_DEPENDEND_BACKUP), r.text
    # download the chain's head into another RD, then restore a resource from it
    r = api.post("/v1/remotes/bk/backups/restore", {
        "src_rsc_name": "res1", "src_snap_name": "s2", "target_rsc_name": "copy1",
        "node_name": "node-1", "download_only": True})
    assert r.status_code == 201, r.text
    got = api.get("/v1/resource-definitions/copy1/snapshots/s2").json()
    assert got["snapshot_definition_props"]["BackupShipping/Target/ShippingStatus"] == "Success"
    assert api.get("/v1/resource-definitions/copy1/resources").json() == []
    # a second download of the same snapshot: FAIL_EXISTS_SNAPSHOT
    r = api.post("/v1/remotes/bk/backups/restore", {
        "src_rsc_name": "res1", "src_snap_name": "s2", "target_rsc_name": "copy1",
        "node_name": "node-1", "download_only": True})
    assert r.status_code == 500 and has_rc(r.json(), 516 | C.MASK_ERROR)
    r = api.post("/v1/remotes/bk/backups/abort", {"rsc_name": "res1"})
    assert r.status_code == 200
    # cascading deletes s1 and everything based on it, and the snapshots they came from
    r = api.delete("/v1/remotes/bk/backups", params={"id": by_snap["s1"]["id"],
                                                      "cascading": "true"})
    assert r.status_code == 200, r.text
    left = api.get("/v1/remotes/bk/backups", params={"rsc_name": "res1"}).json()
    assert [b["origin_snap"] for b in left.get("linstor", {}).values()] == ["s0"]
    names = [s["name"] for s in api.get("/v1/resource-definitions/res1/snapshots").json()]
    assert names == ["s0"]
    r = api.delete("/v1/remotes/bk/backups", params={"resource_name": "res1"})
    assert r.status_code == 200
    assert [k for k in s3.keys("simbk") if k.startswith("res1_")] == []

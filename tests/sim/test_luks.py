"""The LUKS layer and LINSTOR's master passphrase in the simulator (csi_linstor/sim/luks.py)."""

from __future__ import annotations

from typing import Any

from csi_linstor.sim import luks
from tests.sim.helpers import Api, has_rc

LUKS_STACK = ["DRBD", "LUKS", "STORAGE"]


def test_luks_needs_the_master_passphrase_and_leaves_nothing_without_it(sim: Any,
                                                                        api: Api) -> None:
    api.rg("rg1", layer_stack=LUKS_STACK)
    assert api.get("/v1/encryption/passphrase").json() == [{"status": "unset"}]
    r = api.spawn("enc1")
    assert r.status_code >= 400, r.text
    assert has_rc(r.json(), luks.FAIL_NOT_FOUND_CRYPT_KEY)
    assert "master" in r.json()[0]["message"]
    assert api.get("/v1/resource-definitions/enc1").status_code == 404  # spawn: all or nothing
    r = api.post("/v1/encryption/passphrase", {"new_passphrase": "s3cret"})
    assert r.status_code == 200, r.text
    assert api.get("/v1/encryption/passphrase").json() == [{"status": "unlocked"}]
    r = api.post("/v1/encryption/passphrase", {"new_passphrase": "other"})
    assert has_rc(r.json(), luks.FAIL_EXISTS_CRYPT_PASSPHRASE)
    assert api.spawn("enc1").status_code == 201


def test_luks_layer_sits_between_drbd_and_storage(sim_factory: Any) -> None:
    sim = sim_factory(master_passphrase="s3cret")
    api = Api(sim.url or "")
    api.rg("rg1", place_count=2, layer_stack=LUKS_STACK)
    assert api.spawn("enc2", size_kib=8 * 1024).status_code == 201
    api.post("/v1/resource-definitions/enc2/resources/node-3/make-available", {})
    view = api.get("/v1/view/resources?resources=enc2").json()
    assert len(view) == 3
    for res in view:
        vol = res["volumes"][0]
        kinds = [layer["type"] for layer in vol["layer_data_list"]]
        assert vol["device_path"].rsplit("/", 1)[-1].startswith("drbd")  # DRBD on top
        if "DISKLESS" in res.get("flags", []):
            assert kinds == ["DRBD"]  # the layers below a diskless DRBD are ignored
            continue
        assert kinds == LUKS_STACK
        drbd, crypt, storage = (layer["data"] for layer in vol["layer_data_list"])
        assert crypt["device_path"] == "/dev/mapper/Linstor-Crypt-enc2_00000"
        assert drbd["backing_device"] == crypt["device_path"]
        assert crypt["backing_device"] == storage["device_path"]
        assert res["layer_object"]["children"][0]["type"] == "LUKS"
        assert "passphrase" not in str(res).lower()  # the keys stay in LINSTOR

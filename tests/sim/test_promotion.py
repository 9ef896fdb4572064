"""DRBD auto-promote from real opens (sim/opens.py): with node_roots, a node's resource is
Primary (state.in_use, drbdsetup role/open) while the volume's device is mounted read-write or
open for writing under that node's path, and Secondary again once it is released."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from csi_linstor.sim import consts as C
from tests.sim.helpers import Api, rc_is


def _state(api: Api, rd: str, node: str) -> tuple[bool, bool]:
    res = api.get(f"/v1/resource-definitions/{rd}/resources/{node}").json()
    return res["state"]["in_use"], res["layer_object"]["drbd"]["may_promote"]


def test_in_use_follows_mounts_and_write_opens_per_node(sim_factory: Any, tmp_path: Path
                                                         ) -> None:
    roots = {"node-1": tmp_path / "k1", "node-2": tmp_path / "k2"}
    sim = sim_factory(node_roots={n: [str(p)] for n, p in roots.items()})
    api = Api(sim.url)
    api.rg("rg1", place_count=2, node_name_list=["node-1", "node-2"])
    assert api.spawn("p1", size_kib=16 * 1024).status_code == 201
    dev = sim.device_path("p1")
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
    assert _state(api, "p1", "node-1") == (False, True)

    mnt = roots["node-1"] / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
    try:
        assert _state(api, "p1", "node-1") == (True, False)
        assert _state(api, "p1", "node-2") == (False, False)  # node-1 is Primary
        st = sim.drbd_status("p1", "node-2")[0]
        assert st["role"] == "Secondary"
        assert {c["name"]: c["peer-role"] for c in st["connections"]}["node-1"] == "Primary"
        r = api.delete("/v1/resource-definitions/p1")
        assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_IN_USE)
    finally:
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    assert _state(api, "p1", "node-1") == (False, True)

    # a read-only mount on node-2 does not promote it
    mnt2 = roots["node-2"] / "ro"
    mnt2.mkdir(parents=True)
    subprocess.run(["mount", "-o", "ro", dev, str(mnt2)], check=True, capture_output=True)
    try:
        assert _state(api, "p1", "node-2") == (False, True)
    finally:
        subprocess.run(["umount", str(mnt2)], check=True, capture_output=True)

    # block volume: a write open of the device node bind-mounted under node-2's root
    blk = roots["node-2"] / "blk"
    blk.touch()
    subprocess.run(["mount", "--bind", dev, str(blk)], check=True, capture_output=True)
    try:
        assert _state(api, "p1", "node-2") == (False, True), "a bind mount opens nothing"
        fd = os.open(blk, os.O_RDWR)
        try:
            assert _state(api, "p1", "node-2") == (True, False)
            assert sim.drbd_status("p1", "node-2")[0]["devices"][0]["open"] is True
        finally:
            os.close(fd)
        assert _state(api, "p1", "node-2") == (False, True)
    finally:
        subprocess.run(["umount", str(blk)], check=True, capture_output=True)
    assert sim.controller.double_opens == []
    assert api.delete("/v1/resource-definitions/p1").status_code == 200


def test_a_second_writer_is_recorded_even_when_the_first_node_is_offline(
        sim_factory: Any, tmp_path: Path) -> None:
    """DRBD refuses a second Primary; the shared loop device cannot, so the simulator records
    it (the e2e stories fail on it). A node that went offline with the device still mounted
    has not released it: it counts, though LINSTOR reports no state for it."""
    roots = {"node-1": tmp_path / "k1", "node-2": tmp_path / "k2"}
    sim = sim_factory(node_roots={n: [str(p)] for n, p in roots.items()})
    api = Api(sim.url)
    api.rg("rg1", place_count=2, node_name_list=["node-1", "node-2"])
    assert api.spawn("p2", size_kib=16 * 1024).status_code == 201
    dev = sim.device_path("p2")
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
    mounts = []
    try:
        for node in ("node-1", "node-2"):
            mnt = roots[node] / "mnt"
            mnt.mkdir(parents=True)
            subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
            mounts.append(mnt)
            if node == "node-1":
                sim.set_node_online("node-1", False)
        assert _state(api, "p2", "node-2")[0] is True
        assert ("p2", ["NODE-1", "NODE-2"]) in sim.controller.double_opens
    finally:
        for mnt in reversed(mounts):
            subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
        sim.set_node_online("node-1", True)
    assert api.delete("/v1/resource-definitions/p2").status_code == 200

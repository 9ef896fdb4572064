"""Real block devices behind volumes, fault knobs, /sim admin API, drbdsetup stand-in, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from csi_linstor.sim import consts as C
from csi_linstor.sim import drbdsetup, leftover_loop_devices
from tests.sim.helpers import Api, assert_clean, rc_is

MIB = 1024 * 1024


def _write(dev: str, offset: int, data: bytes) -> None:
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(dev: str, offset: int, n: int) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.pread(fd, n, offset)
    finally:
        os.close(fd)


def _size(dev: str) -> int:
    return int(subprocess.run(["blockdev", "--getsize64", dev], check=True,
                              capture_output=True, text=True).stdout)


def _vol_path(api: Api, rd: str) -> str:
    node = api.get(f"/v1/resource-definitions/{rd}/resources").json()[0]["node_name"]
    return api.get(f"/v1/resource-definitions/{rd}/resources/{node}/volumes/0").json()[
        "device_path"]


def test_snapshot_restore_data(sim: Any, api: Api) -> None:
    api.rg("rg1")
    api.spawn("data1", size_kib=8 * 1024)
    dev = _vol_path(api, "data1")
    assert Path(dev).parent == sim.device_dir and _size(dev) == 8 * MIB
    _write(dev, MIB, b"original" * 512)
    assert api.post("/v1/resource-definitions/data1/snapshots", {"name": "s1"}).status_code == 201
    _write(dev, MIB, b"CHANGED!" * 512)
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "data2",
                                                                  "resource_group_name": "rg1"}})
    base = "/v1/resource-definitions/data1"
    assert api.post(base + "/snapshot-restore-volume-definition/s1",
                    {"to_resource": "data2"}).status_code == 200
    assert api.post(base + "/snapshot-restore-resource/s1",
                    {"to_resource": "data2"}).status_code == 200
    dev2 = _vol_path(api, "data2")
    assert dev2 != dev
    assert _read(dev2, MIB, 4096) == b"original" * 512
    assert _read(dev, MIB, 4096) == b"CHANGED!" * 512
    # every replica (and a diskless attachment) reports the same device
    api.post("/v1/resource-definitions/data2/resources/node-3/make-available", {})
    paths = {v["volumes"][0]["device_path"] for v in
             api.get("/v1/view/resources?resources=data2").json()}
    assert paths == {dev2}


def test_clone_copies_data_and_resize_grows(sim_factory: Any) -> None:
    from csi_linstor.sim.simulator import PoolSpec

    # LVM_THIN: LINSTOR cannot clone the default FILE_THIN pools (isCloneSupported)
    sim = sim_factory(pools=[PoolSpec("DfltStorPool", "LVM_THIN"), PoolSpec("sp1", "LVM_THIN")])
    api = Api(sim.url)
    api.rg("rg1")
    api.spawn("cl1", size_kib=4 * 1024)
    dev = sim.device_path("cl1")
    _write(dev, 0, b"clone-me" * 64)
    assert api.post("/v1/resource-definitions/cl1/clone", {"name": "cl2"}).status_code == 201
    assert _read(sim.device_path("cl2"), 0, 512) == b"clone-me" * 64
    r = api.put("/v1/resource-definitions/cl1/volume-definitions/0", {"size_kib": 16 * 1024})
    assert r.status_code == 200
    assert _size(dev) == 16 * MIB
    assert _read(dev, 0, 512) == b"clone-me" * 64


def test_delete_keeps_device_while_replica_exists(sim: Any, api: Api) -> None:
    api.rg("rg1")
    api.spawn("k1")
    dev = sim.device_path("k1")
    nodes = [x["node_name"] for x in api.get("/v1/resource-definitions/k1/resources").json()]
    _write(dev, 0, b"keep" * 128)
    assert api.delete(f"/v1/resource-definitions/k1/resources/{nodes[0]}").status_code == 200
    assert os.path.exists(dev) and _read(dev, 0, 512) == b"keep" * 128
    assert api.delete("/v1/resource-definitions/k1").status_code == 200
    assert not os.path.exists(dev)
    assert not leftover_loop_devices(sim.state_dir)


def test_stop_cleans_everything(sim_factory: Any) -> None:
    sim = sim_factory()
    api = Api(sim.url)
    api.rg("rg1")
    for i in range(3):
        api.spawn(f"cln{i}")
    api.post("/v1/resource-definitions/cln0/snapshots", {"name": "s"})
    assert len(leftover_loop_devices(sim.state_dir)) == 3
    assert len(list(sim.device_dir.iterdir())) == 3
    sim.stop()
    sim.stop()  # idempotent
    assert_clean(sim)
    out = subprocess.run(["losetup", "-J"], capture_output=True, text=True).stdout
    files = [d.get("back-file", "") for d in (json.loads(out)["loopdevices"] if out.strip()
                                               else [])]
    assert not [f for f in files if str(sim.state_dir) in f]


def test_fault_knobs_python_api(sim: Any, api: Api) -> None:
    sim.set_latency(0.3, route="controller/version")
    t = time.monotonic()
    api.get("/v1/controller/version")
    assert time.monotonic() - t >= 0.3
    t = time.monotonic()
    api.get("/v1/nodes")
    assert time.monotonic() - t < 0.3
    sim.set_latency(0, route="controller/version")
    sim.fail_next(1, route="^POST /v1/resource-definitions$")
    r = api.post("/v1/resource-definitions", {"resource_definition": {"name": "f1"}})
    assert r.status_code == 500
    e = r.json()[0]
    assert rc_is(e["ret_code"], C.FAIL_UNKNOWN_ERROR) and e["error_report_ids"]
    assert api.get("/v1/resource-definitions/f1").status_code == 404  # not applied
    sim.set_failure_rate(1.0, route="nodes")
    assert api.get("/v1/nodes").status_code == 500
    sim.reset_faults()
    assert api.get("/v1/nodes").status_code == 200
    sim.drop_next(1, route="resource-definitions")
    with pytest.raises(requests.ConnectionError):
        api.post("/v1/resource-definitions", {"resource_definition": {"name": "f2"}})
    assert api.get("/v1/resource-definitions/f2").status_code == 200  # applied
    sim.reset_counts()
    api.get("/v1/resource-definitions/f2")
    api.get("/v1/resource-definitions/f2")
    assert sim.request_counts() == {"GET /v1/resource-definitions/{rd}": 2}


def test_admin_http_api(sim: Any, api: Api) -> None:
    api.rg("rg1")
    api.spawn("ad1")
    node = api.get("/v1/resource-definitions/ad1/resources").json()[0]["node_name"]
    s = requests.Session()
    u = sim.url
    assert s.post(u + "/sim/stats/reset").status_code == 200
    api.get("/v1/nodes")
    stats = s.get(u + "/sim/stats").json()
    sent = stats.pop("reply_bytes")
    assert stats == {"counts": {"GET /v1/nodes": 1}, "total": 1, "auth_failures": 0,
                     "tls_failures": 0, "reply_bytes_total": sent["GET /v1/nodes"]}
    assert sent["GET /v1/nodes"] == len(api.get("/v1/nodes").content)  # what the client got
    s.post(u + "/sim/bearer-tokens", json={"tokens": ["t1"]})
    assert api.get("/v1/nodes").status_code == 401
    assert s.get(u + "/v1/nodes", headers={"Authorization": "Bearer t1"}).status_code == 200
    assert s.get(u + "/sim/stats").json()["auth_failures"] == 1
    s.post(u + "/sim/bearer-tokens", json={"tokens": []})
    assert api.get("/v1/nodes").status_code == 200
    s.post(u + f"/sim/resources/ad1/{node}", json={"in_use": True, "disk_state": "Outdated",
                                                   "quorum": False, "suspended": True})
    st = s.get(u + f"/sim/drbd-status/ad1?node={node}").json()[0]
    assert st["role"] == "Primary" and st["suspended"] is True
    assert st["devices"][0]["disk-state"] == "Outdated" and st["devices"][0]["quorum"] is False
    s.post(u + "/sim/nodes/node-2/online", json={"online": False})
    assert api.get("/v1/nodes/node-2").json()["connection_status"] == "OFFLINE"
    s.post(u + "/sim/failure-rate", json={"rate": 1.0, "route": "view/resources"})
    assert api.get("/v1/view/resources").status_code == 500
    s.post(u + "/sim/latency", json={"seconds": 0.2})
    t = time.monotonic()
    api.get("/v1/nodes")
    assert time.monotonic() - t >= 0.2
    assert s.post(u + "/sim/reset-faults").status_code == 200
    assert api.get("/v1/view/resources").status_code == 200
    assert api.get("/v1/nodes/node-2").json()["connection_status"] == "ONLINE"
    assert s.get(u + "/sim/state").json()["resource_definitions"] == ["ad1"]
    assert s.get(u + "/sim/nope").status_code == 404


def test_drbd_status_and_drbdsetup(sim: Any, api: Api, capsys: Any,
                                   monkeypatch: Any) -> None:
    api.rg("rg1")
    api.spawn("ds1", size_kib=2048)
    api.post("/v1/resource-definitions/ds1/resources/node-3/make-available", {})
    sim.set_in_use("ds1", "node-3", True)
    assert drbdsetup.main(["--sim-url", sim.url, "--node", "node-3", "status", "--json",
                           "ds1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1
    r = out[0]
    assert r["name"] == "ds1" and r["role"] == "Primary" and r["suspended"] is False
    assert r["devices"][0]["minor"] == 1000 and r["devices"][0]["client"] is True
    assert r["devices"][0]["disk-state"] == "Diskless" and r["devices"][0]["size"] == 2048
    assert len(r["connections"]) == 2
    c = r["connections"][0]
    assert c["connection-state"] == "Connected" and c["peer-role"] == "Secondary"
    assert c["peer_devices"][0]["peer-disk-state"] == "UpToDate"
    monkeypatch.setenv("CSI_LINSTOR_SIM_URL", sim.url)
    monkeypatch.setenv("CSI_LINSTOR_SIM_NODE", "node-1")
    sim.set_node_online("node-3", False)
    assert drbdsetup.main(["status", "--json", "ds1"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    peer3 = next(c for c in out["connections"] if c["name"] == "node-3")
    assert peer3["connection-state"] == "Connecting"
    assert drbdsetup.main(["status", "--json", "nope"]) == 10
    assert "nope: No such resource" in capsys.readouterr().err
    assert requests.get(sim.url + "/sim/drbd-status/nope?node=node-1").json() == []


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; from csi_linstor.sim.cli import main; "
         "sys.exit(main(sys.argv[1:]))", "--listen", "127.0.0.1:0", "--nodes", "2",
         "--device-dir", str(tmp_path / "dev"), "--state-dir", str(tmp_path / "st"),
         "--rest-api-version", "1.26.0", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = p.stdout.readline().strip() if p.stdout else ""
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/v1/controller/version").json()["rest_api_version"] \
            == "1.26.0"
        assert [n["name"] for n in requests.get(url + "/v1/nodes").json()] == ["node-1",
                                                                              "node-2"]
        requests.post(url + "/v1/resource-groups", json={"name": "g1",
                                                        "select_filter": {"place_count": 2}})
        r = requests.post(url + "/v1/resource-groups/g1/spawn",
                          json={"resource_definition_name": "x1", "volume_sizes": [1024]})
        assert r.status_code == 201
        assert leftover_loop_devices(tmp_path / "st")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not leftover_loop_devices(tmp_path / "st")
    assert not list((tmp_path / "dev").iterdir())


def test_cli_serves_https_with_client_certificates_tokens_and_a_redirect(tmp_path: Path) -> None:
    from tests.pki import make_pki

    pki = make_pki(tmp_path)
    (tmp_path / "token").write_text('{"token": "sim-token"}')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen(
        [sys.executable, "-m", "csi_linstor.cli", "sim", "--listen", "127.0.0.1:0",
         "--device-dir", str(tmp_path / "dev"), "--state-dir", str(tmp_path / "st"),
         "--tls-cert", str(pki["server.crt"]), "--tls-key", str(pki["server.key"]),
         "--tls-client-ca", str(pki["ca.crt"]), "--bearer-token-file", str(tmp_path / "token"),
         "--http-redirect-listen", "127.0.0.1:0", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = p.stdout.readline().strip() if p.stdout else ""
        redirect = p.stdout.readline().strip() if p.stdout else ""
        assert url.startswith("https://127.0.0.1:") and redirect.startswith("http://127.0.0.1:")
        cert = (str(pki["client.crt"]), str(pki["client.key"]))
        ca = str(pki["ca.crt"])
        pools = requests.get(url + "/v1/view/storage-pools", cert=cert, verify=ca,
                             headers={"Authorization": "Bearer sim-token"}, timeout=5)
        assert pools.status_code == 200
        assert {x["storage_pool_name"] for x in pools.json()} == {"DfltStorPool", "sp1", "DfltDisklessStorPool"}
        denied = requests.get(url + "/v1/nodes", cert=cert, verify=ca, timeout=5)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == 'Bearer realm="linstor-controller"'
        with pytest.raises(requests.exceptions.SSLError):  # no client certificate
            requests.get(url + "/v1/nodes", verify=ca, timeout=5)
        moved = requests.get(redirect + "/v1/nodes", allow_redirects=False, timeout=5)
        assert moved.status_code == 302 and moved.headers["Location"] == url + "/v1/nodes"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_cli_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-m", "csi_linstor.cli", "sim", "--listen",
                        "127.0.0.1:0", "--tls-cert", str(tmp_path / "x.crt")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "--tls-cert and --tls-key go together" in r.stderr


def test_storage_only_replicas_have_storage_of_their_own(sim: Any, api: Api) -> None:
    """§9 C6: without a DRBD layer the device is the storage device, nothing replicates, and
    make-available on another node places a diskful resource with new, empty storage."""
    api.rg("st", place_count=1, layer_stack=["STORAGE"])
    assert api.spawn("st1", rg="st").status_code == 201
    rsc = api.get("/v1/view/resources?resources=st1").json()
    assert len(rsc) == 1 and rsc[0]["layer_object"]["type"] == "STORAGE"
    assert rsc[0]["state"] == {} and "state" not in rsc[0]["volumes"][0]
    first, dev = rsc[0]["node_name"], rsc[0]["volumes"][0]["device_path"]
    _write(dev, 0, b"only-here" * 64)
    other = next(n for n in ("node-1", "node-2", "node-3") if n != first)
    r = api.post(f"/v1/resource-definitions/st1/resources/{other}/make-available", {})
    assert r.status_code == 200, r.text
    second = api.get(f"/v1/resource-definitions/st1/resources/{other}/volumes/0").json()
    assert "DISKLESS" not in api.get(
        f"/v1/resource-definitions/st1/resources/{other}").json().get("flags", [])
    assert second["device_path"] != dev
    assert _read(second["device_path"], 0, 576) == bytes(576), "new storage must start empty"
    assert _read(dev, 0, 576) == b"only-here" * 64
    # both grow; a STORAGE-only volume may also shrink (only DRBD refuses it)
    assert api.put("/v1/resource-definitions/st1/volume-definitions/0",
                   {"size_kib": 8192}).status_code == 200
    assert _size(dev) == _size(second["device_path"]) == 8 * MIB
    assert api.put("/v1/resource-definitions/st1/volume-definitions/0",
                   {"size_kib": 6144}).status_code == 200
    assert _size(dev) == 6 * MIB
    assert api.delete("/v1/resource-definitions/st1").status_code == 200
    assert not os.path.exists(dev) and not os.path.exists(second["device_path"])
    assert not leftover_loop_devices(sim.state_dir)


def test_drbd_volumes_are_at_most_one_pib(sim: Any, api: Api) -> None:
    """VolumeDefinition.checkVolumeSize: once DRBD is deployed, 2^40 KiB at most."""
    api.rg("big", place_count=1)
    assert api.spawn("big1", rg="big").status_code == 201
    r = api.put("/v1/resource-definitions/big1/volume-definitions/0", {"size_kib": (1 << 40) + 1})
    assert r.status_code == 500 and rc_is(r.json()[0]["ret_code"], C.FAIL_INVLD_VLM_SIZE), r.text
    assert "out of range" in r.json()[0]["message"]


def test_empty_property_values_come_back(sim: Any, api: Api) -> None:
    """§9 C10: NON_EMPTY drops empty fields, not empty values inside a props map."""
    api.rg("pe", place_count=1)
    r = api.spawn("pe1", rg="pe", resource_definition_props={"Aux/empty": "", "Aux/x": "1"})
    assert r.status_code == 201, r.text
    props = api.get("/v1/resource-definitions/pe1").json()["props"]
    assert props["Aux/empty"] == "" and props["Aux/x"] == "1"


def _blkid_type(dev: str) -> str:
    out = subprocess.run(["blkid", "-o", "export", dev], capture_output=True, text=True,
                         check=False).stdout
    return next((line[5:] for line in out.splitlines() if line.startswith("TYPE=")), "")


def test_satellite_formats_new_volumes_when_the_group_says_so(sim: Any, api: Api) -> None:
    """§9 C2 (MkfsUtils.makeFileSystemOnMarked): FileSystem/Type on the RG makes the satellite
    format a new volume (ext4 with -E nodiscard, xfs with -K, plus FileSystem/MkfsParams); a
    restored volume keeps its snapshot's data and is not formatted again."""
    r = api.post("/v1/resource-groups", {"name": "fsrg", "select_filter": {"place_count": 1},
                                         "props": {"FileSystem/Type": "ext4",
                                                   "FileSystem/MkfsParams": "-L satmkfs"}})
    assert r.status_code == 201, r.text
    assert api.spawn("fs1", rg="fsrg", size_kib=320 * 1024).status_code == 201
    dev = _vol_path(api, "fs1")
    assert _blkid_type(dev) == "ext4"
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", dev], capture_output=True,
                           text=True, check=False).stdout.strip()
    assert label == "satmkfs"
    # an existing signature is never overwritten: wipe it, put xfs there, snapshot, restore
    subprocess.run(["mkfs.xfs", "-q", "-f", dev], check=True, capture_output=True)
    assert api.post("/v1/resource-definitions/fs1/snapshots", {"name": "s1"}).status_code == 201
    api.post("/v1/resource-definitions", {"resource_definition": {"name": "fs2",
                                                                  "resource_group_name": "fsrg"}})
    base = "/v1/resource-definitions/fs1"
    assert api.post(base + "/snapshot-restore-volume-definition/s1",
                    {"to_resource": "fs2"}).status_code == 200
    assert api.post(base + "/snapshot-restore-resource/s1",
                    {"to_resource": "fs2"}).status_code == 200
    assert _blkid_type(_vol_path(api, "fs2")) == "xfs"


def test_snapshot_props_restore_props_and_the_generated_remote(sim: Any, api: Api) -> None:
    """As LINSTOR 1.33.3: a new snapshot's props come from snapshot_definition_props only
    (rest/v1/Snapshots.createSnapshot; "props" is ignored); a restore copies the snapshot's copy
    of the RD props onto the target (ctrlPropsHelper.copy); the first restore registers the
    LINSTOR remote local-remote-generated-by-linstor (CopySnapsHelper)."""
    api.rg("sp", place_count=1)
    assert api.spawn("sp1", rg="sp", resource_definition_props={"Aux/owner": "sp1"}).ok
    assert api.get("/v1/remotes").json() == {}
    r = api.post("/v1/resource-definitions/sp1/snapshots", {
        "name": "s1", "props": {"Aux/ignored": "1"},
        "snapshot_definition_props": {"Aux/kept": "1"}})
    assert r.status_code == 201, r.text
    sd = api.get("/v1/resource-definitions/sp1/snapshots/s1").json()["snapshot_definition_props"]
    assert sd.get("Aux/kept") == "1" and "Aux/ignored" not in sd
    api.post("/v1/resource-definitions", {"resource_definition": {
        "name": "sp2", "resource_group_name": "sp", "props": {"Aux/owner": "sp2",
                                                              "Aux/mine": "x"}}})
    base = "/v1/resource-definitions/sp1"
    assert api.post(base + "/snapshot-restore-volume-definition/s1",
                    {"to_resource": "sp2"}).status_code == 200
    assert api.post(base + "/snapshot-restore-resource/s1",
                    {"to_resource": "sp2"}).status_code == 200
    props = api.get("/v1/resource-definitions/sp2").json()["props"]
    assert props["Aux/owner"] == "sp1" and props["Aux/mine"] == "x"
    remotes = api.get("/v1/remotes").json()["linstor_remotes"]
    assert [x["remote_name"] for x in remotes] == ["local-remote-generated-by-linstor"]
    r = api.delete("/v1/remotes?remote_name=local-remote-generated-by-linstor")
    assert r.status_code == 200 and api.get("/v1/remotes").json() == {}

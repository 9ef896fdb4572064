"""Id rules; uuid5 vectors computed with Go (encoding/json + pborman-style NewSHA1)."""

import pytest

from csi_linstor.mapping import ids


@pytest.mark.parametrize("name,expected", [
    ("pvc-0a1b2c3d-1111-2222-3333-444455556666", "pvc-0a1b2c3d-1111-2222-3333-444455556666"),
    ("my volume", "vol-afa4c232-b162-521b-97be-cc2f54271640"),
    ("1234", "vol-c0be62ea-1727-5ab5-8b6d-39d2fca0ad44"),
    ("all", "vol-a30fe0c8-a873-5d50-97c3-8ec1c535d8e2"),
    ("a", "vol-016ddc16-016b-591b-9fe3-1856d2db9f48"),
    ("ünïcode", "vol-6d6a05c3-2ce9-5c15-84b8-59c2f4c29737"),
    ("sanity-controller-vol-with-a-name-that-is-longer-than-forty-eight-chars",
     "vol-0cd764b7-b638-5dd5-8a1f-4523c6190f0a"),
])
def test_volume_id_vectors(name, expected):
    assert ids.volume_id(name) == expected


def test_go_uuid5_of_pvc_name():
    assert ids.go_uuid5(ids.DRIVER_NAMESPACE, b"pvc-0a1b2c3d-1111-2222-3333-444455556666") == \
        "c79cbd8d-286c-5aaf-9b06-8f051f6af38d"


@pytest.mark.parametrize("name,valid", [
    ("ab", True), ("a", False), ("_a", True), ("a" * 48, True), ("a" * 49, False),
    ("1abc", False), ("__", False), ("all", False), ("ALL", False), ("a-b_c9", True),
    ("a.b", False), ("a/b", False), ("", False), ("_1", False),
])
def test_name_rule(name, valid):
    assert ids.is_valid_name(name) is valid


def test_use_pvc_name():
    assert ids.volume_id("pvc-1x", use_pvc_name=True, pvc_name="data", pvc_namespace="db") == "db-data"
    # invalid combination falls back to the request name
    assert ids.volume_id("pvc-1x", use_pvc_name=True, pvc_name="d" * 60, pvc_namespace="db") == "pvc-1x"
    assert ids.volume_id("pvc-1x", use_pvc_name=False, pvc_name="data", pvc_namespace="db") == "pvc-1x"
    assert ids.volume_id("pvc-1x", use_pvc_name=True) == "pvc-1x"


def test_snapshot_name():
    assert ids.snapshot_name("snapshot-abc") == "snapshot-abc"
    assert ids.snapshot_name("my snap") == "snapshot-" + ids.go_uuid5(ids.DRIVER_NAMESPACE, b"my snap")


def test_snapshot_id_round_trip():
    text = ids.snapshot_id("pvc-x", "snapshot-y")
    assert text == "InCluster:///pvc-x/snapshot-y"
    parsed = ids.parse_snapshot_id(text)
    assert parsed == ids.SnapshotId("InCluster", "", "pvc-x", "snapshot-y")
    assert str(parsed) == text
    assert ids.parse_snapshot_id("S3://remote-1/pvc-x/snap-1").type == "S3"


@pytest.mark.parametrize("text", ["", "snapshot-y", "pvc-x/snap", "Foo:///a1/b1", "InCluster:///a1",
                                  "InCluster:///a1/b1/c1", "InCluster:///a1/", "InCluster://"])
def test_snapshot_id_malformed(text):
    assert ids.parse_snapshot_id(text) is None


def test_group_ids():
    gid = ids.group_snapshot_id("groupsnap-1")
    assert gid == "InCluster:///group/groupsnap-1"
    assert ids.parse_group_snapshot_id(gid) == "groupsnap-1"
    assert ids.parse_group_snapshot_id("InCluster:///pvc/x") is None
    assert ids.parse_group_snapshot_id("garbage") is None


def test_linstor_name_rules_for_nodes_pools_and_reserved_resource_names():
    from csi_linstor.mapping import ids

    # NodeName → Checks.hostNameCheck (RFC 1123)
    for good in ("node-1", "n1", "node-1.example.com", "a" * 63 + ".b"):
        assert ids.is_valid_node_name(good), good
    for bad in ("", "n", "../pvc-big", "-node", "node-", ".node", "node_1", "a/b", "a?b",
                "a" * 64, "a" * 256):
        assert not ids.is_valid_node_name(bad), bad
    # StorPoolName: like resource names, 3-48 characters
    assert ids.is_valid_pool_name("DfltStorPool") and ids.is_valid_pool_name("sp1")
    for bad in ("sp", "1234", "../x", "-pool", "a" * 49):
        assert not ids.is_valid_pool_name(bad), bad
    # ResourceName reserves "proxy" (and "all"): such a request name gets a generated id
    assert ids.volume_id("proxy").startswith("vol-") and ids.volume_id("all").startswith("vol-")

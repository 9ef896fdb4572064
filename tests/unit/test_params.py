"""StorageClass / VolumeSnapshotClass / mutable parameters: one table-driven case per key.

Resource-group name vectors were computed with Go's encoding/json over golinstor's
ResourceGroupModify field layout and pborman/uuid's NewSHA1 (see ids.py).
"""

import pytest

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping.mutable_params import parse_mutable_parameters
from csi_linstor.mapping.params import parse_volume_parameters
from csi_linstor.mapping.remote_access import (
    ANYWHERE,
    LOCAL_ONLY,
    RemoteAccessPolicy,
    parse_remote_access,
)
from csi_linstor.mapping.resource_groups import resource_group_json
from csi_linstor.mapping.snapshot_params import parse_snapshot_parameters

P = parse_volume_parameters

# (parameters, attribute, expected value)
VALID = [
    ({"placementCount": "3"}, "placement_count", 3),
    ({"linstor.csi.linbit.com/placementCount": "2"}, "placement_count", 2),
    ({"AUTOPLACE": "2"}, "placement_count", 2),
    ({"autoPlace": ""}, "placement_count", 1),
    ({"storagePool": "sp1"}, "storage_pools", ("sp1",)),
    ({"storagePool": "sp1 sp2"}, "storage_pools", ("sp1", "sp2")),
    ({"storagePool": "sp1,sp2"}, "storage_pools", ("sp1", "sp2")),
    ({"disklessStoragePool": "dless"}, "diskless_storage_pool", "dless"),
    ({"layerList": "drbd luks storage"}, "layer_list", ("DRBD", "LUKS", "STORAGE")),
    ({"layerlist": "Storage"}, "layer_list", ("STORAGE",)),
    ({"replicasOnSame": "zone"}, "replicas_on_same", ("Aux/zone",)),
    ({"replicasOnSame": "Aux/rack zone"}, "replicas_on_same", ("Aux/rack", "Aux/zone")),
    ({"replicasOnDifferent": "rack"}, "replicas_on_different", ("Aux/rack",)),
    ({"xReplicasOnDifferent": "zone: 2"}, "x_replicas_on_different", (("Aux/zone", 2),)),
    ({"doNotPlaceWithRegex": "^db-.*"}, "do_not_place_with_regex", "^db-.*"),
    ({"disklessOnRemaining": "true"}, "diskless_on_remaining", True),
    ({"nodeList": "node-1 node-2"}, "node_list", ("node-1", "node-2")),
    ({"clientList": "node-3"}, "client_list", ("node-3",)),
    ({"placementPolicy": "autoplace"}, "placement_policy", "AutoPlace"),
    ({"placementPolicy": "FollowTopology"}, "placement_policy", "FollowTopology"),
    ({"allowRemoteVolumeAccess": "false"}, "remote_access", LOCAL_ONLY),
    ({"allowRemoteVolumeAccess": "true"}, "remote_access", ANYWHERE),
    ({"allowRemoteVolumeAccess": "- fromSame: [topology.kubernetes.io/zone]"}, "remote_access",
     RemoteAccessPolicy((("topology.kubernetes.io/zone",),))),
    ({"encryption": "true", "layerList": "drbd luks storage"}, "encryption", True),
    ({"encryption": "true"}, "layer_list", ("DRBD", "LUKS", "STORAGE")),
    ({"encryption": "True", "layerList": "storage"}, "layer_list", ("LUKS", "STORAGE")),
    ({"encryption": "false"}, "layer_list", ("DRBD", "STORAGE")),
    ({"qos.linbit.com/rbps": "40Mi", "qos.linbit.com/wiops": "1k"}, "qos",
     (("qos.linbit.com/rbps", "41943040"), ("qos.linbit.com/wiops", "1000"))),
    ({"qos.linbit.com/wbps": "0"}, "qos", ()),
    ({"fsOpts": "-b 4096"}, "fs_opts", "-b 4096"),
    ({"mountOpts": "noatime,discard"}, "mount_opts", "noatime,discard"),
    ({"postMountXfsOpts": "extsize 2m"}, "post_mount_xfs_opts", "extsize 2m"),
    ({"resourceGroup": "my-rg"}, "resource_group", "my-rg"),
    ({"usePvcName": "true"}, "use_pvc_name", True),
    ({"overProvision": "1.5"}, "over_provision", 1.5),
    ({"sizeKiB": "4096"}, "placement_count", 1),  # accepted and ignored (warning)
    ({"nfsSquash": "root_squash"}, "placement_count", 1),  # RWX keys: ignored
    ({"property.linstor.csi.linbit.com/DrbdOptions/Net/protocol": "C"}, "properties",
     (("DrbdOptions/Net/protocol", "C"),)),
    ({"DrbdOptions/auto-quorum": "suspend-io"}, "properties",
     (("DrbdOptions/auto-quorum", "suspend-io"),)),
    ({"csi.storage.k8s.io/fstype": "xfs", "qos.linbit.com/rbps": "40Mi"}, "placement_count", 1),
    ({"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"},
     "pvc_name", "data"),
]


@pytest.mark.parametrize("params,attr,expected", VALID, ids=[str(v[0]) for v in VALID])
def test_valid(params, attr, expected):
    assert getattr(P(params), attr) == expected


# (parameters, the key the error must name)
INVALID = [
    ({"placementCount": "three"}, "placementCount"),
    ({"placementCount": "-1"}, "placementCount"),
    ({"placementCount": "33"}, "placementCount"),
    ({"placementCount": "2", "autoPlace": "2"}, "autoPlace"),
    ({"storagePool": " "}, "storagePool"),
    ({"disklessStoragePool": ""}, "disklessStoragePool"),
    ({"layerList": "drbd foo storage"}, "layerList"),
    ({"xReplicasOnDifferent": "[1, 2]"}, "xReplicasOnDifferent"),
    ({"xReplicasOnDifferent": "zone: many"}, "xReplicasOnDifferent"),
    ({"doNotPlaceWithRegex": "(("}, "doNotPlaceWithRegex"),
    ({"disklessOnRemaining": "yes please"}, "disklessOnRemaining"),
    ({"nodeList": "a1 b1 c1", "placementCount": "2"}, "nodeList"),
    ({"nodeList": "a1", "clientList": "a1"}, "nodeList"),
    ({"placementPolicy": "Random"}, "placementPolicy"),
    ({"placementPolicy": "Manual"}, "placementPolicy"),
    ({"placementPolicy": "Balanced"}, "placementPolicy"),
    ({"allowRemoteVolumeAccess": "maybe: [x"}, "allowRemoteVolumeAccess"),
    ({"allowRemoteVolumeAccess": "- fromSame: zone"}, "allowRemoteVolumeAccess"),
    ({"allowRemoteVolumeAccess": "true", "layerList": "storage"}, "allowRemoteVolumeAccess"),
    ({"encryption": "sure"}, "encryption"),
    ({"qos.linbit.com/rbps": "fast"}, "qos.linbit.com/rbps"),
    ({"qos.linbit.com/wiops": "-5"}, "qos.linbit.com/wiops"),
    ({"qos.linbit.com/riops": "10m"}, "qos.linbit.com/riops"),
    ({"qos.linbit.com/iops": "100"}, "qos.linbit.com/iops"),
    ({"usePvcName": "1x"}, "usePvcName"),
    ({"overProvision": "lots"}, "overProvision"),
    ({"overProvision": "-1"}, "overProvision"),
    ({"linstor.csi.linbit.com/bogus": "1"}, "bogus"),
    ({"bogusKey": "1"}, "bogusKey"),
    ({"property.linstor.csi.linbit.com/": "x"}, "property.linstor.csi.linbit.com/"),
    ({"clientList": "n1", "layerList": "storage"}, "clientList"),
]


@pytest.mark.parametrize("params,key", INVALID, ids=[str(v[0]) for v in INVALID])
def test_invalid(params, key):
    with pytest.raises(InvalidArgument) as err:
        P(params)
    assert key in err.value.message


def test_defaults_match_go():
    p = P({})
    assert p.placement_count == 1
    assert p.layer_list == ("DRBD", "STORAGE")
    assert p.remote_access == ANYWHERE
    assert p.diskless_storage_pool == "DfltDisklessStorPool"
    assert p.placement_policy == "AutoPlaceTopology"
    assert p.resource_group_generated


def test_remote_access_default_follows_layers_and_flag():
    assert P({"layerList": "storage"}).remote_access == LOCAL_ONLY
    assert P({}, default_remote_access="false").remote_access == LOCAL_ONLY


def test_manual_placement_overrides_autoplace_options():
    p = P({"nodeList": "node-1 node-2", "replicasOnSame": "zone"})
    assert p.manual and p.placement_count == 2 and p.replicas_on_same == ()


def test_property_namespace_prefix():
    p = P({"replicasOnSame": "zone"}, property_namespace="Aux/topology")
    assert p.replicas_on_same == ("Aux/topology/zone",)


# Expected values computed with Go (encoding/json + pborman-style uuid.NewSHA1).
RG_VECTORS = [
    ({}, '{"select_filter":{"place_count":1,"layer_stack":["DRBD","STORAGE"]}}',
     "sc-1647cc17-9cd0-53b8-9a1d-d09b1adf5f5f"),
    ({"placementCount": "3", "storagePool": "DfltStorPool"},
     '{"select_filter":{"place_count":3,"storage_pool_list":["DfltStorPool"],'
     '"layer_stack":["DRBD","STORAGE"]}}', "sc-f3b8ad02-5b21-575e-8b20-47416ca9a211"),
    ({"linstor.csi.linbit.com/placementCount": "2", "linstor.csi.linbit.com/storagePool": "sp1",
      "csi.storage.k8s.io/fstype": "ext4"},
     '{"select_filter":{"place_count":2,"storage_pool_list":["sp1"],'
     '"layer_stack":["DRBD","STORAGE"]}}', "sc-56250e3b-4696-5131-ad1c-fc443accbca7"),
    ({"placementCount": "1", "storagePool": "thin-pool", "layerList": "storage"},
     '{"select_filter":{"place_count":1,"storage_pool_list":["thin-pool"],"layer_stack":["STORAGE"]}}',
     "sc-f94a0b17-a381-5148-8bf8-dacc29ce2f6d"),
    ({"placementCount": "2", "storagePool": "sp-a sp-b", "doNotPlaceWithRegex": "^db-.*",
      "replicasOnSame": "topology/zone", "replicasOnDifferent": "rack",
      "xReplicasOnDifferent": "topology/zone: 2\na: 1", "layerList": "drbd luks storage",
      "encryption": "true", "disklessOnRemaining": "true",
      "DrbdOptions/auto-quorum": "suspend-io",
      "property.linstor.csi.linbit.com/DrbdOptions/Resource/on-no-quorum": "io-error",
      "property.linstor.csi.linbit.com/Aux/x": "<a&b>"},
     '{"override_props":{"Aux/x":"\\u003ca\\u0026b\\u003e","DrbdOptions/Resource/on-no-quorum":'
     '"io-error","DrbdOptions/auto-quorum":"suspend-io"},"select_filter":{"place_count":2,'
     '"storage_pool_list":["sp-a","sp-b"],"not_place_with_rsc_regex":"^db-.*","replicas_on_same":'
     '["Aux/topology/zone"],"replicas_on_different":["Aux/rack"],"x_replicas_on_different_map":'
     '{"Aux/a":1,"Aux/topology/zone":2},"layer_stack":["DRBD","LUKS","STORAGE"],'
     '"diskless_on_remaining":true}}', "sc-5b7e218c-c97f-50f1-b34b-df16a9760b69"),
]


@pytest.mark.parametrize("params,json_text,name", RG_VECTORS)
def test_resource_group_name_vectors(params, json_text, name):
    p = P(params)
    assert resource_group_json(p).decode() == json_text
    assert p.resource_group == name


def test_explicit_resource_group_is_kept():
    p = P({"resourceGroup": "rg-x", "placementCount": "2"})
    assert p.resource_group == "rg-x" and not p.resource_group_generated


def test_remote_access_render_round_trip():
    zone = parse_remote_access("k", "- fromSame: [zone]\n- fromSame: [rack, room]")
    assert parse_remote_access("k", zone.render()) == zone
    assert ANYWHERE.render() == "true" and LOCAL_ONLY.render() == "false"
    assert zone.accessible_segments({"zone": "a", "rack": "r1", "x": "y"}) == [{"zone": "a"}, {"rack": "r1"}]
    assert ANYWHERE.accessible_segments({"zone": "a"}) == [{}]
    assert LOCAL_ONLY.allows([{"linbit.com/hostname": "n1"}], {"linbit.com/hostname": "n1"})
    assert not LOCAL_ONLY.allows([{"linbit.com/hostname": "n1"}], {"linbit.com/hostname": "n2"})


MUTABLE = [
    ({"placementCount": "2"}, 2, ()),
    ({"linstor.csi.linbit.com/autoPlace": "3"}, 3, ()),
    ({"property.linstor.csi.linbit.com/DrbdOptions/Net/max-buffers": "8000"}, None,
     (("DrbdOptions/Net/max-buffers", "8000"),)),
]


@pytest.mark.parametrize("params,count,props", MUTABLE)
def test_mutable_valid(params, count, props):
    m = parse_mutable_parameters(params)
    assert m.placement_count == count and m.properties == props


@pytest.mark.parametrize("params,key", [
    ({"storagePool": "sp1"}, "storagePool"), ({"XXX_FakeKey": "XXX_FakeValue"}, "XXX_FakeKey"),
    ({"placementCount": "x"}, "placementCount"), ({"placementCount": "0"}, "placementCount"),
])
def test_mutable_invalid(params, key):
    with pytest.raises(InvalidArgument) as err:
        parse_mutable_parameters(params)
    assert key in err.value.message


@pytest.mark.parametrize("params", [
    {}, {"snap.linstor.csi.linbit.com/type": "InCluster"},
    {"snap.linstor.csi.linbit.com/TYPE": "incluster"},
    {"csi.storage.k8s.io/snapshotter-secret-name": "x", "other/key": "y"},
])
def test_snapshot_params_valid(params):
    assert parse_snapshot_parameters(params).type == "InCluster"


@pytest.mark.parametrize("kind", ["S3", "s3", "Linstor", "LINSTOR"])
def test_snapshot_params_remote_types(kind):
    p = parse_snapshot_parameters({"snap.linstor.csi.linbit.com/type": kind,
                                   "snap.linstor.csi.linbit.com/Remote-Name": "r1",
                                   "snap.linstor.csi.linbit.com/delete-local": "true"})
    assert p.type == {"s3": "S3", "linstor": "Linstor"}[kind.lower()]
    assert dict(p.settings)["remote-name"] == "r1"


@pytest.mark.parametrize("params,text", [
    ({"snap.linstor.csi.linbit.com/type": "tape"}, "type"),
    ({"snap.linstor.csi.linbit.com/bogus": "1"}, "bogus"),
    ({"snap.linstor.csi.linbit.com/delete-local": "true"}, "delete-local"),
])
def test_snapshot_params_invalid(params, text):
    with pytest.raises(InvalidArgument) as err:
        parse_snapshot_parameters(params)
    assert text in err.value.message


# Names LINBIT's driver gives these classes, computed with Go's encoding/json over golinstor's
# ResourceGroupModify/AutoSelectFilter structs and strings.Split(v, " ") lists (as it parses
# them), hashed with pborman/uuid NewSHA1. Placement still uses the parsed lists; only the
# name follows the Go driver's split.
GO_NAME_VECTORS = [
    ({"storagePool": "pool1,pool2"}, "sc-2f140239-58a3-5b7b-93d5-6d0d8f8f67c5", ("pool1", "pool2")),
    ({"storagePool": "pool1  pool2"}, "sc-46ee6e98-e665-53eb-8900-f0e90b2efd6c",
     ("pool1", "pool2")),
    ({"storagePool": "pool1 pool2 "}, "sc-d1acaf00-66d6-5232-9bf2-a12469e26ac6",
     ("pool1", "pool2")),
    ({"placementCount": "2", "storagePool": "pool1 pool2"},
     "sc-d9369cb3-c33f-5b49-8702-e3b3fe9d5a99", ("pool1", "pool2")),
    ({"replicasOnSame": ""}, "sc-6b4017ef-2439-5c8f-a33b-fc001e2fdd17", ()),
    ({"placementCount": "0"}, "sc-fe5ed704-5f78-5bdd-9936-fb409cce0135", ()),
    ({"placementCount": "0", "storagePool": "pool1"}, "sc-d6f8d755-6a22-589f-80d4-9b326f41fbfe",
     ("pool1",)),
    ({"placementCount": "3", "replicasOnSame": "zone,rack", "replicasOnDifferent": "zone, rack"},
     "sc-7f383717-2e24-5334-a757-2cab967ff17d", ()),
]


@pytest.mark.parametrize("params,name,pools", GO_NAME_VECTORS)
def test_generated_group_names_match_linbits_driver_for_odd_lists(params, name, pools):
    p = P(params)
    assert p.resource_group == name
    assert p.storage_pools == pools  # what placement uses

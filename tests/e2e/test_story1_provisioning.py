"""Story 1: dynamic provisioning puts the class's replica count on distinct nodes, in the named
storage pool; WaitForFirstConsumer places a replica on the pod's node; with
``allowRemoteVolumeAccess: "false"`` the PV's topology names only the replica nodes."""

from __future__ import annotations

import copy

import grpc
import pytest

from tests.e2e.cluster import HOSTNAME_KEY, Cluster, Story, manifest, rpc_error


def _claim(name: str, sc: dict, size: str = "1Gi") -> dict:
    return {"metadata": {"name": name},
            "spec": {"storageClassName": sc["metadata"]["name"], "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}}


def _param(sc: dict, key: str) -> str:
    params = sc["parameters"]
    for k in (key, f"linstor.csi.linbit.com/{key}"):
        if k in params:
            return str(params[k])
    raise KeyError(key)


def _local_only(sc: dict) -> dict:
    """The class with its commented-out ``allowRemoteVolumeAccess: "false"`` switched on."""
    variant = copy.deepcopy(sc)
    prefixed = any(k.startswith("linstor.csi.linbit.com/") for k in variant["parameters"])
    key = "allowRemoteVolumeAccess"
    variant["parameters"]["linstor.csi.linbit.com/" + key if prefixed else key] = "false"
    variant["metadata"]["name"] += "-local"
    return variant


@pytest.mark.parametrize("manifest_file", ["storageclass-r2.yaml", "storageclass-r3.yaml"])
def test_replicas_pool_and_topology(story: Story, cluster: Cluster, manifest_file: str) -> None:
    sc = manifest(manifest_file, "StorageClass")
    count = int(_param(sc, "placementCount"))
    pool = _param(sc, "storagePool")
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"

    for selected in ("node-2", "node-3"):
        for variant in (sc, _local_only(sc)):
            name = f"claim-{variant['metadata']['name']}-{selected}"
            vol = story.provisioner.create(variant, _claim(name, variant),
                                           selected_node=selected)
            assert vol.capacity_bytes >= 1024**3

            # `linstor resource list`: count diskful replicas on distinct nodes, in the pool
            diskful = cluster.diskful(vol.volume_id)
            assert len(diskful) == count, f"{vol.volume_id}: replicas {diskful}"
            for node, pools in diskful.items():
                assert pools and all(p == pool for p in pools), f"{node}: pools {pools}"

            nodes = vol.topology_nodes()
            if variant is sc:
                # remote access allowed (the default): every node can reach the volume; an
                # empty list is CSI's "accessible from everywhere"
                assert vol.accessible_topology == [] or nodes == set(cluster.node_names), \
                    vol.accessible_topology
            else:
                assert vol.volume_context, "the PV carries the volume context"
                assert all(set(seg) == {HOSTNAME_KEY} for seg in vol.accessible_topology), \
                    vol.accessible_topology
                assert nodes == set(diskful), \
                    f"local-only topology {vol.accessible_topology} != replicas {set(diskful)}"
                # the driver also refuses an attachment the topology would not allow
                for outside in set(cluster.node_names) - set(diskful):
                    err = rpc_error(story.attacher.attach, vol, outside)
                    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
                    assert outside in err.details() and "allowRemoteVolumeAccess" in \
                        err.details(), err.details()
                    story.tracker.attachments.discard((vol.volume_id, outside))
            story.provisioner.delete(vol)
            assert cluster.replicas(vol.volume_id) == []




@pytest.mark.parametrize("manifest_file", [
    # r3 on three nodes puts a replica everywhere: it passes whatever the placement does
    "storageclass-r2.yaml",
    "storageclass-r3.yaml",
])
def test_wait_for_first_consumer_places_a_replica_on_the_pods_node(
        story: Story, cluster: Cluster, manifest_file: str) -> None:
    sc = manifest(manifest_file, "StorageClass")
    count = int(_param(sc, "placementCount"))
    placed = {}
    for selected in cluster.node_names:
        vol = story.provisioner.create(sc, _claim(f"wffc-{selected}", sc), selected_node=selected)
        placed[selected] = sorted(cluster.diskful(vol.volume_id))
        story.provisioner.delete(vol)
    assert all(len(nodes) == count for nodes in placed.values()), placed
    missed = {sel: nodes for sel, nodes in placed.items() if sel not in nodes}
    assert not missed, f"the pod's node got no replica (pod node -> replicas): {missed}"

"""Story 8 (issue 17): ``storageclass-encrypted.yaml`` (``encryption: "true"``) gives volumes
with LINSTOR's LUKS layer under DRBD. Without LINSTOR's master passphrase the claim is refused
with what to do and nothing is left behind; once the administrator has created it, a pod writes
through the encrypted volume (staged on the node's device like any other), and a pod on another
node reads every byte back. The passphrase and the volume keys stay in LINSTOR: the driver never
sends or receives one.

Its own module: the master passphrase lives as long as the (module-scoped) simulator."""

from __future__ import annotations

import grpc

from tests.e2e.cluster import Cluster, Story, checksums, manifest, rpc_error, sync_fs, write_files


def _claim(name: str, sc: dict) -> dict:
    return {"metadata": {"name": name},
            "spec": {"storageClassName": sc["metadata"]["name"], "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def test_encrypted_volume_end_to_end(story: Story, cluster: Cluster) -> None:
    sc = manifest("storageclass-encrypted.yaml", "StorageClass")
    assert sc["parameters"]["encryption"] == "true"

    err = rpc_error(story.provisioner.create, sc, _claim("enc-early", sc), selected_node="node-1")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    assert "master passphrase" in err.details() and "create-passphrase" in err.details(), err
    assert cluster.sim_state()["resource_definitions"] == []  # nothing half-created

    # the administrator, once: `linstor encryption create-passphrase`
    r = cluster.http.post(cluster.url + "/v1/encryption/passphrase",
                          json={"new_passphrase": "correct horse battery staple"}, timeout=30)
    assert r.status_code == 200, r.text

    vol = story.provisioner.create(sc, _claim("enc-data", sc), selected_node="node-1")
    rg = cluster.get(f"/v1/resource-definitions/{vol.volume_id}")["resource_group_name"]
    assert cluster.get(f"/v1/resource-groups/{rg}")["select_filter"]["layer_stack"] == \
        ["DRBD", "LUKS", "STORAGE"]
    diskful = [res for res in cluster.get("/v1/view/resources", resources=[vol.volume_id])
               if "DISKLESS" not in res.get("flags", [])]  # not the quorum tiebreaker
    assert len(diskful) == int(sc["parameters"]["placementCount"])
    for res in diskful:
        layers = [x["type"] for x in res["volumes"][0]["layer_data_list"]]
        assert layers == ["DRBD", "LUKS", "STORAGE"], layers
        crypt = res["volumes"][0]["layer_data_list"][1]["data"]
        assert crypt["device_path"] == f"/dev/mapper/Linstor-Crypt-{vol.volume_id}_00000"

    pod, target = story.run_pod(vol, "node-1")
    sums = write_files(target, "secret", count=3)
    sync_fs(target)
    story.delete_pod(vol, "node-1", pod)
    pod2, target2 = story.run_pod(vol, "node-2")
    assert checksums(target2, sums) == sums
    story.delete_pod(vol, "node-2", pod2)
    story.provisioner.delete(vol)
    assert cluster.replicas(vol.volume_id) == []

"""Story 5: a StatefulSet (``statefulset.yaml``) gets one stable claim per replica; a pod
re-created after a failure, on another node, gets its own claim back with its data."""

from __future__ import annotations

import copy

from tests.e2e.cluster import Cluster, Story, checksums, manifest, threads, write_files


def test_statefulset_claims_are_stable_across_pod_restarts(story: Story,
                                                           cluster: Cluster) -> None:
    sts = manifest("statefulset.yaml", "StatefulSet")
    sc = manifest("storageclass-r3.yaml", "StorageClass")
    template = sts["spec"]["volumeClaimTemplates"][0]
    assert template["spec"]["storageClassName"] == sc["metadata"]["name"]
    replicas = sts["spec"]["replicas"]
    nodes = cluster.node_names

    claims = []
    for i in range(replicas):
        pvc = copy.deepcopy(template)
        pvc["metadata"]["name"] = f"{template['metadata']['name']}-{sts['metadata']['name']}-{i}"
        claims.append(pvc)
    assert [c["metadata"]["name"] for c in claims] == [f"data-mysql-{i}" for i in range(3)]

    # the scheduler spreads the pods; the provisioner creates the three claims concurrently
    home = {i: nodes[i % len(nodes)] for i in range(replicas)}
    vols = threads([
        (lambda i=i: story.provisioner.create(sc, claims[i], selected_node=home[i]))
        for i in range(replicas)])
    assert len({v.volume_id for v in vols}) == replicas
    for v in vols:
        assert len(cluster.diskful(v.volume_id)) == 3

    # each pod writes its own data, in parallel
    pods = threads([(lambda i=i: story.run_pod(vols[i], home[i])) for i in range(replicas)])
    data = [write_files(target, f"mysql-{i}", count=2) for i, (_, target) in enumerate(pods)]

    # the provisioner retried (e.g. after a timeout): same PV name -> the same volume
    again = story.provisioner.create(sc, claims[0], selected_node=home[0],
                                     pv_name=vols[0].pv_name)
    assert again.volume_id == vols[0].volume_id

    # pod mysql-i fails; its replacement lands on the next node and gets its own claim back
    for i, v in enumerate(vols):
        pod_uid, _ = pods[i]
        story.delete_pod(v, home[i], pod_uid)
    moved = {i: nodes[(i + 1) % len(nodes)] for i in range(replicas)}
    pods = threads([(lambda i=i: story.run_pod(vols[i], moved[i])) for i in range(replicas)])
    for i, (_, target) in enumerate(pods):
        assert checksums(target, data[i]) == data[i], f"mysql-{i} lost its data"
        others = [n for j, d in enumerate(data) if j != i for n in d]
        assert not any((target / n).exists() for n in others), f"mysql-{i} sees another's data"

    for i, v in enumerate(vols):
        story.delete_pod(v, moved[i], pods[i][0])
    threads([(lambda v=v: story.provisioner.delete(v)) for v in vols])

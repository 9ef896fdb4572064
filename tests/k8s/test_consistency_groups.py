"""Consistency groups through a real kube-apiserver and the chart (consistencyGroups=true, so the
controller runs with --enable-consistency-groups and reads claims' labels with the chart's RBAC):
claims labelled with one group are volume numbers of one LINSTOR resource, a
VolumeGroupSnapshot of them is one LINSTOR snapshot, and its member snapshots restore as a new
group, each claim with its member's number (issue 17 item 5)."""

from __future__ import annotations

from typing import Any

import pytest

from csi_linstor.mapping import ids
from tests.k8s.cluster import wait_for
from tests.k8s.conftest import Kube
from tests.k8s.test_stories import (
    GROUP,
    NS,
    _name,
    bound,
    delete_claim,
    group_snapshot,
    no_leftovers,
    pvc,
    storage_class,
    volume_id,
)

LABEL = "linstor.csi.linbit.com/consistency-group"


@pytest.fixture(scope="module", params=["sim", "real"])
def kube(request: pytest.FixtureRequest) -> Kube:
    return request.getfixturevalue(f"{request.param}_kube")


def _vgs(kube: Kube, name: str) -> dict[str, Any]:
    return kube.cluster.custom.get_namespaced_custom_object(*GROUP, NS, "volumegroupsnapshots",
                                                            name)


def test_labelled_claims_are_one_resource_and_one_group_snapshot(kube: Kube) -> None:
    before = kube.rds()
    sc = storage_class(kube, _name("sc-cg"), {"placementCount": "1"})
    group = _name("vm")
    claims = [pvc(kube, _name("disk"), sc, labels={LABEL: group}) for _ in range(2)]
    other = pvc(kube, _name("plain"), sc)  # no label: an ordinary volume
    handles = sorted(volume_id(kube, bound(kube, c)) for c in claims)
    rd = ids.consistency_group_rd(NS, group)
    assert handles == [f"{rd}/0", f"{rd}/1"], handles
    assert volume_id(kube, bound(kube, other)).startswith("pvc-")
    vds = kube.linstor(f"/v1/resource-definitions/{rd}/volume-definitions")
    names = {vd["volume_number"]: vd["props"]["Aux/csi-volume-name"] for vd in vds}
    pvs = {volume_id(kube, bound(kube, c)): bound(kube, c).spec.volume_name for c in claims}
    assert names == {0: pvs[f"{rd}/0"], 1: pvs[f"{rd}/1"]}
    assert len(kube.rds()) == len(before) + 2  # the group's resource and the plain volume

    _, grp = group_snapshot(kube, {LABEL: group})
    snaps = kube.linstor("/v1/view/snapshots", resources=rd)
    assert len(snaps) == 1, "one crash-consistent LINSTOR snapshot of the whole group"
    assert sorted(vd["volume_number"] for vd in snaps[0]["volume_definitions"]) == [0, 1]
    contents = kube.cluster.custom.list_cluster_custom_object(
        "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents")["items"]
    handles = sorted((c.get("status") or {}).get("snapshotHandle", "") for c in contents
                     if (c.get("spec") or {}).get("volumeSnapshotRef", {}).get("namespace") == NS
                     and rd in (c.get("status") or {}).get("snapshotHandle", ""))
    assert handles == [f"InCluster:///{rd}/{n}/{snaps[0]['name']}" for n in (0, 1)], handles

    # restore the VM's disks as a new group: each claim takes its member's volume number
    members = {(v.get("spec") or {}).get("source", {}).get("persistentVolumeClaimName"):
               v["metadata"]["name"] for v in kube.cluster.custom.list_namespaced_custom_object(
                   "snapshot.storage.k8s.io", "v1", NS, "volumesnapshots")["items"]
               if any(o.get("kind") == "VolumeGroupSnapshot" and o.get("name") == grp
                      for o in v["metadata"].get("ownerReferences") or [])}
    assert sorted(members) == sorted(claims), members
    restored_group = _name("vm-restored")
    restored = {}
    for c in claims:
        restored[c] = pvc(kube, _name("restored"), sc, labels={LABEL: restored_group},
                          source={"apiGroup": "snapshot.storage.k8s.io",
                                  "kind": "VolumeSnapshot", "name": members[c]})
    rrd = ids.consistency_group_rd(NS, restored_group)
    for c, r in restored.items():
        assert volume_id(kube, bound(kube, r, 90)) == \
            volume_id(kube, bound(kube, c)).replace(rd, rrd), "the member's own number"
    for r in restored.values():
        delete_claim(kube, r)
    wait_for(lambda: rrd not in kube.rds(), 90, "the restored group deleted with its claims")

    kube.cluster.custom.delete_namespaced_custom_object(*GROUP, NS, "volumegroupsnapshots", grp)
    wait_for(lambda: not kube.linstor("/v1/view/snapshots", resources=rd), 90,
             "the group's LINSTOR snapshot deleted with its VolumeGroupSnapshot")
    for c in [*claims, other]:
        delete_claim(kube, c)
    no_leftovers(kube, before)

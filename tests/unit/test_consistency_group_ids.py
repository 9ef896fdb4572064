"""Consistency-group ids (issue 17 item 5) and member attachment records."""

from __future__ import annotations

from typing import Any

import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.errors import ResourceExhausted
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping import ids
from csi_linstor.mapping.attachment_records import (
    PROP_ATTACHED,
    PROP_ATTACHED_MEMBER,
    PROP_MEMBER_RECORDS,
    Attachments,
    attached_volumes,
    published_nodes,
    record_key,
)


def test_group_resource_name_is_per_namespace_and_group_and_a_valid_linstor_name():
    rd = ids.consistency_group_rd("vms", "vm1")
    assert rd == ids.consistency_group_rd("vms", "vm1")  # deterministic: retries find it
    assert rd.startswith("cg-") and ids.is_valid_name(rd) and ids.may_be_consistency_group(rd)
    others = {ids.consistency_group_rd("other", "vm1"), ids.consistency_group_rd("vms", "vm2"),
              ids.consistency_group_rd("vms/vm1", "")}
    assert rd not in others and len(others) == 3
    # uuid5 over "<namespace>/<group>" with the driver's namespace, as vol-<uuid5> names
    assert rd == "cg-" + ids.go_uuid5(ids.DRIVER_NAMESPACE, b"vms/vm1")


@pytest.mark.parametrize("vid, want", [
    ("cg-x1/0", ("cg-x1", 0)), ("cg-x1/65535", ("cg-x1", 65535)), ("cg-x1/65536", None),
    ("cg-x1/", None), ("cg-x1/-1", None), ("cg-x1/1/2", None), ("cg-x1/٣", None),
    ("pvc-1", None)])
def test_member_ids(vid, want):
    assert ids.parse_member_volume_id(vid) == want
    assert ids.volume_rd(vid) == (want if want else (vid, None))


def test_member_volume_id_always_carries_the_number():
    assert ids.member_volume_id("cg-x1", 0) == "cg-x1/0"
    assert ids.parse_member_volume_id(ids.member_volume_id("cg-x1", 7)) == ("cg-x1", 7)


def _res(name: str, node: str = "n1", props: dict[str, str] | None = None,
         flags: tuple[str, ...] = ()) -> Resource:
    return Resource.from_json({"name": name, "node_name": node, "flags": list(flags),
                               "props": props or {}})


def test_member_records_are_one_per_volume_number():
    assert record_key("pvc-1") == ("pvc-1", PROP_ATTACHED)
    assert record_key("cg-x1/3") == ("cg-x1", f"{PROP_ATTACHED_MEMBER}3")
    shared = _res("cg-x1", props={f"{PROP_ATTACHED_MEMBER}0": "rw",
                                  f"{PROP_ATTACHED_MEMBER}1": "ro"})
    assert attached_volumes(shared) == {"CG-X1/0", "CG-X1/1"}
    assert published_nodes([shared], "cg-x1/1") == ["n1"]
    assert published_nodes([shared], "cg-x1/2") == []
    assert published_nodes([shared]) == []  # no record of a plain volume on it
    tiebreaker = _res("cg-x1", props={f"{PROP_ATTACHED_MEMBER}0": "rw"},
                      flags=("DRBD_DISKLESS", "TIE_BREAKER"))
    assert attached_volumes(tiebreaker) == set()


class _Client:
    def __init__(self, on_node: list[dict[str, Any]]) -> None:
        self.on_node = on_node
        self.puts: list[tuple[str, Any]] = []

    def get(self, path: str, *, deadline: Deadline, params: Any = None) -> Any:
        # LINSTOR's props filter: every listed key set on the resource (ReadOnlyProps.contains)
        keys = list((params or {}).get("props") or [])
        return [r for r in self.on_node if all(k in r["props"] for k in keys)]

    def put(self, path: str, *, deadline: Deadline, body: Any = None) -> Any:
        self.puts.append((path, body))
        return []


def test_the_attach_limit_counts_members_one_by_one():
    on_node = [{"name": "cg-x1", "node_name": "n1",
                "props": {f"{PROP_ATTACHED_MEMBER}0": "rw", PROP_MEMBER_RECORDS: "yes"}}]
    client = _Client(on_node)
    with Attachments(client, 2).attach("cg-x1/1", "n1", False, Deadline(10)):  # type: ignore[arg-type]
        pass
    assert client.puts == [("/v1/resource-definitions/cg-x1/resources/n1",
                            {"override_props": {f"{PROP_ATTACHED_MEMBER}1": "rw",
                                                PROP_MEMBER_RECORDS: "yes"}})]
    on_node[0]["props"][f"{PROP_ATTACHED_MEMBER}1"] = "rw"
    with pytest.raises(ResourceExhausted, match="2 volumes"):
        with Attachments(client, 2).attach("pvc-9", "n1", False, Deadline(10)):  # type: ignore[arg-type]
            pass
    # re-publishing a recorded member is idempotent and not counted again
    with Attachments(client, 2).attach("cg-x1/0", "n1", False, Deadline(10)):  # type: ignore[arg-type]
        pass


class _Api:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.paths: list[str] = []

    def get(self, path: str, deadline: Deadline) -> Any:
        self.paths.append(path)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_group_label_of_a_claim_and_what_a_failure_means():
    from csi_linstor.errors import FailedPrecondition, Unavailable
    from csi_linstor.kube.api import KubeConfigError, KubeError
    from csi_linstor.kube.consistency_groups import LABEL, GroupLabel

    api = _Api({"metadata": {"labels": {LABEL: "vm1", "app": "x"}}})
    assert GroupLabel(lambda: api)("ns 1", "disk/a", Deadline(5)) == "vm1"  # type: ignore[arg-type]
    assert api.paths == ["/api/v1/namespaces/ns%201/persistentvolumeclaims/disk%2Fa"]
    for answer in ({"metadata": {"labels": {"app": "x"}}}, {"metadata": {}},
                   {"metadata": {"labels": {LABEL: ""}}}):
        assert GroupLabel(lambda a=answer: _Api(a))("ns", "c", Deadline(5)) is None  # type: ignore[misc]
    for answer, error, words in ((None, FailedPrecondition, "does not exist"),
                                 (KubeConfigError("no config"), FailedPrecondition, "--kubeconfig"),
                                 (KubeError("403 forbidden", 403), Unavailable, "403")):
        with pytest.raises(error, match=words):
            GroupLabel(lambda a=answer: _Api(a))("ns", "c", Deadline(5))  # type: ignore[misc]

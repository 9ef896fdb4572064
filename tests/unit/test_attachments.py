"""Attachment records (csi_linstor/attachments.py) against a scripted LINSTOR client."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.errors import AlreadyExists, ResourceExhausted
from csi_linstor.linstor import consts
from csi_linstor.linstor.errors import ApiCallRc, LinstorError
from csi_linstor.linstor.models import Resource
from csi_linstor.mapping.attachment_records import (
    PROP_ATTACHED,
    PROP_MEMBER_RECORDS,
    Attachments,
    published_nodes,
)


def res(name: str, node: str = "n1", mode: str | None = "rw", flags: tuple[str, ...] = ()
        ) -> dict[str, Any]:
    return {"name": name, "node_name": node, "flags": list(flags),
            "props": {PROP_ATTACHED: mode} if mode else {}}


class Client:
    def __init__(self, on_node: list[dict[str, Any]]) -> None:
        self.on_node = on_node
        self.calls: list[tuple[str, str, Any]] = []

    def get(self, path: str, *, deadline: Deadline, params: Any = None) -> Any:
        self.calls.append(("GET", path, params))
        # LINSTOR's props filter: every listed key set on the resource (ReadOnlyProps.contains)
        keys = list((params or {}).get("props") or [])
        return [r for r in self.on_node if all(k in r["props"] for k in keys)]

    def put(self, path: str, *, deadline: Deadline, body: Any = None) -> Any:
        self.calls.append(("PUT", path, body))
        return []


def attach(client: Client, rd: str, readonly: bool = False, limit: int = 2) -> None:
    with Attachments(client, limit).attach(rd, "n1", readonly, Deadline(10)):  # type: ignore[arg-type]
        pass


def test_one_node_filtered_query_then_the_record():
    c = Client([res("vol-a")])
    attach(c, "vol-b")
    # only the node's recorded attachments: LINSTOR filters on the resource's own props (plain
    # records, then the shared resources of consistency-group members)
    assert c.calls[0] == ("GET", "/v1/view/resources", {"nodes": ["n1"], "props": [PROP_ATTACHED]})
    assert c.calls[1] == ("GET", "/v1/view/resources",
                          {"nodes": ["n1"], "props": [PROP_MEMBER_RECORDS]})
    assert c.calls[2] == ("PUT", "/v1/resource-definitions/vol-b/resources/n1",
                          {"override_props": {PROP_ATTACHED: "rw"}})
    assert len(c.calls) == 3


def test_limit_counts_records_not_replicas_nor_tiebreakers_nor_deleting():
    on_node = [res("vol-a"), res("vol-b", mode=None), res("vol-c", flags=("DRBD_DISKLESS", "TIE_BREAKER")),
               res("vol-d", flags=("DELETE",))]
    attach(Client(on_node), "vol-e")  # only "a" counts: 1 < 2
    with pytest.raises(ResourceExhausted) as err:
        attach(Client([res("vol-a"), res("vol-b")]), "vol-e")
    assert "n1" in err.value.message and "limit is 2" in err.value.message
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_idempotent_republish_at_the_limit_writes_nothing():
    c = Client([res("vol-a"), res("vol-b")])
    attach(c, "vol-a")
    assert [m for m, _, _ in c.calls] == ["GET", "GET"]


def test_incompatible_republish():
    with pytest.raises(AlreadyExists) as err:
        attach(Client([res("vol-a", mode="rw")]), "vol-a", readonly=True)
    assert "read-write" in err.value.message and "unpublish" in err.value.message


def test_failed_publish_leaves_no_record_and_frees_the_reservation():
    c = Client([res("vol-a")])
    att = Attachments(c, 2)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        with att.attach("vol-b", "n1", False, Deadline(10)):
            raise RuntimeError("make-available failed")
    assert [m for m, _, _ in c.calls] == ["GET", "GET"]
    assert att._reserved == {}
    with att.attach("vol-b", "n1", False, Deadline(10)):
        pass


def test_published_nodes():
    got = [Resource.from_json(r) for r in (
        res("vol-a", "n2"), res("vol-a", "n1", mode="ro"), res("vol-a", "n3", mode=None),
        res("vol-a", "n4", flags=("DRBD_DISKLESS", "TIE_BREAKER")))]
    assert published_nodes(got) == ["n1", "n2"]


def test_missing_master_key_is_a_precondition_not_a_missing_object():
    rc = ApiCallRc(ret_code=consts.FAIL_NOT_FOUND_CRYPT_KEY | consts.MASK_ERROR,
                   message="Unable to create encrypt key without having a master key")
    err = LinstorError("POST", "/v1/resource-groups/rg/spawn", 500, [rc])
    assert not err.is_not_found()
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "linstor encryption create-passphrase" in err.message

"""The snapshot-name index (mapping/snapshot_index.py) against a scripted key-value store: the
one-time pass, what a lookup answers before and after it, and a failed pass."""

from __future__ import annotations

import time
from typing import Any

import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.mapping import snapshot_index
from csi_linstor.mapping.snapshot_index import MARKER, SnapshotIndex, instance


class Client:
    """A KVS as LINSTOR keeps it (an instance goes with its last key) and a snapshot view."""

    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots
        self.kvs: dict[str, dict[str, str]] = {}
        self.view_fails = False
        self.views = 0

    def get(self, path: str, *, deadline: Deadline, params: Any = None) -> Any:
        name = path.rsplit("/", 1)[1]
        if name not in self.kvs:
            raise LinstorError("GET", path, 404, [])
        return [{"name": name, "props": dict(self.kvs[name])}]

    def get_each(self, path: str, each: Any, *, deadline: Deadline, params: Any = None) -> None:
        assert path == "/v1/view/snapshots" and params is None
        self.views += 1
        if self.view_fails:
            raise LinstorError("GET", path, 500, [])
        for s in self.snapshots:
            each(s)

    def put(self, path: str, *, deadline: Deadline, body: Any = None) -> list[Any]:
        store = self.kvs.setdefault(path.rsplit("/", 1)[1], {})
        for k in body.get("delete_props", []):
            store.pop(k, None)
        store.update(body.get("override_props", {}))
        if not store:
            del self.kvs[path.rsplit("/", 1)[1]]
        return []


def snap(rd: str, name: str, *flags: str, props: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "resource_name": rd, "flags": list(flags),
            "snapshot_definition_props": props or {}}


def wait_for(index: SnapshotIndex) -> None:
    end = time.monotonic() + 10
    while index.holders("any", Deadline(5)) is None:
        assert time.monotonic() < end
        time.sleep(0.01)


def test_existing_snapshots_are_claimed_once_then_lookups_use_the_index() -> None:
    c = Client([snap("pvc-a", "snapshot-1"), snap("pvc-b", "snapshot-1"),
                snap("pvc-c", "snapshot-2", "DELETE"),
                snap("pvc-d", "clone-for-pvc-e", props={"Aux/csi-clone-for": "pvc-e"})])
    index = SnapshotIndex(c)  # type: ignore[arg-type]
    assert index.holders("snapshot-1", Deadline(5)) is None  # not indexed yet: read them all
    wait_for(index)
    assert index.holders("snapshot-1", Deadline(5)) == ["PVC-A", "PVC-B"]
    assert index.holders("SNAPSHOT-1", Deadline(5)) == ["PVC-A", "PVC-B"]  # names ignore case
    assert index.holders("snapshot-2", Deadline(5)) == []  # being deleted: holds nothing
    assert index.holders("clone-for-pvc-e", Deadline(5)) == []  # no CSI snapshot
    assert c.views == 1
    index.release("snapshot-1", "pvc-a", Deadline(5))
    index.release("snapshot-1", "pvc-b", Deadline(5))
    assert instance("snapshot-1") not in c.kvs  # the instance went with its last key
    index.claim("snapshot-3", ["pvc-x"], Deadline(5))
    assert index.holders("snapshot-3", Deadline(5)) == ["PVC-X"]


def test_a_claim_for_another_name_with_the_same_hash_prefix_is_not_a_holder() -> None:
    c = Client([])
    index = SnapshotIndex(c)  # type: ignore[arg-type]
    wait_for(index)
    c.kvs[instance("snapshot-1")] = {"source/PVC-Z": "snapshot-other"}
    assert index.holders("snapshot-1", Deadline(5)) == []


def test_a_failed_pass_keeps_the_full_read_and_is_retried_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_index, "BACKFILL_RETRY_SECONDS", 0.3)
    c = Client([snap("pvc-a", "snapshot-1")])
    c.view_fails = True
    index = SnapshotIndex(c)  # type: ignore[arg-type]
    assert index.holders("snapshot-1", Deadline(5)) is None
    time.sleep(0.1)
    assert index.holders("snapshot-1", Deadline(5)) is None
    assert c.views == 1 and MARKER not in c.kvs  # not restarted before the retry time
    c.view_fails = False
    time.sleep(0.3)
    wait_for(index)
    assert index.holders("snapshot-1", Deadline(5)) == ["PVC-A"]
    assert c.views == 2

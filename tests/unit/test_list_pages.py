"""ListVolumes/ListSnapshots pages read by offset (mapping/listing.py, linstor/paged.py): a
listing that runs while objects are created and deleted returns every object that existed
through it exactly once, never one deleted before its page, and reads O(page) elements.

The fake serves a list the way LINSTOR does (sorted by upper-cased name, ``offset`` honoured only
with ``limit > 0``) and changes it between reads as a busy cluster would.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.errors import Aborted
from csi_linstor.linstor.models import ResourceDefinition
from csi_linstor.mapping import listing


class SortedList:
    """A LINSTOR list of resource definitions; ``items``: name -> its volume numbers (a
    consistency group has several, a plain volume [-1]); ``between`` runs before each read."""

    def __init__(self, items: dict[str, list[int]]) -> None:
        self.items = dict(items)
        self.reads: list[tuple[int, int]] = []
        self.served = 0
        self.between: Any = None

    def get(self, path: str, *, deadline: Deadline, params: Any = None) -> Any:
        if self.between is not None:
            self.between(self)
        params = params or {}
        names = sorted(self.items, key=str.upper)
        limit, offset = int(params.get("limit", 0)), int(params.get("offset", 0))
        if limit > 0:
            names = names[offset:offset + limit]
        self.reads.append((offset, limit))
        self.served += len(names)
        return [{"name": n, "props": {"n": str(len(self.items[n]))}} for n in names]


def _page(fake: SortedList, max_entries: int, token: str) -> tuple[list[str], str]:
    def items_of(rd: ResourceDefinition) -> list[tuple[int, str]]:
        vnrs = fake.items.get(rd.name, [])
        return [(v, rd.name if v < 0 else f"{rd.name}/{v}") for v in vnrs]

    return listing.page(fake, "/v1/resource-definitions", ResourceDefinition,  # type: ignore
                        lambda rd: (rd.name.upper(),), items_of, max_entries,
                        listing.parse_token(token, 1, lambda _id: None), Deadline(30))


def _listing(fake: SortedList, max_entries: int) -> list[str]:
    out, token, pages = [], "", 0
    while True:
        got, token = _page(fake, max_entries, token)
        out.extend(got)
        pages += 1
        assert pages < 10_000
        if not token:
            return out


def _all(items: dict[str, list[int]]) -> list[str]:
    return [n if v < 0 else f"{n}/{v}" for n in sorted(items, key=str.upper) for v in items[n]]


def test_pages_return_every_item_once_in_linstor_order() -> None:
    items = {f"pvc-{i:03d}": [-1] for i in range(50)}
    items |= {"cg-a": [0, 1, 2, 3, 4, 5, 6], "Zeta": [-1], "a_b": [-1], "empty": []}
    fake = SortedList(items)
    for size in (1, 3, 7, 10, 100, 0):
        assert _listing(fake, size) == _all(items), size


def test_a_page_reads_the_page_not_the_cluster() -> None:
    fake = SortedList({f"pvc-{i:05d}": [-1] for i in range(10_000)})
    first, token = _page(fake, 10, "")
    assert first == [f"pvc-{i:05d}" for i in range(10)]
    for _ in range(400):  # to offset 4,000
        fake.served = 0
        got, token = _page(fake, 10, token)
        assert len(got) == 10
        assert fake.served <= 12, fake.reads[-3:]  # the overlap, the page, one more
    assert got[-1] == "pvc-04009"


@pytest.mark.parametrize("seed", range(20))
def test_a_listing_under_churn_misses_nothing_that_stayed_and_repeats_nothing(seed: int) -> None:
    rnd = random.Random(seed)
    items = {f"pvc-{rnd.randrange(10**6):06d}": [-1] for _ in range(300)}
    items |= {f"cg-{i}": list(range(rnd.randrange(1, 6))) for i in range(10)}
    stayed = set(_all(items))
    deleted: set[str] = set()
    serial = [0]

    def churn(fake: SortedList) -> None:
        for _ in range(rnd.randrange(4)):
            if rnd.random() < 0.5 and fake.items:
                name = rnd.choice(sorted(fake.items))
                for item in _all({name: fake.items.pop(name)}):
                    stayed.discard(item)
                    deleted.add(item)
            else:
                serial[0] += 1
                fake.items[f"new-{rnd.randrange(10**6)}-{serial[0]}"] = [-1]

    fake = SortedList(items)
    fake.between = churn
    got = _listing(fake, rnd.choice([1, 5, 17, 50]))
    assert len(got) == len(set(got)), "an item came twice"
    assert stayed <= set(got), f"missed: {sorted(stayed - set(got))[:5]}"


def test_a_token_whose_item_was_deleted_still_continues() -> None:
    items = {f"pvc-{i:03d}": [-1] for i in range(30)}
    fake = SortedList(items)
    first, token = _page(fake, 10, "")
    for name in first[-3:]:  # the page's last items go, and so the offset of the token
        del fake.items[name]
    second, _ = _page(fake, 10, token)
    assert second == [f"pvc-{i:03d}" for i in range(10, 20)]


def test_earlier_after_tokens_and_invalid_tokens() -> None:
    fake = SortedList({f"pvc-{i:03d}": [-1] for i in range(30)})
    got, _ = listing.page(
        fake, "/v1/resource-definitions", ResourceDefinition,  # type: ignore[arg-type]
        lambda rd: (rd.name.upper(),), lambda rd: [(-1, rd.name)], 5,
        listing.parse_token("after:pvc-012", 1, lambda i: listing.Position(
            key=(i.upper(),), vnr=-1, offset=-1)), Deadline(30))
    assert got == [f"pvc-{i:03d}" for i in range(13, 18)]
    for bad in ("garbage", "p1:x:PVC/-1", "p1:3:PVC", "p1:3:PVC/a", "p1:3:a.b/-1",
                "p1:3:PVC/-2", "after:"):
        with pytest.raises(Aborted):
            listing.parse_token(bad, 1, lambda _id: None)

"""Reads sized to a page of CSI results, not to the cluster (issue 19).

``GET /v1/view/resources`` filters by resource definition (``resources=`` repeated); LINSTOR
takes the filter from the query string, whose length its HTTP server bounds (Grizzly: 8 KiB of
request line and headers), so a page's names go in chunks of ``CHUNK``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from csi_linstor.deadline import Deadline
from csi_linstor.linstor import queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import Model, Resource

CHUNK = 50  # resource names per request: 50 × ~52 bytes of query stays far below 8 KiB
MAX_CHUNKS = 4  # a bigger page costs more requests than one unfiltered read is worth


def resources_of(client: LinstorClient, rds: Sequence[str], total: int | None,
                 deadline: Deadline) -> list[Resource]:
    """The resources of the resource definitions ``rds`` (a page out of ``total`` volumes,
    None: unknown): filtered reads when the page is a small part of the cluster, else one
    unfiltered read."""
    if not rds:
        return []
    chunks = [list(rds[i:i + CHUNK]) for i in range(0, len(rds), CHUNK)]
    if (total is not None and len(rds) >= total) or len(chunks) > MAX_CHUNKS:
        return queries.view_resources(client, deadline)
    out: list[Resource] = []
    for chunk in chunks:
        out.extend(queries.view_resources(client, deadline, rds=chunk))
    return out


# -- pages of a sorted LINSTOR list -----------------------------------------------------------
#
# LINSTOR keeps resource definitions in a TreeMap keyed by ResourceName, and each definition's
# snapshots in a TreeMap keyed by SnapshotName; both names compare by their upper-cased value
# (GenericName.compareTo). ``GET /v1/resource-definitions`` and ``GET /v1/view/snapshots`` walk
# those maps in order, filter, and only then apply ``offset``/``limit`` (ResourceDefinitions.
# listResourceDefinitionsOneOrMany, View.listSnapshots: ``stream.skip(offset).limit(limit)``,
# honoured only when ``limit > 0``). So a listing can continue "after a name" by offset, as long
# as the offset is checked: elements created or deleted before it shift everything. Every read
# below therefore overlaps the previous position by one element and verifies it; a shifted list
# is searched again (bisection on one-element reads), and offset 0 is always a safe start.

T = TypeVar("T", bound=Model)
Key = tuple[str, ...]

MAX_SEARCHES = 8  # re-searches after a shift before starting again at offset 0


def each_after(client: LinstorClient, path: str, model: type[T], key: Callable[[T], Key],
               after: Key | None, hint: int, deadline: Deadline, batch: int,
               params: Mapping[str, Any] | None = None) -> Iterator[tuple[int, T]]:
    """The elements of the sorted list at ``path`` whose key is ``>= after`` (all when
    ``after`` is None), with their offsets, read ``batch`` at a time as the caller consumes
    them. ``hint``: the offset ``after`` was last seen at (-1: unknown)."""
    if batch < 2:
        raise ValueError("each_after reads at least two elements at a time (one overlaps)")
    base = dict(params or {})

    def read(offset: int, limit: int) -> list[T]:
        return model.list_from_json(client.get(
            path, deadline=deadline, params={**base, "offset": offset, "limit": limit}))

    def search(floor: Key, hi: int) -> int:
        """The largest offset whose element's key is <= ``floor`` (0 when none), searching
        below ``hi`` (-1: no bound known, found by doubling)."""
        if hi < 0:
            hi = 1
            while True:
                probe = read(hi, 1)
                if not probe or key(probe[0]) > floor:
                    break
                hi *= 2
        lo = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe = read(mid, 1)
            if probe and key(probe[0]) <= floor:
                lo = mid
            else:
                hi = mid
        return lo

    if after is None:
        offset, floor, inclusive = 0, None, True
    else:
        offset = hint if hint >= 0 else search(after, -1)
        floor, inclusive = after, True
    searches = 0
    while True:
        chunk = read(offset, batch)
        if floor is not None and offset > 0 and (not chunk or key(chunk[0]) > floor):
            # elements before ``offset`` were deleted since it was taken: find ``floor`` again
            searches += 1
            offset = search(floor, offset) if searches <= MAX_SEARCHES else 0
            continue
        for i, item in enumerate(chunk):
            k = key(item)
            if floor is None or k > floor or (inclusive and k == floor):
                yield offset + i, item
        if len(chunk) < batch:
            return
        # the next read starts at this chunk's last element, which verifies the position
        last = key(chunk[-1])
        if floor is None or last >= floor:  # (below ``floor`` when elements were inserted)
            floor, inclusive = last, False
        offset += len(chunk) - 1

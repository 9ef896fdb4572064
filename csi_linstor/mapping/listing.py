"""ListVolumes and ListSnapshots pages that cost O(page), not O(cluster) (issue 19).

A page is read from LINSTOR's sorted lists by offset (``paged.each_after``: resource
definitions for volumes, the snapshot view for snapshots), continuing after the last element
the previous page returned. The token says where that was:

    p1:<offset>:<NAME>[/<NAME>]/<volume number>

- ``offset``: where LINSTOR listed the element the previous page ended in; a hint only, checked
  on every read (elements created or deleted meanwhile shift it, and the position is found
  again by name).
- the names: that element's key as LINSTOR sorts it (upper-cased resource definition name, and
  for snapshots the snapshot name);
- the volume number: how far into the element the page got (a consistency group's resource
  definition holds one volume per member, its snapshots one CSI snapshot per member); -1 for
  an element that stands for one item.

Items created during a listing after the position appear in a later page, items deleted are
never returned; an item is never returned twice (CSI leaves both open; csi-sanity checks the
latter). Tokens of the earlier form ``after:<id>`` (a driver before this change) still work:
their position is searched by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from csi_linstor.deadline import Deadline
from csi_linstor.errors import Aborted, InvalidArgument
from csi_linstor.linstor import paged
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import Model
from csi_linstor.mapping import ids

PREFIX = "p1:"
LEGACY_PREFIX = "after:"
ALL_BATCH = 500  # elements per read when the caller asked for every remaining item

E = TypeVar("E", bound=Model)
I = TypeVar("I")  # noqa: E741 - the item type


@dataclass(frozen=True)
class Position:
    key: tuple[str, ...]  # LINSTOR's sort key of the element
    vnr: int  # the last item's volume number inside it; -1: the element is one item
    offset: int  # where LINSTOR listed it (-1: unknown)

    def token(self) -> str:
        return f"{PREFIX}{self.offset}:{'/'.join(self.key)}/{self.vnr}"


def _invalid(token: str) -> Aborted:
    return Aborted(f"starting_token {token!r} is not a token this driver issued; "
                   "restart the listing without a token")


def parse_token(token: str, width: int,
                legacy: Callable[[str], Position | None]) -> Position | None:
    """The position a ``starting_token`` continues after; None for no token. ``width``: the
    number of names in the key; ``legacy`` maps an ``after:<id>`` token's id to a position."""
    if not token:
        return None
    if token.startswith(LEGACY_PREFIX) and len(token) > len(LEGACY_PREFIX):
        pos = legacy(token[len(LEGACY_PREFIX):])
        if pos is None:
            raise _invalid(token)
        return pos
    if not token.startswith(PREFIX):
        raise _invalid(token)
    offset, sep, rest = token[len(PREFIX):].partition(":")
    parts = rest.split("/")
    if not sep or len(parts) != width + 1 or not offset.isdigit() or \
            not all(ids.is_valid_name(p) for p in parts[:-1]):
        raise _invalid(token)
    try:
        vnr = int(parts[-1])
    except ValueError:
        raise _invalid(token) from None
    if vnr < -1:
        raise _invalid(token)
    return Position(key=tuple(p.upper() for p in parts[:-1]), vnr=vnr, offset=int(offset))


def page(client: LinstorClient, path: str, model: type[E], key: Callable[[E], tuple[str, ...]],
         items_of: Callable[[E], list[tuple[int, I]]], max_entries: int,
         after: Position | None, deadline: Deadline,
         params: dict[str, Any] | None = None) -> tuple[list[I], str]:
    """Up to ``max_entries`` items (0: all) after ``after``, and the token of the next page
    ("" when there is none). ``items_of``: the (volume number, item) pairs an element stands
    for, in volume-number order; -1 for an element that is a single item."""
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    batch = max_entries + 2 if max_entries else ALL_BATCH  # the overlap, and one item more
    elements: Iterator[tuple[int, E]] = paged.each_after(
        client, path, model, key, after.key if after else None,
        after.offset if after else -1, deadline, batch, params)
    out: list[I] = []
    last: Position | None = None
    for offset, element in elements:
        k = key(element)
        for vnr, item in items_of(element):
            if after is not None and k == after.key and vnr <= after.vnr:
                continue  # returned by the previous page
            if max_entries and len(out) == max_entries:
                assert last is not None
                return out, last.token()  # one more item exists: the next page starts here
            out.append(item)
            last = Position(key=k, vnr=vnr, offset=offset)
    return out, ""


def paginate(items: list[I], key: Callable[[I], str], max_entries: int,
             token: str) -> tuple[list[I], str]:
    """Paging of a list read whole (snapshots of one volume, or every snapshot when S3
    backups are listed too): a token is ``after:<id>``; an invalid token is ABORTED."""
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    start = 0
    if token:
        if token.startswith(PREFIX):
            raise Aborted(f"starting_token {token!r} belongs to a listing of another kind "
                          "(the remotes changed meanwhile); restart the listing without a token")
        if not token.startswith(LEGACY_PREFIX) or len(token) <= len(LEGACY_PREFIX):
            raise _invalid(token)
        after = token[len(LEGACY_PREFIX):]
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    chunk = items[start:]
    if max_entries and len(chunk) > max_entries:
        chunk = chunk[:max_entries]
        return chunk, LEGACY_PREFIX + key(chunk[-1])
    return chunk, ""

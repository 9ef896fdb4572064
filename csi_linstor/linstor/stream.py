"""A JSON array reply decoded one element at a time, as its bytes arrive.

``GET /v1/view/resources`` of a large cluster is tens of megabytes of JSON (62 MB for 10,000
volumes on 100 nodes), about 220 MiB once decoded whole by ``json``; a caller that only sums
a few fields of each element needs none of it at once. ``ArrayItems`` takes the reply's text in
chunks and hands out each complete element of the top-level array; what it holds is the text
of the element being received, never the whole reply.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_WS = " \t\r\n"
MAX_ELEMENT_CHARS = 64 << 20  # an element larger than this is not a LINSTOR object


class NotAnArray(ValueError):
    """The reply is not one well-formed JSON array."""


class ArrayItems:
    """Incremental parser of one top-level JSON array: ``feed(text)`` yields the elements
    completed by ``text``; ``close()`` checks that the array ended."""

    def __init__(self) -> None:
        self._buf = ""
        self._pos = 0
        # start: before "["; first: after "["; value: after ","; sep: after an element; end
        self._state = "start"
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> Iterator[Any]:
        self._buf = self._buf[self._pos:] + text
        self._pos = 0
        while True:
            self._skip_ws()
            if self._pos >= len(self._buf):
                return
            ch = self._buf[self._pos]
            if self._state == "end":
                raise NotAnArray(f"JSON text continues after the array: {ch!r}")
            if self._state == "start":
                if ch != "[":
                    raise NotAnArray(f"the reply is not a JSON array (starts with {ch!r})")
                self._pos += 1
                self._state = "first"
                continue
            if ch == "]" and self._state in ("first", "sep"):
                self._pos += 1
                self._state = "end"
                continue
            if self._state == "sep":
                if ch != ",":
                    raise NotAnArray(f"expected ',' or ']' after an array element, got {ch!r}")
                self._pos += 1
                self._state = "value"
                continue
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as err:
                if len(self._buf) - self._pos > MAX_ELEMENT_CHARS:
                    raise NotAnArray(f"an array element of more than {MAX_ELEMENT_CHARS} "
                                     f"characters does not parse: {err}") from err
                return  # not complete yet; a malformed element fails again at close()
            if end == len(self._buf) and not isinstance(value, (dict, list, str)):
                return  # a number or literal may go on in the next chunk
            self._pos = end
            self._state = "sep"
            yield value

    def close(self) -> None:
        self._skip_ws()
        if self._state in ("end", "start") and self._pos == len(self._buf):
            return  # the array ended, or the reply was empty (no elements, as ``_decode``)
        if self._state in ("first", "value") and self._pos < len(self._buf):
            try:
                self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as err:
                raise NotAnArray(f"an array element does not parse: {err}") from err
        raise NotAnArray("the JSON array reply ended before its closing ']'")

    def _skip_ws(self) -> None:
        buf, pos = self._buf, self._pos
        while pos < len(buf) and buf[pos] in _WS:
            pos += 1
        self._pos = pos


def each_item(chunks: Iterable[bytes], each: Callable[[Any], None],
              check: Callable[[], None] | None = None) -> int:
    """Decode UTF-8 ``chunks`` of a JSON array and call ``each`` per element; ``check`` runs
    before every chunk (e.g. the deadline). Returns the number of elements."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    items = ArrayItems()
    count = 0
    for chunk in itertools.chain(chunks_checked(chunks, check), [b""]):
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            raise NotAnArray(f"the reply is not UTF-8: {err}") from err
        for value in items.feed(text):
            each(value)
            count += 1
    items.close()
    return count


def chunks_checked(chunks: Iterable[bytes], check: Callable[[], None] | None
                   ) -> Iterator[bytes]:
    for chunk in chunks:
        if check is not None:
            check()
        if chunk:
            yield chunk

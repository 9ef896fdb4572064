"""A JSON array reply decoded element by element (csi_linstor/linstor/stream.py): the same
elements as ``json.loads`` however the bytes are cut, and a clear error for what is no array."""

from __future__ import annotations

import json
from typing import Any

import pytest

from csi_linstor.linstor.stream import ArrayItems, NotAnArray, each_item

DOC = [{"name": "pvc-ä", "volumes": [{"usable_size_kib": 1048576}], "props": {"a": "[,]"}},
       {"name": "x\"}{", "n": -12.5e3}, [1, [2]], "s", 123456, True, None, {}]


def run(data: bytes, size: int) -> list[Any]:
    out: list[Any] = []
    each_item((data[i:i + size] for i in range(0, len(data), size)), out.append)
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_every_element_whatever_the_chunking(size: int, indent: int | None) -> None:
    data = json.dumps(DOC, indent=indent, ensure_ascii=False).encode()
    assert run(data, size) == DOC


@pytest.mark.parametrize("text", ["", "[]", " [ ] \n"])
def test_empty_replies_have_no_elements(text: str) -> None:
    assert run(text.encode(), 1) == []


@pytest.mark.parametrize("text", ['{"a": 1}', "[1, 2", '[{"a": 1}', "[1,]", "[1 2]", "[1] 2",
                                  '[{"a": tru}]', "[12", "x"])
def test_what_is_not_one_array_is_an_error(text: str) -> None:
    with pytest.raises(NotAnArray):
        run(text.encode(), 3)


def test_invalid_utf8_is_an_error() -> None:
    with pytest.raises(NotAnArray):
        run(b'["\xff\xfe"]', 2)


def test_elements_come_out_as_soon_as_they_are_complete() -> None:
    items = ArrayItems()
    assert list(items.feed('[{"a": 1}, {"b"')) == [{"a": 1}]
    assert list(items.feed(': 2}, 3')) == [{"b": 2}]
    assert list(items.feed("4]")) == [34]
    items.close()


def test_check_runs_before_every_chunk_and_stops_the_read() -> None:
    seen: list[Any] = []
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        each_item([b"[1,", b"2,", b"3,", b"4]"], seen.append, check)
    assert seen == [1, 2] and len(calls) == 3  # the third chunk was never read

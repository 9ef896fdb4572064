"""What goes on the wire now that the client builds its requests itself and sends them through
``LinstorAdapter`` (issue 19): the same bytes ``requests`` would send, one kept-alive connection,
and a reply that breaks or trickles in as a clear UNAVAILABLE / DEADLINE_EXCEEDED."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from csi_linstor.deadline import Deadline
from csi_linstor.errors import DeadlineExceeded
from csi_linstor.linstor.adapter import build_request, decode_reply
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.errors import LinstorUnavailable
from tests.netfakes import raw_server

BASE = "http://ctl.example:3370"
HEADERS = {"User-Agent": "csi-linstor", "Accept": "application/json",
           "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


@pytest.mark.parametrize(("method", "path", "params", "body", "auth"), [
    ("GET", "/v1/controller/version", None, None, None),
    ("GET", "/v1/view/resources", {"nodes": ["n1", "n 2"], "resources": [], "props": None},
     None, None),
    ("GET", "/v1/resource-definitions", {"offset": 100, "limit": 50, "with_volume_definitions":
                                         "true"}, None, None),
    ("POST", "/v1/resource-groups/sc-1/spawn", None,
     {"resource_definition_name": "pvc-ä", "volume_sizes": [1048576], "definitions_only": False},
     None),
    ("DELETE", "/v1/resource-definitions/pvc-1", {"keep_tiebreaker": "false"}, None, None),
    ("PUT", "/v1/resource-definitions/pvc-1", None, {"override_props": {"a/b": "c&d=e"}},
     ("user", "pässword")),
])
def test_requests_are_what_requests_would_prepare(method: str, path: str, params: Any,
                                                  body: Any, auth: Any) -> None:
    authorization = None
    if auth is not None:
        probe = requests.PreparedRequest()
        probe.prepare(method="GET", url=BASE, auth=auth)
        authorization = probe.headers["Authorization"]
    ours = build_request(method, BASE + path, params, body, HEADERS, authorization)
    theirs = requests.PreparedRequest()
    theirs.prepare(method=method, url=BASE + path, headers=dict(HEADERS), params=params,
                   json=body, auth=auth)
    assert ours.url == theirs.url
    assert dict(ours.headers) == dict(theirs.headers)
    assert ours.body == theirs.body
    assert ours.path_url == theirs.path_url


def test_replies_decode_as_json_or_as_text_for_the_error_message() -> None:
    assert decode_reply(b"") is None
    assert decode_reply('[{"name": "pvc-ä"}]'.encode("utf-16")) == [{"name": "pvc-ä"}]
    assert decode_reply(b"<html>502 Bad Gateway</html>") == "<html>502 Bad Gateway</html>"


def test_one_connection_is_kept_alive_across_calls(sim) -> None:
    client = LinstorClient([sim.url])
    for _ in range(30):
        client.get("/v1/controller/version", deadline=Deadline(10))
        client.get("/v1/nodes", deadline=Deadline(10))
    pools = [r.pool for r in client._adapter._routes]
    assert [(p.num_connections, p.num_requests) for p in pools] == [(1, 60)]


def test_a_closed_client_that_is_used_again_opens_a_new_connection(sim) -> None:
    client = LinstorClient([sim.url])
    client.get("/v1/controller/version", deadline=Deadline(10))
    client.session.close()  # what a shutdown does to the adapter's pools
    assert client.get("/v1/controller/version", deadline=Deadline(10))["version"]


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"


def test_a_plain_reply_cut_short_is_unavailable_not_an_internal_error() -> None:
    url, thread = raw_server([(HEAD + b'{"version": "1.33', 0.0)])
    with pytest.raises(LinstorUnavailable, match="broke while reading its reply") as err:
        LinstorClient([url]).get("/v1/controller/version", deadline=Deadline(5))
    assert "may have applied the request" in str(err.value)
    thread.join(5)


def test_a_plain_reply_trickling_past_the_deadline_is_deadline_exceeded() -> None:
    url, thread = raw_server([(HEAD + b"[1,", 0.0)] + [(b"1,", 0.2)] * 10)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        LinstorClient([url]).get("/v1/view/resources", deadline=Deadline(0.7))
    assert time.monotonic() - start < 1.5
    thread.join(5)

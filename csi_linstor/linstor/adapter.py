"""The ``requests`` transport adapter of ``LinstorClient``: ``HTTPAdapter`` with the work it
repeats on every call done once per controller.

``HTTPAdapter.send`` looks up the connection pool for the request's URL (parsing the URL and
normalising a pool key), re-applies the TLS settings to that pool, works out whether a proxy
needs the absolute URL, and ``build_response`` then extracts cookies and sniffs the encoding
from the headers. With ``PreparedRequest.prepare`` (``build_request`` below) that was a third of
the CPU of a REST call against the simulator (0.61 -> 0.41 ms, issue 19): the client talks to a fixed list of controllers with fixed TLS and proxy settings, LINSTOR sets
no cookies, and its replies are JSON decoded from bytes.

So, per controller *origin* (``scheme://host:port``), ``route`` asks ``HTTPAdapter`` once for
the pool (``get_connection_with_tls_context`` and ``cert_verify``: the same pool, TLS context
and proxy manager it would pick) and for the URL form (``request_url``); ``send`` itself is still
``HTTPAdapter.send``: the same timeouts, urllib3 call and mapping of urllib3's errors to
``requests.exceptions``. A request for an origin without a route (none in the driver) takes
``HTTPAdapter``'s own path unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, RequestEncodingMixin, Response
from requests.structures import CaseInsensitiveDict


@dataclass(frozen=True)
class _Route:
    origin: str  # "scheme://host:port", what every URL of this route starts with
    pool: Any  # urllib3 HTTPConnectionPool / HTTPSConnectionPool (possibly of a proxy manager)
    absolute: bool  # the request line carries the absolute URL (plain HTTP through a proxy)


class LinstorAdapter(HTTPAdapter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._routes: list[_Route] = []

    def route(self, origin: str, *, verify: bool | str, proxies: dict[str, str],
              cert: Any) -> None:
        """Resolve, once, what ``HTTPAdapter.send`` would for every URL under ``origin``."""
        probe = PreparedRequest()
        probe.prepare(method="GET", url=origin + "/")
        pool = super().get_connection_with_tls_context(probe, verify, proxies=proxies, cert=cert)
        super().cert_verify(pool, probe.url, verify, cert)
        absolute = super().request_url(probe, proxies) != "/"
        self._routes = [r for r in self._routes if r.origin != origin]
        self._routes.append(_Route(origin, pool, absolute))

    def _route_of(self, url: str) -> _Route | None:
        for route in self._routes:
            if url.startswith(route.origin) and url[len(route.origin):len(route.origin) + 1] in (
                    "/", "?", ""):
                return route
        return None

    def get_connection_with_tls_context(self, request: PreparedRequest, verify: bool | str | None,
                                        proxies: Any = None, cert: Any = None) -> Any:
        route = self._route_of(request.url or "")
        if route is None or route.pool.pool is None:  # no route, or the pool was closed
            return super().get_connection_with_tls_context(request, verify, proxies=proxies,
                                                           cert=cert)
        return route.pool

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        route = self._route_of(url)
        if route is not None and route.pool is conn:
            return  # applied to this pool when the route was made; the settings never change
        super().cert_verify(conn, url, verify, cert)

    def request_url(self, request: PreparedRequest, proxies: Any) -> str:
        url = request.url or ""
        route = self._route_of(url)
        if route is None or route.absolute:
            return super().request_url(request, proxies)
        path = url[len(route.origin):]
        return path if path.startswith("/") else "/" + path

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        """``HTTPAdapter.build_response`` without cookie extraction (LINSTOR sets none and the
        client sends none) and without guessing a text encoding (replies are decoded as JSON
        from bytes)."""
        response = Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url or ""
        response.request = req
        response.connection = self
        return response

    def close(self) -> None:
        self._routes = []
        super().close()


def build_request(method: str, url: str, params: Mapping[str, Any] | None, body: Any,
                  headers: Mapping[str, str], authorization: str | None) -> PreparedRequest:
    """The ``PreparedRequest`` that ``PreparedRequest.prepare`` would build, assembled from
    parts the client already holds in final form: the path in ``url`` is percent-encoded
    (``client.encode_path``) and its base was checked when the client was built, the query is
    requests' own encoding of ``params``, the JSON body is encoded as requests encodes it, and
    no cookies are ever sent (LINSTOR sets none). ``prepare`` re-parsed and re-validated all of
    it on every call: a fifth of a REST call's CPU (issue 19)."""
    if params:
        query = RequestEncodingMixin._encode_params(params)
        if query:
            url += "?" + query
    final = CaseInsensitiveDict(headers)
    if authorization is not None:  # prepare_auth runs after the headers: netrc wins
        final["Authorization"] = authorization
    data: bytes | None = None
    if body is not None:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
        final["Content-Type"] = "application/json"
        final["Content-Length"] = str(len(data))
    elif method not in ("GET", "HEAD"):
        final["Content-Length"] = "0"
    prepared = PreparedRequest()
    prepared.method = method
    prepared.url = url
    prepared.headers = final
    prepared.body = data
    return prepared


def decode_reply(content: bytes) -> Any:
    """JSON from the reply's bytes (UTF-8/16/32 detected as ``Response.json`` does), or the text
    of a reply that is not JSON (a proxy's error page), for the error message."""
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")

"""Reads sized to a page of CSI results, not to the cluster (issue 19).

``GET /v1/view/resources`` filters by resource definition (``resources=`` repeated); LINSTOR
takes the filter from the query string, whose length its HTTP server bounds (Grizzly: 8 KiB of
request line and headers), so a page's names go in chunks of ``CHUNK``.
"""

from __future__ import annotations

from collections.abc import Sequence

from csi_linstor.deadline import Deadline
from csi_linstor.linstor import queries
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import Resource

CHUNK = 50  # resource names per request: 50 × ~52 bytes of query stays far below 8 KiB
MAX_CHUNKS = 4  # a bigger page costs more requests than one unfiltered read is worth


def resources_of(client: LinstorClient, rds: Sequence[str], total: int,
                 deadline: Deadline) -> list[Resource]:
    """The resources of the resource definitions ``rds`` (a page out of ``total`` volumes):
    filtered reads when the page is a small part of the cluster, else one unfiltered read."""
    if not rds:
        return []
    chunks = [list(rds[i:i + CHUNK]) for i in range(0, len(rds), CHUNK)]
    if len(rds) >= total or len(chunks) > MAX_CHUNKS:
        return queries.view_resources(client, deadline)
    out: list[Resource] = []
    for chunk in chunks:
        out.extend(queries.view_resources(client, deadline, rds=chunk))
    return out

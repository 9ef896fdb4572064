"""overProvision's reservations (mapping/capacity.py) against a scripted LINSTOR client: what
GetCapacity answers, and how often it reads every resource (once per RESERVED_TTL, shared)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.errors import DeadlineExceeded
from csi_linstor.linstor.errors import LinstorError
from csi_linstor.mapping.capacity import ReservedCapacity, capacity
from csi_linstor.mapping.params import parse_volume_parameters

GIB_KIB = 1 << 20


def pool(node: str, total_gib: int, free_gib: int) -> dict[str, Any]:
    return {"storage_pool_name": "thin", "node_name": node, "provider_kind": "LVM_THIN",
            "total_capacity": total_gib * GIB_KIB, "free_capacity": free_gib * GIB_KIB}


def resource(rd: str, node: str, gib: int) -> dict[str, Any]:
    return {"name": rd, "node_name": node, "volumes": [
        {"volume_number": 0, "storage_pool_name": "thin", "usable_size_kib": gib * GIB_KIB}]}


class Client:
    """Two nodes with a 10 GiB thin pool each (1 GiB free); ``resources`` is what LINSTOR has."""

    def __init__(self, resources: list[dict[str, Any]], delay: float = 0.0) -> None:
        self.resources = resources
        self.delay = delay
        self.views = 0  # GET /v1/view/resources made
        self.fail = False

    def get(self, path: str, *, deadline: Deadline, params: Any = None) -> Any:
        assert path == "/v1/view/storage-pools", path
        return [pool("n1", 10, 1), pool("n2", 10, 1)]

    def get_each(self, path: str, each: Any, *, deadline: Deadline, params: Any = None) -> None:
        assert path == "/v1/view/resources" and params is None, (path, params)
        self.views += 1
        time.sleep(self.delay)
        if self.fail:
            raise LinstorError("GET", "/v1/view/resources", 500, [])
        for item in self.resources:
            each(item)


OVER = parse_volume_parameters({"placementCount": "1", "overProvision": "2", "storagePool": "thin"})


def gib(client: Client, reservations: ReservedCapacity | None) -> float:
    return capacity(client, OVER, {}, "Aux", Deadline(10), reservations) / (1 << 30)  # type: ignore[arg-type]


def test_over_provision_is_total_times_ratio_less_what_the_pool_holds():
    c = Client([resource("a", "n1", 5), resource("b", "n2", 3), resource("c", "n2", 4)])
    assert gib(c, None) == 20 - 5  # n1: 20 - 5 = 15; n2: 20 - 7 = 13; the best node answers
    assert gib(c, ReservedCapacity(c)) == 15  # type: ignore[arg-type]


def test_one_read_serves_a_round_then_a_new_one_after_the_ttl():
    c = Client([resource("a", "n1", 5), resource("b", "n2", 5)])
    cache = ReservedCapacity(c, ttl=0.3)  # type: ignore[arg-type]
    assert [gib(c, cache) for _ in range(50)] == [15] * 50
    assert c.views == 1
    c.resources.append(resource("c", "n1", 9))
    c.resources.append(resource("d", "n2", 9))
    assert gib(c, cache) == 15  # within the TTL: the earlier sums
    time.sleep(0.35)
    assert gib(c, cache) == 20 - 14  # read again: both nodes now hold 14 GiB
    assert c.views == 2


def test_concurrent_calls_wait_for_the_one_read_in_flight():
    c = Client([resource("a", "n1", 5)], delay=0.2)
    cache = ReservedCapacity(c)  # type: ignore[arg-type]
    answers: list[float] = []
    threads = [threading.Thread(target=lambda: answers.append(gib(c, cache))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [20.0] * 8  # n2 holds nothing: 20 GiB
    assert c.views == 1


def test_a_failed_read_is_the_callers_error_and_the_next_call_reads_again():
    c = Client([resource("a", "n1", 5)])
    cache = ReservedCapacity(c, ttl=0.0)  # type: ignore[arg-type]
    c.fail = True
    with pytest.raises(LinstorError):
        gib(c, cache)
    c.fail = False
    assert gib(c, cache) == 20
    assert c.views == 2


def test_a_caller_whose_deadline_passes_while_waiting_gets_deadline_exceeded():
    c = Client([resource("a", "n1", 5)], delay=0.5)
    cache = ReservedCapacity(c)  # type: ignore[arg-type]
    slow = threading.Thread(target=lambda: cache.get(Deadline(10)))
    slow.start()
    time.sleep(0.1)
    with pytest.raises(DeadlineExceeded) as err:
        cache.get(Deadline(0.1))
    slow.join()
    assert "retry" in err.value.message

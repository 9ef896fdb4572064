"""Shared fixtures and helpers for simulator tests (import the fixtures into a conftest)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from csi_linstor.sim import SimConfig, Simulator, leftover_loop_devices
from csi_linstor.sim import consts as C


def rc_is(ret_code: int, code: int) -> bool:
    if code == C.API_CALL_PARSE_ERROR:  # all bits set: compare the whole value
        return ret_code & 0xFFFFFFFFFFFFFFFF == code
    return (ret_code & (C.MASK_ERROR | C.MASK_BITS_CODE)) == code


def has_rc(body: list[dict], code: int) -> bool:
    return any(rc_is(e["ret_code"], code) for e in body)


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.s = requests.Session()
        self.replies: list[tuple[str, str, int, Any]] = []  # (method, path, status, body)

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        r = self.s.request(method, self.url + path, **kw)
        body = r.json() if r.content else None
        self.replies.append((method, path, r.status_code, body))
        return r

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.call("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.call("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.call("DELETE", path, **kw)

    # common steps
    def rg(self, name: str = "rg1", place_count: int = 2, **sf: Any) -> None:
        r = self.post("/v1/resource-groups",
                      {"name": name, "select_filter": {"place_count": place_count, **sf}})
        assert r.status_code == 201, r.text
        r = self.post(f"/v1/resource-groups/{name}/volume-groups", {})
        assert r.status_code == 201, r.text

    def spawn(self, rd: str, size_kib: int = 4096, rg: str = "rg1", **kw: Any
              ) -> requests.Response:
        return self.post(f"/v1/resource-groups/{rg}/spawn",
                         {"resource_definition_name": rd, "volume_sizes": [size_kib], **kw})


def assert_clean(sim: Simulator) -> None:
    loops = leftover_loop_devices(sim.state_dir)
    assert not loops, f"loop devices left behind: {loops}"
    nodes = [p for p in Path(sim.device_dir).iterdir()
             if stat.S_ISBLK(os.lstat(p).st_mode)] if Path(sim.device_dir).exists() else []
    assert not nodes, f"device nodes left behind: {nodes}"
    files = list(Path(sim.state_dir).glob("*.img")) if Path(sim.state_dir).exists() else []
    assert not files, f"backing files left behind: {files}"


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    made: list[Simulator] = []

    def make(**cfg: Any) -> Simulator:
        n = len(made)
        cfg.setdefault("device_dir", tmp_path / f"dev{n}")
        cfg.setdefault("state_dir", tmp_path / f"state{n}")
        sim = Simulator(SimConfig(**cfg))
        made.append(sim)
        sim.start()
        return sim

    yield make
    for sim in made:
        sim.stop()
    for sim in made:
        assert_clean(sim)


@pytest.fixture
def sim(sim_factory: Callable[..., Simulator]) -> Simulator:
    return sim_factory()


@pytest.fixture
def api(sim: Simulator) -> Api:
    return Api(sim.url or "")

"""Backups (issue 18): simulators shipping to a real S3 server (moto, tests/s3server.py) and to
each other, driven through the CSI controller. Simulator only: the session's real LINSTOR has no
S3 tooling configured (its satellite would need thin_send/zstd and a reachable bucket)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csi_linstor.sim import SimConfig
from tests.controller.conftest import close_env, make_env
from tests.s3server import S3Server

BUCKET = "csi-backups"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(s3: S3Server, request: pytest.FixtureRequest) -> str:
    name = f"{BUCKET}-{abs(hash(request.node.nodeid)) % 10**8}"
    s3.make_bucket(name)
    return name


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[list[Any]]:
    """Two independent simulators (own state, own devices), each with its own driver."""
    if os.geteuid() != 0:
        pytest.skip("needs root for the simulator's loop devices")
    envs = []
    try:
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            envs.append(make_env(d, real_devices=True, sim_config=SimConfig(nodes=2)))
        yield envs
    finally:
        for e in envs:
            close_env(e)

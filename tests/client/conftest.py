from __future__ import annotations

from pathlib import Path

import pytest

from csi_linstor.sim import SimConfig, Simulator


@pytest.fixture
def sim(tmp_path: Path):
    simulator = Simulator(SimConfig(nodes=3, device_dir=tmp_path / "dev",
                                    state_dir=tmp_path / "state"))
    simulator.start()
    yield simulator
    simulator.stop()

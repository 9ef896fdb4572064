"""A LINSTOR controller simulator speaking REST v1, backed by real loop block devices.

    from csi_linstor.sim import Simulator, SimConfig
    sim = Simulator(SimConfig(nodes=3, device_dir=tmp / "dev", state_dir=tmp / "state"))
    url = sim.start()
    ...
    sim.stop()
"""

from .devices import leftover_loop_devices
from .simulator import PoolSpec, SimConfig, Simulator

__all__ = ["PoolSpec", "SimConfig", "Simulator", "leftover_loop_devices"]

"""A LINSTOR controller simulator speaking REST v1, backed by real loop block devices.

    from csi_linstor.sim import Simulator, SimConfig
    sim = Simulator(SimConfig(nodes=3, device_dir=tmp / "dev", state_dir=tmp / "state"))
    url = sim.start()
    ...
    sim.stop()
"""

from .simulator import PoolSpec, SimConfig, Simulator, leftover_loop_devices

__all__ = ["PoolSpec", "SimConfig", "Simulator", "leftover_loop_devices"]

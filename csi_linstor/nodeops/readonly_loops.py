"""Read-only loop devices over a block volume (how a block volume is published read-only): the
lock that serialises taking and sweeping them, and finding the ones no target uses.
"""

from __future__ import annotations

import threading

from csi_linstor.nodeops import devices
from csi_linstor.nodeops.mountinfo import MountTable

# Serialises taking and sweeping read-only loop devices across targets and volumes.
_RO_LOOPS = threading.Lock()


def _unused_readonly_loops(table: MountTable, dev: tuple[int, int]
                           ) -> list[tuple[str, tuple[int, int]]]:
    """Read-only loop devices over ``dev`` that are bind-mounted nowhere."""
    bound = {devices.block_rdev(e.mount_point) for e in table
             if e.fstype.endswith("devtmpfs") and e.root not in ("", "/")}
    return [(path, loop) for path, loop in devices.readonly_loops_over(dev) if loop not in bound]

"""``csi-linstor bench``: measure the driver (throughput and CPU, scale, real LINSTOR).

- ``csi-linstor bench create-delete|full-cycle|snapshot``: drive a CSI endpoint with a workload
  (``cpu.py``; any CSI driver's socket, or a simulator + driver it starts itself).
- ``csi-linstor bench scale``: REST calls, bytes, latency and RSS per RPC on a simulator seeded
  with 100 nodes and up to 10,000 volumes and snapshots (``scale.py``), drawn by ``plot.py``.
- ``csi-linstor bench real``: per-RPC latency split into LINSTOR's own time and the driver's, and
  cycles/s, against a real LINSTOR controller (``real.py``).
"""

from __future__ import annotations

import sys

from csi_linstor.bench.cpu import main as workload_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "scale":
        from csi_linstor.bench.scale import main as scale_main

        return scale_main(argv[1:])
    if argv and argv[0] == "real":
        from csi_linstor.bench.real import main as real_main

        return real_main(argv[1:])
    return workload_main(argv)


__all__ = ["main"]

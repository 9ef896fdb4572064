"""``csi-linstor sim``: run the LINSTOR simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .simulator import SimConfig, Simulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csi-linstor sim",
                                description="Serve a simulated LINSTOR controller (REST v1) "
                                            "whose volumes are real loop block devices.")
    p.add_argument("--listen", default="127.0.0.1:3370", help="HOST:PORT (port 0 = any)")
    p.add_argument("--nodes", type=int, default=3, help="number of satellites (node-1..N)")
    p.add_argument("--node-names", default=None, help="comma-separated node names")
    p.add_argument("--device-dir", type=Path, default=None, help="where drbd<minor> nodes go "
                   "(default /dev)")
    p.add_argument("--state-dir", type=Path, default=None, help="backing files (default: a "
                   "temporary directory)")
    p.add_argument("--rest-api-version", default="1.27.0")
    p.add_argument("--thick-pool", action="append", default=[], metavar="NAME",
                   help="add an LVM (thick, no snapshots) pool with this name on every node")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    nodes: int | list[str] = args.nodes
    if args.node_names:
        nodes = [n.strip() for n in args.node_names.split(",") if n.strip()]
    cfg = SimConfig(nodes=nodes, device_dir=args.device_dir, state_dir=args.state_dir,
                    rest_api_version=args.rest_api_version)
    for name in args.thick_pool:
        cfg.add_pool(name, "LVM")
    sim = Simulator(cfg)
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        url = sim.start(host=host, port=int(port or 0))
        print(url, flush=True)
        while not done.wait(1.0):
            pass
    finally:
        sim.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

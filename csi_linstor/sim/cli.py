"""``csi-linstor sim``: run the LINSTOR simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from pathlib import Path

from csi_linstor.linstor.client import read_bearer_token

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
    p.add_argument("--node-root", action="append", default=[], metavar="NODE=PATH",
                   help="DRBD auto-promote from real opens: a rw mount or write open of a "
                   "volume's device under PATH makes NODE's resource Primary (repeatable)")
    p.add_argument("--thick-pool", action="append", default=[], metavar="NAME",
                   help="add an LVM (thick, no snapshots) pool with this name on every node")
    t = p.add_argument_group("security (like LINSTOR's [https] section and token auth)")
    t.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                   help="serve HTTPS with this certificate (chain) instead of plain HTTP")
    t.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                   help="the certificate's private key")
    t.add_argument("--tls-client-ca", type=Path, default=None, metavar="PEM",
                   help="require client certificates signed by this CA (mutual TLS)")
    t.add_argument("--http-redirect-listen", default=None, metavar="HOST:PORT",
                   help="with --tls-cert: also serve plain HTTP here, answering /v1/* with a 302 "
                        "to the HTTPS port as LINSTOR does")
    t.add_argument("--bearer-token-file", type=Path, action="append", default=[],
                   metavar="FILE", help="require 'Authorization: Bearer <token>' with the token "
                   "in FILE (plain or JSON {\"token\": ...}); repeat for more tokens")
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
    if bool(args.tls_cert) != bool(args.tls_key):
        print("csi-linstor sim: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if (args.tls_client_ca or args.http_redirect_listen) and not args.tls_cert:
        print("csi-linstor sim: --tls-client-ca and --http-redirect-listen need --tls-cert",
              file=sys.stderr)
        return 2
    try:
        tokens = [read_bearer_token(path) for path in args.bearer_token_file]
    except (OSError, ValueError) as err:
        print(f"csi-linstor sim: {err}", file=sys.stderr)
        return 2
    roots: dict[str, list[str]] = {}
    for spec in args.node_root:
        node, sep, path = spec.partition("=")
        if not sep or not node or not path.startswith("/"):
            print(f"csi-linstor sim: --node-root wants NODE=/absolute/path, not {spec!r}",
                  file=sys.stderr)
            return 2
        roots.setdefault(node, []).append(path)
    cfg = SimConfig(nodes=nodes, device_dir=args.device_dir, state_dir=args.state_dir,
                    rest_api_version=args.rest_api_version, tls_cert=args.tls_cert,
                    tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
                    bearer_tokens=tokens, node_roots=roots)
    for name in args.thick_pool:
        cfg.add_pool(name, "LVM")
    sim = Simulator(cfg)
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            url = sim.start(host=host, port=int(port or 0))
        except (OSError, ValueError, ssl.SSLError) as err:
            print(f"csi-linstor sim: cannot listen on {args.listen}: {err}", file=sys.stderr)
            return 2
        print(url, flush=True)
        if args.http_redirect_listen:
            rhost, _, rport = args.http_redirect_listen.rpartition(":")
            print(sim.start_http_redirect(rhost.strip("[]") or "127.0.0.1", int(rport or 0)),
                  flush=True)
        while not done.wait(1.0):
            pass
    finally:
        sim.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

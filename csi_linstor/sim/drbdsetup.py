"""A ``drbdsetup status --json`` stand-in that asks the simulator.

    python -m csi_linstor.sim.drbdsetup --sim-url URL --node NODE status --json RES

Prints exactly what ``drbdsetup status --json RES`` prints on that node and exits 0; for a
resource not present on the node it prints ``RES: No such resource`` on stderr and exits 10,
as drbdsetup does. ``CSI_LINSTOR_SIM_URL`` / ``CSI_LINSTOR_SIM_NODE`` give the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

EXIT_NO_SUCH_RESOURCE = 10


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="drbdsetup")
    p.add_argument("--sim-url", default=os.environ.get("CSI_LINSTOR_SIM_URL"))
    p.add_argument("--node", default=os.environ.get("CSI_LINSTOR_SIM_NODE"))
    sub = p.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    st.add_argument("--verbose", "-v", action="store_true")
    st.add_argument("--statistics", "-s", action="store_true")
    st.add_argument("resource", nargs="?")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.sim_url or not args.node:
        print("drbdsetup (simulated): --sim-url/--node or CSI_LINSTOR_SIM_URL/"
              "CSI_LINSTOR_SIM_NODE are required", file=sys.stderr)
        return 20
    if not args.resource:
        print("drbdsetup (simulated): only 'status --json <resource>' is supported",
              file=sys.stderr)
        return 20
    url = (args.sim_url.rstrip("/") + "/sim/drbd-status/"
           + urllib.parse.quote(args.resource, safe="") + "?"
           + urllib.parse.urlencode({"node": args.node}))
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"drbdsetup (simulated): cannot reach simulator: {e}", file=sys.stderr)
        return 20
    if not data:
        print(f"{args.resource}: No such resource", file=sys.stderr)
        return EXIT_NO_SUCH_RESOURCE
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for r in data:
            print(f"{r['name']} role:{r['role']}")
            for d in r["devices"]:
                print(f"  volume:{d['volume']} disk:{d['disk-state']}")
            for c in r["connections"]:
                print(f"  {c['name']} role:{c['peer-role']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The main job: install csi-linstor and serve CSI on a unix socket against the embedded LINSTOR
# simulator (3 nodes, loop-device backed volumes). Extra arguments go to `csi-linstor serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
SOCKET="${CSI_ENDPOINT:-unix:///run/csi-linstor/csi.sock}"
echo "serving CSI on $SOCKET (Ctrl-C to stop)"
exec csi-linstor serve --linstor-endpoint embedded --csi-endpoint "$SOCKET" "$@"

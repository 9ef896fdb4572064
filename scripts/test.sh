#!/usr/bin/env bash
# The whole test suite: installs what it needs (system packages, csi-sanity, Python test extras),
# lints, then runs every test (unit, simulator, contract, node on real loop devices, controller,
# csi-sanity conformance, end-to-end stories, deploy checks). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:${GOPATH:-$HOME/go}/bin"
start=$(date +%s)

./scripts/install-deps.sh --test

echo "== lint"
python3 -m ruff check csi_linstor tests tools hatch_build.py

echo "== deploy checks (helm chart, manifests, Dockerfile)"
if [ -x .ci/deploy-checks.sh ] || [ -f .ci/deploy-checks.sh ]; then
  bash .ci/deploy-checks.sh
fi

echo "== Kubernetes control plane and CSI sidecars (cached by their go.sum)"
bash tests/k8s/build-tools.sh >/dev/null

echo "== the container image (buildah, from the unchanged Dockerfile)"
bash tests/image/build.sh >/dev/null

echo "== tests"
status=0
python3 -m pytest -q -ra --ignore=tests/deploy "$@" || status=$?
echo "== total $(( $(date +%s) - start ))s"
exit $status

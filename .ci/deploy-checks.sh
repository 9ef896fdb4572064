#!/usr/bin/env bash
# Checks of the Helm chart, the deploy manifests and the Dockerfile (issue 7).
# Installs its own tools (helm via `go install`, kubernetes-validate via pip), then:
#   1. helm lint --strict with default values (+ the required endpoint) and the full values
#   2. helm template both into a temp dir
#   3. kubernetes-validate --strict every rendered object for Kubernetes 1.30 .. 1.34 (and the
#      newest schemas it ships), VolumeSnapshotClass against its CRD schema (jsonschema);
#      the same for the example manifests in deploy/examples
#   4. python -m pytest tests/deploy
# Exits non-zero on the first failure.
set -euo pipefail

HELM_VERSION=v3.22.0             # latest helm v3 on the Go module proxy when this was written
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSIONS=1.30,1.31,1.32,1.33,1.34,newest  # newest = the newest schemas kubernetes-validate ships
KUBE_VERSION_FOR_TEMPLATE=1.34.0  # helm built by `go install` has no default cluster version

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHART=helm/csi-linstor
ENDPOINT=http://linstor-controller.linstor.svc:3370

log() { printf '\n=== %s\n' "$*"; }

# --- tools -------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
export PATH="$PATH:/usr/local/go/bin"
HELM_BIN_DIR="${HELM_BIN_DIR:-$HOME/go/bin}"
export PATH="$HELM_BIN_DIR:$PATH"

helm_ok() {
  command -v helm >/dev/null 2>&1 && helm version --short >/dev/null 2>&1
}
if ! helm_ok; then
  log "installing helm $HELM_VERSION with go install into $HELM_BIN_DIR"
  command -v go >/dev/null 2>&1 || { echo "go is needed to install helm" >&2; exit 1; }
  mkdir -p "$HELM_BIN_DIR"
  GOBIN="$HELM_BIN_DIR" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi
echo "helm: $(command -v helm) $(helm version --short 2>/dev/null || true)"

# checked and run as a module of $PY: a pip-installed console script may not be on PATH
# (pyenv shims, user installs)
if ! "$PY" -c 'import kubernetes_validate' >/dev/null 2>&1; then
  log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "$PY" -m pip install --quiet "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
fi
if ! "$PY" -c 'import yaml, jsonschema, pytest' >/dev/null 2>&1; then
  log "installing PyYAML, jsonschema, pytest"
  "$PY" -m pip install --quiet PyYAML jsonschema pytest
fi
echo "kubernetes-validate: $("$PY" -m kubernetes_validate --version 2>&1 | tail -n1)"

OUT="$(mktemp -d "${TMPDIR:-/tmp}/csi-linstor-deploy-checks.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

# --- 1. lint -----------------------------------------------------------------------------
log "helm lint --strict (defaults + linstor.endpoint)"
helm lint --strict "$CHART" --set "linstor.endpoint=$ENDPOINT"
log "helm lint --strict (tests/deploy/values-full.yaml)"
helm lint --strict "$CHART" -f tests/deploy/values-full.yaml

# --- 2. render ---------------------------------------------------------------------------
log "helm template -> $OUT"
helm template csi-linstor "$CHART" -n linstor --kube-version "$KUBE_VERSION_FOR_TEMPLATE" \
  --set "linstor.endpoint=$ENDPOINT" >"$OUT/default.yaml"
helm template csi-linstor "$CHART" -n linstor --kube-version "$KUBE_VERSION_FOR_TEMPLATE" \
  -f tests/deploy/values-full.yaml >"$OUT/full.yaml"
grep -c '^kind:' "$OUT/default.yaml" | sed 's/^/default values: objects rendered: /'
grep -c '^kind:' "$OUT/full.yaml" | sed 's/^/full values:    objects rendered: /'

# --- 3. validate -------------------------------------------------------------------------
log "validate rendered chart objects (Kubernetes $K8S_VERSIONS)"
"$PY" tests/deploy/validate_rendered.py --workdir "$OUT/split" --k8s "$K8S_VERSIONS" \
  "$OUT/default.yaml" "$OUT/full.yaml"
log "validate deploy/examples (Kubernetes $K8S_VERSIONS)"
"$PY" tests/deploy/validate_rendered.py --workdir "$OUT/examples" --k8s "$K8S_VERSIONS" \
  deploy/examples/*.yaml

# --- 4. tests ----------------------------------------------------------------------------
log "pytest tests/deploy"
"$PY" -m pytest tests/deploy -q -p no:cacheprovider

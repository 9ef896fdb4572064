#!/usr/bin/env bash
# Builds the real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd v1.37.2 / v3.6.8) and the CSI sidecars (csi-provisioner,
# csi-attacher, csi-resizer, csi-snapshotter, snapshot-controller) from tests/k8s/tools (one Go
# module with `tool` directives, pinned by its go.sum), into a cache folder keyed by the go.sum
# hash. Skips the build when the binaries are there (--no-build: fail instead of building).
# Prints the bin directory on stdout.
# About 10 minutes of compiling on 2 cores with a cold Go build cache; 30-40 s warm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$PATH:/usr/local/go/bin"
key=$(sha256sum "$here/tools/go.sum" | cut -c1-16)
cache="${K8S_TOOLS_CACHE:-/var/cache/csi-linstor-tests}/k8s-$key"
bin="$cache/bin"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd csi-provisioner
       csi-attacher csi-resizer csi-snapshotter snapshot-controller)
missing=0
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || missing=1; done
if [ "$missing" = 1 ] && [ "${1:-}" = "--no-build" ]; then
  echo "build-tools: not built yet (run tests/k8s/build-tools.sh)" >&2
  exit 1
fi
if [ "$missing" = 1 ]; then
  echo "build-tools: building the Kubernetes control plane and CSI sidecars into $bin" >&2
  mkdir -p "$bin"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp "$here/tools/go.mod" "$here/tools/go.sum" "$work/"
  started=$(date +%s)
  (cd "$work" && GOBIN="$bin" GOFLAGS=-mod=mod go install -trimpath \
     -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 \
       -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
     tool >&2)
  # etcd's main package is go.etcd.io/etcd/server/v3, so `go install` names the binary "server"
  mv -f "$bin/server" "$bin/etcd"
  echo "build-tools: built in $(( $(date +%s) - started ))s" >&2
fi
# the snapshot CRDs (3 snapshot + 3 group snapshot) from the external-snapshotter client module
crds="$cache/crds"
if [ ! -f "$crds/.done" ]; then
  dir=$(cd "$here/tools" && go mod download -json \
        github.com/kubernetes-csi/external-snapshotter/client/v8 | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$crds"
  cp "$dir"/config/crd/*storage.k8s.io_*.yaml "$crds/"
  touch "$crds/.done"
fi
echo "$bin"

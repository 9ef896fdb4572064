#!/usr/bin/env bash
# Installs what a fresh machine lacks to run and test csi-linstor: node tools from Debian,
# the pinned Go tools (csi-sanity), and the Python package with its test extras.
# Idempotent: skips what is already there. Needs root for apt-get (CI and these machines are root).
set -euo pipefail
cd "$(dirname "$0")/.."

CSI_SANITY_VERSION="${CSI_SANITY_VERSION:-v5.6.0}"
APT_PACKAGES=(e2fsprogs xfsprogs util-linux mount kmod)
with_tests="${1:-}"

missing=()
for tool in mkfs.ext4 mkfs.xfs xfs_growfs resize2fs blkid losetup blockdev findmnt; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing node tools (missing: ${missing[*]})"
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: need root and apt-get to install ${APT_PACKAGES[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

PIP=(python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore)
if [ "$with_tests" = "--test" ]; then
  # The container image is built and run with buildah; its stand-in base with debootstrap.
  if ! command -v buildah >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "install-deps: installing buildah and debootstrap for the image tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null
  fi
  # Graphviz renders docs/architecture.svg; tests/unit/test_layout.py checks it matches its source.
  if ! command -v dot >/dev/null 2>&1; then
    echo "install-deps: installing graphviz for the architecture picture"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends graphviz >/dev/null
  fi
  # The real LINSTOR 1.33.3 of ../shared/linstor-server (tests/real_linstor.py) runs on Java.
  if ! command -v java >/dev/null 2>&1; then
    echo "install-deps: installing a Java runtime for the real LINSTOR tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  fi
  "${PIP[@]}" -e '.[test]'
  export PATH="$PATH:/usr/local/go/bin:${GOPATH:-$HOME/go}/bin"
  if ! command -v csi-sanity >/dev/null 2>&1 || \
     [ "$(cat "${GOPATH:-$HOME/go}/bin/.csi-sanity-version" 2>/dev/null)" != "$CSI_SANITY_VERSION" ]; then
    echo "install-deps: go install csi-sanity@$CSI_SANITY_VERSION"
    go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@${CSI_SANITY_VERSION}"
    echo "$CSI_SANITY_VERSION" > "${GOPATH:-$HOME/go}/bin/.csi-sanity-version"
  fi
else
  "${PIP[@]}" .
fi

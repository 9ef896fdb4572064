#!/usr/bin/env bash
# Builds the driver's container image from the repository's unchanged Dockerfile with buildah
# (no Docker engine here; `--isolation chroot` works in this sandbox), tagged
# localhost/csi-linstor:test. The Dockerfile's base, python:3.12-slim-bookworm, cannot be pulled
# (no container registry is reachable), so a local stand-in is made once with debootstrap
# (Debian bookworm, minbase + python3, pip, venv) and cached as localhost/csi-linstor-base:bookworm,
# with this machine's CA bundle and pip settings so that apt and pip inside the build reach the
# registries the way the host does. Prints the image name on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base=localhost/csi-linstor-base:bookworm
image=localhost/csi-linstor:test
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "image: making the base image $base with debootstrap from $mirror" >&2
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs" "$rootfs.tar"' EXIT
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2
  # trust what the host trusts (its CA bundle and any local CAs, which the image's own
  # update-ca-certificates keeps), and let Debian's pip install system-wide as the
  # python:*-slim images' pip does
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" \
    2>/dev/null || true
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nbreak-system-packages = true\n' \
    > "$rootfs/etc/pip.conf"
  tar -C "$rootfs" -cf "$rootfs.tar" .
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$rootfs.tar" / >/dev/null
  buildah config --env PIP_BREAK_SYSTEM_PACKAGES=1 --cmd /bin/sh "$ctr"
  buildah commit -q "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
fi
cd "$root"
started=$(date +%s)
buildah bud --isolation chroot --build-arg "PYTHON_IMAGE=$base" -t "$image" . >&2
echo "image: built $image in $(( $(date +%s) - started ))s" >&2
echo "$image"

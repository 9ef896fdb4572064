# syntax=docker/dockerfile:1
# One image for both plugin modes of csi-linstor:
#   controller:  csi-linstor serve --mode=controller ...   (runs as the unprivileged user csi)
#   node:        csi-linstor serve --mode=node ...         (the chart runs it privileged, uid 0)
#
# Build:  docker build -t csi-linstor:0.1.0 .

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------------------
# builder: build the wheel. pyproject.toml's build-system requires hatchling and
# grpcio-tools, which pip installs into the isolated build environment; the hatch build
# hook generates the gRPC code from proto/csi.proto into the wheel.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps -w /dist . \
 && ls -l /dist

# ---------------------------------------------------------------------------------------
# runtime: slim Python, node tools, no compilers.
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="csi-linstor" \
      org.opencontainers.image.description="CSI driver for LINSTOR (linstor.csi.linbit.com)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# tini: PID 1 (reaps the mkfs/mount/drbdsetup children, forwards SIGTERM)
# util-linux + mount: mount, umount, blkid, blockdev, findmnt, fsck
# e2fsprogs / xfsprogs: mkfs.ext4, resize2fs, fsck.ext4 / mkfs.xfs, xfs_growfs
# drbd-utils: drbdsetup, drbdadm (status and promotion checks on the node)
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        tini \
        util-linux \
        mount \
        e2fsprogs \
        xfsprogs \
        drbd-utils \
 && rm -rf /var/lib/apt/lists/* \
 && if [ ! -e /etc/mtab ]; then ln -s /proc/mounts /etc/mtab; fi

# [operate]: the official kubernetes client, so `kubectl exec` into the controller pod can run
# csi-linstor status | report | doctor
COPY --from=builder /dist/ /dist/
RUN pip install --no-cache-dir "$(ls /dist/*.whl)[operate]" \
 && rm -rf /dist \
 && csi-linstor --help >/dev/null \
 && csi-linstor doctor --help >/dev/null \
 && python3 -c "import kubernetes"

# Unprivileged default user; the chart's controller pod runs as this uid (runAsUser: 1000),
# the node pod overrides it with uid 0 because it mounts and formats block devices.
RUN groupadd --system --gid 1000 csi \
 && useradd --system --uid 1000 --gid csi --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin csi
USER 1000:1000

ENTRYPOINT ["/usr/bin/tini", "--", "csi-linstor"]
CMD ["serve"]

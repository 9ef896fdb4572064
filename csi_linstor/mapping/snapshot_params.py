"""VolumeSnapshotClass parameters: one typed object and its parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping.params import SNAPSHOT_NAMESPACE, split_key

# ---------------------------------------------------------------------------------------------
# VolumeSnapshotClass parameters
# ---------------------------------------------------------------------------------------------

SNAPSHOT_KEYS = {k.lower(): k for k in (
    "type", "remote-name", "delete-local", "allow-incremental", "max-increments",
    "full-snapshot-after", "s3-endpoint", "s3-bucket", "s3-signing-region", "s3-use-path-style",
    "linstor-target-url", "linstor-target-cluster-id", "linstor-target-storage-pool",
)}


@dataclass(frozen=True)
class SnapshotParameters:
    type: str = "InCluster"
    # canonical key -> value of every snap.linstor.csi.linbit.com/* key (S3/Linstor settings,
    # read by csi_linstor/mapping/backups.py: backup_class)
    settings: tuple[tuple[str, str], ...] = ()


def parse_snapshot_parameters(params: Mapping[str, str]) -> SnapshotParameters:
    """``snap.linstor.csi.linbit.com/*`` keys; other namespaces are ignored.

    ``type`` InCluster (default), S3 or Linstor (issue 18: csi_linstor/mapping/backups.py ships those);
    ``delete-local`` is only for S3/Linstor, as in LINBIT's driver.
    """
    kind = "InCluster"
    settings: dict[str, str] = {}
    for key in sorted(params):
        namespace, raw = split_key(key)
        if namespace != SNAPSHOT_NAMESPACE:
            continue
        name = SNAPSHOT_KEYS.get(raw.lower())
        if name is None:
            raise InvalidArgument(f"unknown snapshot class parameter {key!r}; known: "
                                  f"{', '.join(SNAPSHOT_KEYS.values())}")
        value = params[key]
        settings[name] = value
        if name == "type":
            match = [t for t in ("InCluster", "S3", "Linstor") if t.lower() == value.lower()]
            if not match:
                raise InvalidArgument(f"snapshot class parameter {key}: {value!r} is not one of "
                                      "InCluster, S3, Linstor")
            kind = match[0]
    if kind == "InCluster" and settings.get("delete-local", "").strip().lower() in (
            "1", "t", "true"):
        raise InvalidArgument(f"snapshot class parameter {SNAPSHOT_NAMESPACE}/delete-local is "
                              "only for type S3 or Linstor")
    return SnapshotParameters(kind, tuple(sorted(settings.items())))

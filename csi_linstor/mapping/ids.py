"""Identifier rules, frozen for compatibility with LINBIT's Go driver (existing PVs carry them).

- Volume id = LINSTOR resource-definition name: the CSI request name when it is a valid LINSTOR
  name, else ``vol-<uuid5>``; with ``usePvcName`` ``<pvc-namespace>-<pvc-name>`` when valid.
- LINSTOR snapshot name: the CSI snapshot name when valid, else ``snapshot-<uuid5>``.
- Snapshot id: ``InCluster:///<resource>/<snapshot>`` (a URL; ``S3://remote/...`` and
  ``Linstor://remote/...`` are recognised but not served by this driver).
- Group snapshot id (this driver's own format): ``InCluster:///group/<snapshot>``; every member
  is the LINSTOR snapshot ``<snapshot>`` of one source resource definition.
- Forms LINBIT's driver also writes, recognised so they are never mistaken for something else:
  a group snapshot id that is a bare LINSTOR snapshot name; consistency-group volume ids
  ``cg-<uuid5>/<vnr>`` (``cg-<uuid5>`` for volume number 0) and their snapshot ids
  ``InCluster:///cg-<uuid5>/<vnr>/<snapshot>``.
- Generated resource-group name: ``sc-<uuid5>`` over the JSON the Go driver marshals (see
  ``params.py``).

The uuid5 here is pborman/uuid's ``NewSHA1(uuid.UUID([]byte(ns)), data)``: SHA-1 over the *whole*
namespace byte string (not 16 bytes of a parsed UUID) followed by the data, first 16 bytes, with
the version (5) and RFC 4122 variant bits set.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

DRIVER_NAMESPACE = b"linstor.csi.linbit.com"
RESOURCE_GROUP_NAMESPACE = b"resourcegroup.linstor.csi.linbit.com"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{1,47}$")
_LETTER = re.compile(r"[A-Za-z]")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")

SNAPSHOT_TYPES = ("InCluster", "S3", "Linstor")
GROUP_PREFIX = "group"


def go_uuid5(namespace: bytes, data: bytes) -> str:
    """pborman/uuid NewSHA1(UUID(namespace), data) as a canonical string."""
    digest = bytearray(hashlib.sha1(namespace + data).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def is_valid_name(name: str) -> bool:
    """LINSTOR's resource/snapshot name rule (also the Go driver's check).

    LINSTOR (``Checks.nameCheck`` for ``ResourceName``/``SnapshotName``): 2-48 bytes, first a
    letter or ``_``, then letters, digits, ``_`` and ``-``, at least one letter; ``all`` is
    reserved. (``proxy`` is reserved too for resources only: see ``volume_id``.)
    """
    return bool(_NAME.match(name)) and bool(_LETTER.search(name)) and name.lower() != "all"


def is_valid_node_name(name: str) -> bool:
    """LINSTOR's node name rule (``NodeName`` → ``Checks.hostNameCheck``, RFC 1123 host names):
    2-255 bytes of letters, digits, ``.`` and ``-``; not starting with ``.`` or ``-``, not ending
    with ``-``; every dot-separated label at most 63 bytes."""
    if not 2 <= len(name) <= 255 or not _HOST.match(name):
        return False
    if name.startswith((".", "-")) or name.endswith("-"):
        return False
    return all(len(label) <= 63 for label in name.split("."))


def is_valid_pool_name(name: str) -> bool:
    """LINSTOR's storage pool name rule (``StorPoolName``: like resource names, 3-48 bytes)."""
    return len(name) >= 3 and bool(_NAME.match(name)) and bool(_LETTER.search(name))


def volume_id(name: str, *, use_pvc_name: bool = False, pvc_name: str = "",
              pvc_namespace: str = "") -> str:
    """The resource-definition name (= CSI volume id) for CreateVolume ``name``."""
    if use_pvc_name and pvc_name and pvc_namespace:
        candidate = f"{pvc_namespace}-{pvc_name}"
        if is_valid_name(candidate):
            return candidate
    if is_valid_name(name) and name.lower() != "proxy":  # LINSTOR reserves "proxy" for DRBD
        return name
    return "vol-" + go_uuid5(DRIVER_NAMESPACE, name.encode())


def snapshot_name(name: str) -> str:
    """The LINSTOR snapshot name for CreateSnapshot ``name``."""
    if is_valid_name(name):
        return name
    return "snapshot-" + go_uuid5(DRIVER_NAMESPACE, name.encode())


@dataclass(frozen=True)
class SnapshotId:
    type: str  # InCluster, S3, Linstor
    remote: str
    resource: str
    snapshot: str

    def __str__(self) -> str:
        return f"{self.type}://{self.remote}/{self.resource}/{self.snapshot}"


def snapshot_id(resource: str, snapshot: str) -> str:
    return str(SnapshotId("InCluster", "", resource, snapshot))


def parse_snapshot_id(text: str) -> SnapshotId | None:
    """Parse a snapshot id; None when it is not in the URL format (legacy / foreign / garbage).

    Volume-number forms (``<rd>/<vnr>/<snap>``, consistency groups) are not produced by this
    driver and are treated as unknown.
    """
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in SNAPSHOT_TYPES:
        return None
    remote, slash, path = rest.partition("/")
    if not slash:
        return None
    parts = path.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    if not is_valid_name(parts[0]) or not is_valid_name(parts[1]):
        return None
    return SnapshotId(scheme, remote, parts[0], parts[1])


def legacy_snapshot_name(text: str) -> str | None:
    """The LINSTOR snapshot name in a handle without a scheme, or None.

    LINBIT's Go driver wrote bare LINSTOR snapshot names as snapshot handles before it moved to
    the URL format, and still resolves them by searching the cluster's snapshots by name. Such
    handles live on in old VolumeSnapshotContents, so they are looked up the same way.
    """
    if "://" in text or "/" in text or not is_valid_name(text):
        return None
    return text


def group_snapshot_id(snapshot: str) -> str:
    return f"InCluster:///{GROUP_PREFIX}/{snapshot}"


def parse_group_snapshot_id(text: str) -> str | None:
    """The LINSTOR snapshot name of a group snapshot id; None when malformed."""
    prefix = f"InCluster:///{GROUP_PREFIX}/"
    if not text.startswith(prefix):
        return None
    name = text[len(prefix):]
    return name if is_valid_name(name) else None



MAX_VOLUME_NUMBER = 1 << 16  # DRBD volume numbers are 16 bit
CONSISTENCY_GROUP_PREFIX = "cg-"


def _volume_number(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    vnr = int(text)
    return vnr if vnr < MAX_VOLUME_NUMBER else None


def parse_member_volume_id(text: str) -> tuple[str, int] | None:
    """``(resource, volume number)`` of a LINBIT consistency-group member id ``<rd>/<vnr>``."""
    rd, sep, vnr = text.partition("/")
    number = _volume_number(vnr) if sep else None
    if number is None or not is_valid_name(rd):
        return None
    return rd, number


def parse_member_snapshot_id(text: str) -> tuple[str, int, str] | None:
    """``(resource, volume number, snapshot)`` of ``InCluster:///<rd>/<vnr>/<snapshot>``."""
    prefix = "InCluster:///"
    if not text.startswith(prefix):
        return None
    parts = text[len(prefix):].split("/")
    if len(parts) != 3:
        return None
    number = _volume_number(parts[1])
    if number is None or not is_valid_name(parts[0]) or not is_valid_name(parts[2]):
        return None
    return parts[0], number, parts[2]


def may_be_consistency_group(rd: str) -> bool:
    """Whether ``rd`` may be the shared resource of a LINBIT consistency group (``cg-…``)."""
    return rd.lower().startswith(CONSISTENCY_GROUP_PREFIX)


def consistency_group_rd(namespace: str, group: str) -> str:
    """The shared resource of consistency group ``group`` in ``namespace``, as LINBIT's driver
    names it: ``cg-<uuid5("<namespace>/<group>")>``."""
    return CONSISTENCY_GROUP_PREFIX + go_uuid5(DRIVER_NAMESPACE, f"{namespace}/{group}".encode())


def member_volume_id(rd: str, vnr: int) -> str:
    """The CSI volume id of volume number ``vnr`` of consistency-group resource ``rd``. This
    driver always writes the number (also ``/0``), so a member id is never a bare resource name
    that other RPCs would take for a whole volume; LINBIT's bare ``cg-…`` for number 0 is read."""
    return f"{rd}/{vnr}"


def volume_rd(volume_id: str) -> tuple[str, int | None]:
    """``(resource, volume number)`` of a consistency-group member id, else ``(volume_id, None)``."""
    member = parse_member_volume_id(volume_id)
    return member if member is not None else (volume_id, None)


def member_snapshot_id(rd: str, vnr: int, snapshot: str) -> str:
    """LINBIT's id of member ``vnr``'s part of a consistency-group snapshot."""
    return f"InCluster:///{rd}/{vnr}/{snapshot}"

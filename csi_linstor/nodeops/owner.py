"""Which block device is a volume's on this node, and whether a device or a mount is that volume's.

The node plugin never trusts a device path or a mount it is handed: before it formats, mounts or
unmounts anything it checks, by device number (``st_rdev``, symlinks resolved), that the device is
this volume's. Two sources say which device that is, in this order:

1. DRBD's by-res link ``<by_res_dir>/<resource>/<volume>`` (drbd-utils' udev rules create it with
   the device). It is local, so unpublish and unstage keep working while LINSTOR is unreachable.
2. LINSTOR: this node's volume's ``device_path`` (one REST call). This covers resources without a
   DRBD layer. While LINSTOR is unreachable such a volume cannot be verified: the RPC answers
   UNAVAILABLE, touches nothing, and kubelet retries.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError, FailedPrecondition, NotFound
from csi_linstor.linstor import queries
from csi_linstor.mapping.volume_model import (  # what CreateVolume records
    PROP_ACCESS,
    PROP_CONSISTENCY_GROUP,
    PROP_FROM_BLOCK,
)
from csi_linstor.nodeops import devices
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountEntry

Dev = tuple[int, int]


@dataclass(frozen=True)
class Known:
    """The volume's device on this node, and who said so."""

    path: str
    dev: Dev | None  # None: named, but no block device is there (yet, or any more)
    source: str  # "the DRBD by-res link" or "LINSTOR"

    def describe(self) -> str:
        at = f"{self.dev[0]}:{self.dev[1]}" if self.dev else "not present on this node"
        real = os.path.realpath(self.path)
        shown = self.path if real == self.path else f"{self.path} -> {real}"
        return f"{shown} ({at}, according to {self.source})"


def _fmt(dev: Dev | None) -> str:
    return f"{dev[0]}:{dev[1]}" if dev else "no block device"


class VolumeDevice:
    """Answers "is this the volume's device?" for one volume during one RPC (results cached)."""

    def __init__(
        self, ref: VolumeRef, node: str, linstor: Any, by_res_dir: str, deadline: Deadline
    ) -> None:
        self.ref = ref
        self.node = node
        self.linstor = linstor
        self.by_res_dir = by_res_dir
        self.deadline = deadline
        self._linstor_path: str | None = None
        self._props: Mapping[str, str] | None = None
        self.why_unknown = ""  # why ``known()`` returned None

    @property
    def name(self) -> str:
        return f"volume {self.ref.rd}/{self.ref.vnr} on node {self.node}"

    def by_res(self) -> Known | None:
        """The by-res link's device, or None when there is no link (no DRBD resource here)."""
        link = os.path.join(self.by_res_dir, self.ref.rd, str(self.ref.vnr))
        if not os.path.lexists(link):
            return None
        return Known(link, devices.block_rdev(link), "the DRBD by-res link")

    def linstor_path(self) -> str:
        """LINSTOR's device path for the volume on this node; NOT_FOUND when it has none here."""
        if self._linstor_path is not None:
            return self._linstor_path
        if self.linstor is None:
            raise FailedPrecondition(
                f"cannot tell which device is {self.name}: there is no DRBD by-res link for it "
                "and no LINSTOR client is configured"
            )
        try:
            vol = queries.volume(self.linstor, self.ref.rd, self.node, self.ref.vnr, self.deadline)
        except CsiError as e:
            if e.code == NotFound.code:
                raise NotFound(
                    f"volume {self.ref.rd}/{self.ref.vnr} has no resource on node {self.node} in "
                    f"LINSTOR: {e}"
                ) from None
            raise
        if not vol.device_path:
            raise FailedPrecondition(
                f"LINSTOR reports no device path for {self.name}"
            )
        self._linstor_path = vol.device_path
        return vol.device_path

    def created_access(self) -> str:
        """The access type the volume was created with, from its resource definition's props:
        "block", "mount", or "" when none is recorded (a volume made by LINBIT's driver).
        Raises when LINSTOR cannot be asked (no client: FAILED_PRECONDITION; unreachable:
        UNAVAILABLE)."""
        return self._rd_props().get(PROP_ACCESS, "")

    def from_raw_block(self) -> bool:
        """Whether the volume is a filesystem volume cloned or restored from a raw block one
        (its data may carry no signature: mount what is there, never format). Raises as
        ``created_access``."""
        return self._rd_props().get(PROP_FROM_BLOCK) == "true"

    def _rd_props(self) -> Mapping[str, str]:
        if self._props is None:
            if self.linstor is None:
                raise FailedPrecondition("no LINSTOR client is configured")
            rds = queries.resource_definitions(self.linstor, self.deadline, names=[self.ref.rd],
                                               with_volume_definitions=False)
            rd = next((x for x in rds if x.name.upper() == self.ref.rd.upper()), None)
            if rd is None:
                raise NotFound(f"volume {self.ref.rd} does not exist in LINSTOR")
            self._props = rd.props
            if PROP_CONSISTENCY_GROUP in rd.props:
                # a consistency-group member: what CreateVolume recorded is on its volume
                # definition (access type, raw-block origin), over the shared RD's props
                vd = queries.volume_definition(self.linstor, self.ref.rd, self.ref.vnr,
                                               self.deadline)
                self._props = {**rd.props, **vd.props}
        return self._props

    def known(self) -> Known | None:
        """The volume's device: by-res link first, then LINSTOR; None (with ``why_unknown``)
        when neither names one. LINSTOR being unreachable raises (UNAVAILABLE)."""
        found = self.by_res()
        if found is not None:
            return found
        if self.linstor is None:
            self.why_unknown = "it has no DRBD by-res link and no LINSTOR client is configured"
            return None
        try:
            path = self.linstor_path()
        except NotFound:
            self.why_unknown = f"LINSTOR has no resource for it on node {self.node}"
            return None
        return Known(path, devices.block_rdev(path), "LINSTOR")

    def verify(self, device: str) -> Dev:
        """``device`` (a path someone handed us) must be the volume's device; its major:minor.

        FAILED_PRECONDITION naming both devices when it is not; nothing has been touched.
        """
        dev = devices.block_rdev(device)
        if dev is None:
            raise FailedPrecondition(f"{device} for {self.name} is not a block device")
        found = self.by_res()
        if found is None:
            path = self.linstor_path()
            found = Known(path, devices.block_rdev(path), "LINSTOR")
        if found.dev != dev:
            raise FailedPrecondition(
                f"{device} ({_fmt(dev)}) is not the device of {self.name}, which is "
                f"{found.describe()}; refusing to use it"
            )
        return dev

    def owns(self, dev: Dev, known: Known | None) -> bool:
        """``dev`` is the volume's device, or a read-only loop device over it."""
        if known is None or known.dev is None:
            return False
        if dev == known.dev:
            return True
        if devices.is_readonly_loop_over_device(dev):
            backing = devices.loop_backing_file(dev)
            if backing and devices.block_rdev(backing.removesuffix(" (deleted)")) == known.dev:
                return True
        return False

    def check_mount(self, path: str, entry: MountEntry, known: Known | None) -> None:
        """The mount on top of ``path`` must be the volume's: its filesystem is on the volume's
        device (a staging mount or a bind of it), or it is a bind of the volume's device node
        (or of a read-only loop over it). FAILED_PRECONDITION otherwise."""
        dev = entry.dev
        try:
            st = os.stat(path)
            if stat.S_ISBLK(st.st_mode):
                dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        except OSError:
            pass
        if self.owns(dev, known):
            return
        if known is None:
            whose = self.why_unknown or "its device is unknown"
        else:
            whose = f"its device is {known.describe()}"
        raise FailedPrecondition(
            f"{path} has {entry.source} ({entry.fstype}, device {_fmt(dev)}) mounted, which is "
            f"not {self.name} ({whose}); refusing to unmount it. Check the path and the volume "
            "id of the request"
        )

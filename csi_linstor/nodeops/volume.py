"""Convergent node operations: stage, unstage, publish, unpublish, stats, expand.

Each operation reads the mount table (``/proc/self/mountinfo``) and the device (blkid, sysfs) first
and acts only on the difference, so any of them can be repeated after a crash at any line. They
know nothing about gRPC: the servicer (``csi_linstor.csi.node``) turns requests into these calls.

This module is the one door the servicer uses; the operations live in staging.py (stage,
unstage), publishing.py (publish, unpublish) and usage.py (stats, expand).
"""

from __future__ import annotations

from csi_linstor.nodeops.publishing import publish_block, publish_mount, unpublish
from csi_linstor.nodeops.staging import MountRequest, stage_block, stage_mount, unstage
from csi_linstor.nodeops.usage import Stats, Usage, expand, stats

__all__ = [
    "MountRequest",
    "Stats",
    "Usage",
    "expand",
    "publish_block",
    "publish_mount",
    "stage_block",
    "stage_mount",
    "stats",
    "unpublish",
    "unstage",
]

"""Idempotent volume operations on LINSTOR: ``Volumes``, the one object the controller servicer
calls for everything about a CSI volume.

``Volumes`` is assembled from one class per job, each in its own module:

- volume_model: the ``Aux/`` props that record a CSI volume on its RD, value types, sizes, lookups;
- provisioning: create (spawn, multi-step, resume) and delete (retire, collect);
- placement: where replicas go and what a failed placement means;
- restore / clone: the two content sources;
- attachment: publish/unpublish and the remote-access policy;
- consistency_groups: membership checks;
- consistency_group_create: create, delete and grow members of this driver's groups;
- consistency_group_restore: members restored from a group snapshot;
- resizing: expand, modify, condition.
"""

from __future__ import annotations

from csi_linstor.mapping.attachment import Attachment
from csi_linstor.mapping.clone import Cloning
from csi_linstor.mapping.consistency_group_create import ConsistencyGroupCreate
from csi_linstor.mapping.consistency_group_restore import ConsistencyGroupRestore
from csi_linstor.mapping.consistency_groups import ConsistencyGroups
from csi_linstor.mapping.placement import Placement
from csi_linstor.mapping.provisioning import Provisioning
from csi_linstor.mapping.remote_access import ANYWHERE
from csi_linstor.mapping.resizing import Resizing
from csi_linstor.mapping.restore import Restoring
from csi_linstor.mapping.volume_model import (
    FS_TYPES,
    PROP_FROM_BLOCK,
    CreateSpec,
    Source,
    Volume,
    allocation_kib,
)


class Volumes(Provisioning, Placement, Restoring, Cloning, Attachment, ConsistencyGroups,
              ConsistencyGroupCreate, ConsistencyGroupRestore, Resizing):
    """Every volume operation; the constructor is ``VolumeLookups.__init__``."""


__all__ = ["ANYWHERE", "FS_TYPES", "PROP_FROM_BLOCK", "CreateSpec", "Source", "Volume", "Volumes",
           "allocation_kib"]

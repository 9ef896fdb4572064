"""The simulated LINSTOR controller: one ``Controller`` assembled from one class per LINSTOR
resource (no HTTP here; sim/server.py routes REST paths to the ``h_*`` handlers).

Every handler runs under ``Controller.lock`` and returns ``(status, body)``. Slow device work that
does not need the model (attaching loop devices) is queued on ``Request.after`` and run by the
server after the lock is released, before the reply is sent.

Where a route lives, by REST path:

- ``/health``, ``/v1/controller/version``, ``/v1/nodes...``: nodes.py
- ``/v1/controller/properties``, ``/v1/key-value-store...``: properties.py
- ``/v1/resource-groups...`` (volume groups, spawn, query-size-info): groups.py
- ``/v1/resource-definitions[/{rd}]``, ``.../autoplace``, ``.../clone``, ``.../sync-status``:
  definitions.py
- ``.../volume-definitions...``: volume_definitions.py
- ``.../resources...`` (make-available, toggle-disk): resources.py
- ``.../snapshots...``, ``/v1/actions/snapshot/multi``, ``.../snapshot-restore-*``: snapshots.py
- ``/v1/remotes``, ``/v1/remotes/{s3,linstor,ebs}...``, the backup listing: remotes.py
- ``/v1/remotes/{remote}/backups`` create, delete, info, restore, abort, ship (and the
  receiving side of a ship, ``/v1/internal/backups/requestShip``): backups.py
- ``/v1/view/...``: views.py

Rules shared by the routes: state.py (the state and lookups), model.py (objects, replies),
render.py (REST JSON), autoplacer.py, tiebreaker.py, satellite.py (devices, DRBD states).
"""

from __future__ import annotations

from .autoplacer import Autoplacer
from .backups import BackupRoutes
from .definitions import DefinitionRoutes
from .groups import GroupRoutes
from .luks import LuksMixin  # issue 17: the LUKS layer and master passphrase
from .nodes import NodeRoutes
from .properties import PropertyRoutes
from .render import JsonRendering
from .resources import ResourceRoutes
from .satellite import SatelliteRules
from .snapshots import SnapshotRoutes
from .state import ControllerState
from .tiebreaker import TieBreaker
from .views import ViewRoutes
from .volume_definitions import VolumeDefinitionRoutes


class Controller(NodeRoutes, PropertyRoutes, GroupRoutes, DefinitionRoutes,
                 VolumeDefinitionRoutes, ResourceRoutes, SnapshotRoutes, BackupRoutes, ViewRoutes,
                 LuksMixin, Autoplacer, TieBreaker, SatelliteRules, JsonRendering, ControllerState):
    """The whole simulated controller; the constructor is ``ControllerState.__init__``."""

"""REST API versions the driver depends on, and the one check of the controller's version.

LINSTOR rejects a request body field it does not know (Jackson ``FAIL_ON_UNKNOWN_PROPERTIES``,
linstor-facts.md §0.4), so every optional field the driver sends is tied to the REST version that
introduced it.

MIN_REST_API = 1.22.0 (LINSTOR 1.27.0, 2024): the driver's create path relies on
``ResourceGroupSpawn.resource_definition_props``, which creates the resource definition, its
volume definition, its placement *and* the ``Aux/`` ownership props in one transaction. That is
what makes CreateVolume one call and crash-safe (a retry finds nothing or a complete, owned
volume); emulating it on an older controller would need a second write and leave unowned
resource definitions behind when the driver dies in between. Older controllers are refused
with FAILED_PRECONDITION before anything is written.

X_REPLICAS_MAP = 1.23.0: ``AutoSelectFilter.x_replicas_on_different_map`` (the StorageClass
parameter ``xReplicasOnDifferent``). An older controller cannot honour it, and dropping it would
place replicas against the class's rule, so such a class is refused with FAILED_PRECONDITION.

CLONE_RESOURCE_GROUP = 1.24.0: ``ResourceDefinitionCloneRequest.resource_group``. Below it the
clone lands in the source's resource group and is moved with the props PUT right after it.

(Both from LINSTOR's CHANGELOG-OPENAPI.md, linstor-facts.md C9.)

CLONE_PROPS = 1.26.0 (LINSTOR 1.32.0): ``ResourceDefinitionCloneRequest.override_props`` /
``delete_props``. On 1.22–1.25 the clone is made without them and its props are fixed with a
``PUT /v1/resource-definitions/{rd}`` right after (see ``Volumes._clone``).

The version is read once per client (``LinstorClient.rest_api_version`` caches it) and refreshed
by every ``LinstorClient.version`` call, which the readiness probe makes every few seconds: an
upgraded controller is noticed without a restart, and the first CreateVolume of a process whose
probe has run costs no extra call.
"""

from __future__ import annotations

from typing import Any

from csi_linstor.deadline import Deadline
from csi_linstor.errors import FailedPrecondition
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.linstor.models import format_version

MIN_REST_API = (1, 22, 0)
MIN_LINSTOR = "1.27.0"  # the first LINSTOR release serving REST API 1.22.0
X_REPLICAS_MAP = (1, 23, 0)
CLONE_RESOURCE_GROUP = (1, 24, 0)
CLONE_PROPS = (1, 26, 0)


def require_supported(client: LinstorClient, deadline: Deadline) -> tuple[int, ...]:
    """The controller's REST API version; FAILED_PRECONDITION when below ``MIN_REST_API``."""
    have = client.rest_api_version(deadline)
    if have >= MIN_REST_API:
        return have
    release = client.controller_release
    raise FailedPrecondition(
        f"the LINSTOR controller{f' {release}' if release else ''} serves REST API "
        f"{format_version(have)}, but this driver needs REST API {format_version(MIN_REST_API)} "
        f"or newer (LINSTOR {MIN_LINSTOR} or newer): upgrade the LINSTOR controller and retry")


def clone_props_supported(client: LinstorClient, deadline: Deadline) -> bool:
    """Whether the clone request may carry ``override_props``/``delete_props``."""
    return client.rest_api_version(deadline) >= CLONE_PROPS


def clone_resource_group_supported(client: LinstorClient, deadline: Deadline) -> bool:
    """Whether the clone request may carry ``resource_group``."""
    return client.rest_api_version(deadline) >= CLONE_RESOURCE_GROUP


def check_select_filter(client: LinstorClient, select_filter: dict[str, Any],
                        deadline: Deadline) -> None:
    """FAILED_PRECONDITION when ``select_filter`` has a field this controller does not know."""
    if "x_replicas_on_different_map" not in select_filter:
        return
    have = client.rest_api_version(deadline)
    if have >= X_REPLICAS_MAP:
        return
    raise FailedPrecondition(
        f"the StorageClass parameter xReplicasOnDifferent needs LINSTOR REST API "
        f"{format_version(X_REPLICAS_MAP)} or newer, but the controller serves "
        f"{format_version(have)}: upgrade the LINSTOR controller or remove the parameter")

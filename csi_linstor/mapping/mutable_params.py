"""Mutable parameters (VolumeAttributesClass, ControllerModifyVolume): one typed object and its
parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping.params import PARAMETER_NAMESPACE, PROPERTY_NAMESPACE, split_key

# ---------------------------------------------------------------------------------------------
# Mutable parameters (VolumeAttributesClass)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MutableParameters:
    placement_count: int | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return self.placement_count is None and not self.properties


def parse_mutable_parameters(params: Mapping[str, str]) -> MutableParameters:
    """ControllerModifyVolume / CreateVolume ``mutable_parameters``.

    Mutable: ``placementCount`` (``autoPlace``) and ``property.linstor.csi.linbit.com/<prop>``
    (set on the resource definition). Every other key is INVALID_ARGUMENT naming it.
    """
    count: int | None = None
    props: dict[str, str] = {}
    for key in sorted(params):
        value = params[key]
        namespace, raw = split_key(key)
        if namespace == PROPERTY_NAMESPACE and raw:
            props[raw] = value
            continue
        if namespace in ("", PARAMETER_NAMESPACE) and raw.lower() in ("placementcount",
                                                                       "autoplace"):
            try:
                count = int(value.strip(), 10)
            except ValueError as err:
                raise InvalidArgument(f"mutable parameter {key}: {value!r} is not an "
                                      "integer") from err
            if not 1 <= count <= 32:
                raise InvalidArgument(f"mutable parameter {key}: {count} is out of range 1-32")
            continue
        raise InvalidArgument(
            f"mutable parameter {key!r} cannot be changed on an existing volume; mutable are "
            f"placementCount and {PROPERTY_NAMESPACE}/<LINSTOR property>")
    return MutableParameters(count, tuple(sorted(props.items())))

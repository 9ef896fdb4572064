"""IO QoS limits: the ``qos.linbit.com/*`` StorageClass parameter group.

Compatible with LINBIT's driver (1.11.3+, see ../shared/docs/linstor-csi-facts.md §a, §f):

- StorageClass parameters ``qos.linbit.com/{rbps,wbps,riops,wiops}`` (read/write bytes per second,
  read/write IO operations per second), Kubernetes quantities (``40Mi``, ``500``, ``1k``);
- stored on the resource definition as ``Aux/qos.linbit.com/<key>`` (so volumes created by either
  driver carry them the same way);
- returned by ControllerPublishVolume in the publish context as ``qos.linbit.com/<key>`` plus
  ``qos.linbit.com/device`` (the published device path), only when a limit is set; the
  external-attacher copies the publish context into ``VolumeAttachment.status.attachmentMetadata``
  where the nri-volume-qos NRI plugin reads and enforces them as cgroup io limits.

Values are stored and sent as plain integers (a plain integer is a valid quantity for any
quantity parser). 0 means unlimited and is not stored. Anything else (a negative value, a
fraction of an IO, garbage, an unknown ``qos.linbit.com/`` key) is INVALID_ARGUMENT at
CreateVolume: unlike LINBIT's driver, a misspelt key is not silently unlimited.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from csi_linstor.errors import InvalidArgument

log = logging.getLogger(__name__)

NAMESPACE = "qos.linbit.com"
KEYS = ("rbps", "wbps", "riops", "wiops")
DEVICE_KEY = f"{NAMESPACE}/device"
RD_PREFIX = "Aux/"

_SUFFIX = {
    "": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
    "Ei": 1 << 60, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
# Kubernetes quantity syntax (apimachinery resource.ParseQuantity): sign, digits with an optional
# fraction, then a binary/decimal SI suffix or a decimal exponent. Milli and smaller suffixes are
# refused here: no limit below 1/s is meaningful.
_QUANTITY = re.compile(r"^\+?(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                       r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)|[eE](?P<exp>[+-]?[0-9]+))?$")


def parse_quantity(key: str, value: str) -> int:
    """A non-negative Kubernetes quantity as an integer (rounded up, as Quantity.Value())."""
    text = value.strip()
    match = _QUANTITY.match(text)
    if not match:
        raise InvalidArgument(f"parameter {key}: {value!r} is not a non-negative Kubernetes "
                              "quantity (examples: 40Mi, 100M, 500, 1k); 0 or no parameter "
                              "means unlimited")
    try:
        number = Decimal(match.group("num"))
        if match.group("exp") is not None:
            exp = int(match.group("exp"))
            if abs(exp) > 30:
                raise InvalidArgument(f"parameter {key}: {value!r} is out of range")
            number = number.scaleb(exp)
        else:
            number = number * _SUFFIX[match.group("suffix") or ""]
    except InvalidOperation as err:
        raise InvalidArgument(f"parameter {key}: {value!r} is not a number") from err
    result = int(number.to_integral_value(rounding=ROUND_CEILING))
    if result >= 1 << 63:
        raise InvalidArgument(f"parameter {key}: {value!r} is out of range (at most 2^63-1)")
    return result


def parse(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The ``qos.linbit.com/*`` parameters as ((``qos.linbit.com/<key>``, integer text), ...)."""
    out: dict[str, str] = {}
    for key in sorted(params):
        namespace, _, raw = key.partition("/")
        if namespace != NAMESPACE:
            continue
        if raw not in KEYS:
            raise InvalidArgument(f"unknown parameter {key!r}: the IO QoS parameters are "
                                  f"{', '.join(f'{NAMESPACE}/{k}' for k in KEYS)}")
        limit = parse_quantity(key, params[key])
        if limit:
            out[f"{NAMESPACE}/{raw}"] = str(limit)
    return tuple(sorted(out.items()))


def rd_props(limits: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The resource-definition properties that store the limits."""
    return {RD_PREFIX + k: v for k, v in limits}


def publish_context(rd_props_: Mapping[str, str], device: str) -> dict[str, str]:
    """The publish-context keys for nri-volume-qos, read back from the RD's properties.

    A stored value that is not a quantity (edited by hand) is logged and skipped rather than
    failing the attach: the volume is still usable, only unthrottled.
    """
    out: dict[str, str] = {}
    for raw in KEYS:
        key = f"{NAMESPACE}/{raw}"
        value = rd_props_.get(RD_PREFIX + key)
        if value is None:
            continue
        try:
            limit = parse_quantity(key, value)
        except InvalidArgument as err:
            log.warning("ignoring resource-definition property %s%s: %s", RD_PREFIX, key,
                        err.message)
            continue
        if limit:
            out[key] = str(limit)
    if out:
        out[DEVICE_KEY] = device
    return out

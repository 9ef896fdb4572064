"""StorageClass and VolumeSnapshotClass parameters: one typed object and one parser each.

Compatible with LINBIT's Go driver (``pkg/volume/parameter.go``):

- keys are ``linstor.csi.linbit.com/<key>`` or bare ``<key>``; the key part is case-insensitive;
- ``property.linstor.csi.linbit.com/<LINSTOR property>`` and bare ``DrbdOptions/<x>`` become
  resource-group properties;
- every other namespace (``csi.storage.k8s.io/*``, ``qos.linbit.com/*``, ...) is ignored, except
  that ``csi.storage.k8s.io/pvc/name`` and ``.../pvc/namespace`` are read for ``usePvcName``;
- an unknown key in the two driver namespaces, a malformed value or a contradiction is an
  INVALID_ARGUMENT naming the key;
- lists are space-separated as in the Go driver; commas are accepted too;
- the generated resource-group name ``sc-<uuid5>`` hashes the exact JSON golinstor marshals for
  ``ResourceGroupModify`` (struct field order, ``omitempty``, sorted map keys, Go's HTML-safe
  string escaping), so volumes share resource groups with those the Go driver created.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping import qos
from csi_linstor.mapping.ids import is_valid_node_name, is_valid_pool_name
from csi_linstor.mapping.remote_access import (
    _FALSE,
    _TRUE,
    ANYWHERE,
    LOCAL_ONLY,
    RemoteAccessPolicy,
    parse_remote_access,
)
from csi_linstor.mapping.resource_groups import _select_filter, generated_resource_group
from csi_linstor.nodeops.fs import SUPPORTED as SUPPORTED_FS

log = logging.getLogger("csi_linstor.params")

PARAMETER_NAMESPACE = "linstor.csi.linbit.com"
PROPERTY_NAMESPACE = "property.linstor.csi.linbit.com"
SNAPSHOT_NAMESPACE = "snap.linstor.csi.linbit.com"
DRBD_OPTIONS = "DrbdOptions"
PVC_NAME_KEY = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE_KEY = "csi.storage.k8s.io/pvc/namespace"
FSTYPE_KEY = "csi.storage.k8s.io/fstype"

HOSTNAME_KEY = "linbit.com/hostname"
DEFAULT_DISKLESS_POOL = "DfltDisklessStorPool"

LAYERS = ("DRBD", "STORAGE", "LUKS", "NVME", "CACHE", "WRITECACHE", "EXOS", "OPENFLEX", "BCACHE")
PLACEMENT_POLICIES = ("Manual", "AutoPlace", "FollowTopology", "Balanced", "AutoPlaceTopology")

# Keys of the Go driver that this driver accepts and ignores (RWX over NFS is not offered).
_IGNORED_KEYS = {
    "sizekib": "sizeKiB is ignored: the size comes from the claim",
    "nfsconfigtemplate": "nfsConfigTemplate is ignored: RWX over NFS is not offered by this driver",
    "nfsservicename": "nfsServiceName is ignored: RWX over NFS is not offered by this driver",
    "nfssquash": "nfsSquash is ignored: RWX over NFS is not offered by this driver",
    "nfsrecoveryvolumesize": "nfsRecoveryVolumeSize is ignored: RWX over NFS is not offered",
}

# canonical spelling per lower-cased key
KEYS = {k.lower(): k for k in (
    "allowRemoteVolumeAccess", "autoPlace", "clientList", "disklessOnRemaining",
    "disklessStoragePool", "doNotPlaceWithRegex", "encryption", "fsOpts", "layerList",
    "mountOpts", "nodeList", "placementCount", "placementPolicy", "replicasOnDifferent",
    "replicasOnSame", "xReplicasOnDifferent", "sizeKiB", "storagePool", "postMountXfsOpts",
    "resourceGroup", "usePvcName", "overProvision", "nfsConfigTemplate", "nfsServiceName",
    "nfsSquash", "nfsRecoveryVolumeSize",
)}


# ---------------------------------------------------------------------------------------------
# StorageClass parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeParameters:
    placement_count: int = 1
    storage_pools: tuple[str, ...] = ()
    diskless_storage_pool: str = DEFAULT_DISKLESS_POOL
    layer_list: tuple[str, ...] = ("DRBD", "STORAGE")
    replicas_on_same: tuple[str, ...] = ()
    replicas_on_different: tuple[str, ...] = ()
    x_replicas_on_different: tuple[tuple[str, int], ...] = ()
    do_not_place_with_regex: str = ""
    diskless_on_remaining: bool = False
    node_list: tuple[str, ...] = ()
    client_list: tuple[str, ...] = ()
    placement_policy: str = "AutoPlaceTopology"
    remote_access: RemoteAccessPolicy = ANYWHERE
    encryption: bool = False
    fs_opts: str = ""
    mount_opts: str = ""
    post_mount_xfs_opts: str = ""
    resource_group: str = ""
    resource_group_generated: bool = True
    use_pvc_name: bool = False
    over_provision: float | None = None
    properties: tuple[tuple[str, str], ...] = ()
    pvc_name: str = ""
    pvc_namespace: str = ""
    # issue 17: IO QoS limits ((qos.linbit.com/<key>, integer text), ...), see mapping/qos.py
    qos: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # The lists exactly as LINBIT's driver splits them (strings.Split(v, " ")), used only to
    # hash the generated resource-group name: ((select-filter field, items), ...).
    go_lists: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), compare=False)

    @property
    def manual(self) -> bool:
        return self.placement_policy == "Manual"

    @property
    def props(self) -> dict[str, str]:
        return dict(self.properties)

    def select_filter(self) -> dict[str, Any]:
        """The resource group's select_filter (REST body), in golinstor's field order."""
        return _select_filter(self.placement_count, self.storage_pools, self.do_not_place_with_regex,
                              self.replicas_on_same, self.replicas_on_different,
                              self.x_replicas_on_different, self.layer_list,
                              self.diskless_on_remaining)


def split_list(value: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\s,]+", value.strip()) if part)


def _parse_bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidArgument(f"parameter {key}: {value!r} is not a boolean (use true or false)")


def _with_prefix(prefix: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k if k.startswith("Aux/") else f"{prefix.rstrip('/')}/{k}" for k in keys)


def _go_list(value: str, prefix: str | None = None) -> tuple[str, ...]:
    """``strings.Split(value, " ")``, then the Go driver's ``maybeAddTopologyPrefix``."""
    items = tuple(value.split(" "))
    if prefix is None:
        return items
    return tuple(k if k.startswith("Aux/") else f"{prefix}/{k}" for k in items)


def split_key(key: str) -> tuple[str, str]:
    namespace, sep, raw = key.partition("/")
    if not sep:
        return "", key
    return namespace, raw


@dataclass
class _Parsed:
    """What the per-key parsers of ``parse_volume_parameters`` collect."""

    property_namespace: str
    values: dict[str, Any] = field(default_factory=dict)
    go_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    remote_access: RemoteAccessPolicy | None = None
    explicit_count: bool = False


def _placement_count(key: str, value: str, out: _Parsed) -> None:
    text = value.strip() or "1"
    try:
        count = int(text, 10)
    except ValueError as err:
        raise InvalidArgument(f"parameter {key}: {value!r} is not an integer") from err
    if not 0 <= count <= 32:
        raise InvalidArgument(f"parameter {key}: {count} replicas is out of range 0-32 "
                              "(0: the resource group's place_count decides)")
    out.values["placement_count"] = count
    out.explicit_count = True


def _storage_pool(key: str, value: str, out: _Parsed) -> None:
    pools = split_list(value)
    if not pools:
        raise InvalidArgument(f"parameter {key}: names no storage pool")
    _check_names(key, pools, is_valid_pool_name, "storage pool")
    out.values["storage_pools"] = pools
    out.go_lists["storage_pool_list"] = _go_list(value)


def _diskless_storage_pool(key: str, value: str, out: _Parsed) -> None:
    if not value.strip():
        raise InvalidArgument(f"parameter {key}: is empty")
    _check_names(key, (value.strip(),), is_valid_pool_name, "storage pool")
    out.values["diskless_storage_pool"] = value.strip()


def _layer_list(key: str, value: str, out: _Parsed) -> None:
    layers = []
    for item in split_list(value):
        if item.upper() not in LAYERS:
            raise InvalidArgument(f"parameter {key}: unknown layer {item!r}; known layers: "
                                  f"{' '.join(x.lower() for x in LAYERS)}")
        layers.append(item.upper())
    if not layers:
        raise InvalidArgument(f"parameter {key}: names no layer")
    out.values["layer_list"] = tuple(layers)


def _topology_keys(field_name: str) -> Any:
    """replicasOnSame / replicasOnDifferent: topology keys under the property namespace."""
    def parse(key: str, value: str, out: _Parsed) -> None:
        out.values[field_name] = _with_prefix(out.property_namespace, split_list(value))
        out.go_lists[field_name] = _go_list(value, out.property_namespace)
    return parse


def _regex(key: str, value: str, out: _Parsed) -> None:
    try:
        re.compile(value)
    except re.error as err:
        raise InvalidArgument(f"parameter {key}: {value!r} is not a regex: {err}") from err
    out.values["do_not_place_with_regex"] = value


def _nodes(field_name: str) -> Any:
    def parse(key: str, value: str, out: _Parsed) -> None:
        out.values[field_name] = _check_names(key, split_list(value), is_valid_node_name, "node")
    return parse


def _placement_policy(key: str, value: str, out: _Parsed) -> None:
    match = [p for p in PLACEMENT_POLICIES if p.lower() == value.strip().lower()]
    if not match:
        raise InvalidArgument(f"parameter {key}: {value!r} is not one of "
                              f"{', '.join(PLACEMENT_POLICIES)}")
    if match[0] == "Balanced":
        raise InvalidArgument(f"parameter {key}: Balanced needs Kubernetes API access, "
                              "which this driver does not use; use AutoPlaceTopology")
    out.values["placement_policy"] = match[0]


def _remote_access(key: str, value: str, out: _Parsed) -> None:
    out.remote_access = parse_remote_access(key, value)


def _boolean(field_name: str) -> Any:
    def parse(key: str, value: str, out: _Parsed) -> None:
        out.values[field_name] = _parse_bool(key, value)
    return parse


def _text(field_name: str) -> Any:
    def parse(key: str, value: str, out: _Parsed) -> None:
        out.values[field_name] = value
    return parse


def _resource_group(key: str, value: str, out: _Parsed) -> None:
    if value.strip():
        out.values["resource_group"] = value.strip()


def _over_provision(key: str, value: str, out: _Parsed) -> None:
    try:
        ratio = float(value)
    except ValueError as err:
        raise InvalidArgument(f"parameter {key}: {value!r} is not a number") from err
    if not ratio > 0 or ratio != ratio or ratio == float("inf"):
        raise InvalidArgument(f"parameter {key}: must be a positive number, got {value!r}")
    out.values["over_provision"] = ratio


def _x_replicas(key: str, value: str, out: _Parsed) -> None:
    out.values["x_replicas_on_different"] = _parse_x_replicas(key, value, out.property_namespace)


# lower-cased key (autoPlace is placementCount's other name) -> its parser
_PARSERS = {
    "placementcount": _placement_count,
    "storagepool": _storage_pool,
    "disklessstoragepool": _diskless_storage_pool,
    "layerlist": _layer_list,
    "replicasonsame": _topology_keys("replicas_on_same"),
    "replicasondifferent": _topology_keys("replicas_on_different"),
    "xreplicasondifferent": _x_replicas,
    "donotplacewithregex": _regex,
    "disklessonremaining": _boolean("diskless_on_remaining"),
    "nodelist": _nodes("node_list"),
    "clientlist": _nodes("client_list"),
    "placementpolicy": _placement_policy,
    "allowremotevolumeaccess": _remote_access,
    "encryption": _boolean("encryption"),
    "fsopts": _text("fs_opts"),
    "mountopts": _text("mount_opts"),
    "postmountxfsopts": _text("post_mount_xfs_opts"),
    "resourcegroup": _resource_group,
    "usepvcname": _boolean("use_pvc_name"),
    "overprovision": _over_provision,
}


def parse_volume_parameters(params: Mapping[str, str], *, property_namespace: str = "Aux",
                            default_remote_access: str = "true") -> VolumeParameters:
    """Parse CreateVolume/GetCapacity ``parameters`` into a VolumeParameters.

    Raises InvalidArgument naming the offending key.
    """
    out = _Parsed(property_namespace)
    seen: dict[str, str] = {}
    properties: dict[str, str] = {}
    warnings: list[str] = []
    fstype = params.get(FSTYPE_KEY)
    if fstype and fstype not in SUPPORTED_FS:
        # The provisioner normally moves it into the capability's fs_type; when it is passed
        # through, refuse it here too rather than create a volume no node can mount.
        raise InvalidArgument(f"parameter {FSTYPE_KEY}: filesystem {fstype!r} is not supported; "
                              f"the node plugin formats, grows and checks only "
                              f"{', '.join(SUPPORTED_FS)}")

    out.values["qos"] = qos.parse(params)  # issue 17 hook: the qos.linbit.com/* group
    for key in sorted(params):
        value = params[key]
        namespace, raw = split_key(key)
        if namespace == DRBD_OPTIONS:
            properties[f"{DRBD_OPTIONS}/{raw}"] = value
            continue
        if namespace == PROPERTY_NAMESPACE:
            if not raw:
                raise InvalidArgument(f"parameter {key}: names no LINSTOR property")
            properties[raw] = value
            continue
        if namespace not in ("", PARAMETER_NAMESPACE):
            continue  # another component's parameter (csi.storage.k8s.io/*, qos.linbit.com/*...)
        name = KEYS.get(raw.lower())
        if name is None:
            known = sorted(set(KEYS.values()) - {KEYS[k] for k in _IGNORED_KEYS
                                                 if k.startswith("nfs")})
            raise InvalidArgument(
                f"unknown parameter {key!r}: this driver knows {', '.join(known)}, "
                f"{PROPERTY_NAMESPACE}/<LINSTOR property> and DrbdOptions/<option>")
        canonical = "placementcount" if name.lower() == "autoplace" else name.lower()
        if canonical in seen:
            raise InvalidArgument(f"parameters {seen[canonical]!r} and {key!r} both set {name}; "
                                  "set it once")
        seen[canonical] = key
        if canonical in _IGNORED_KEYS:
            warnings.append(_IGNORED_KEYS[canonical])
            log.warning("StorageClass parameter %s: %s", key, _IGNORED_KEYS[canonical])
            continue
        _PARSERS[canonical](key, value, out)

    p = VolumeParameters(properties=tuple(sorted(properties.items())),
                         pvc_name=params.get(PVC_NAME_KEY, ""),
                         pvc_namespace=params.get(PVC_NAMESPACE_KEY, ""),
                         warnings=tuple(warnings),
                         go_lists=tuple(sorted(out.go_lists.items())), **out.values)
    return _settle(p, out.values, out.remote_access, out.explicit_count, default_remote_access,
                   warnings)


def _settle(p: VolumeParameters, values: dict[str, Any], remote_access: RemoteAccessPolicy | None,
            explicit_count: bool, default_remote_access: str,
            warnings: list[str]) -> VolumeParameters:
    """The second half of ``parse_volume_parameters``: what needs the whole parameter set
    (contradictions between keys, the generated resource group, the remote-access default, the
    manual placement that nodeList/clientList imply)."""
    pvc_name, pvc_namespace = p.pvc_name, p.pvc_namespace
    layers = p.layer_list
    if p.encryption and "LUKS" not in layers:
        # issue 17: encryption: "true" puts LINSTOR's LUKS layer right above the storage layer
        # (drbd luks storage by default), see with_encryption
        layers = with_encryption(layers)
        p = _replace(p, layer_list=layers)
    if p.resource_group_generated and "resource_group" not in values:
        p = _replace(p, resource_group=generated_resource_group(p))
    else:
        p = _replace(p, resource_group_generated=False)
    if remote_access is None:
        if "DRBD" in layers or "NVME" in layers:
            remote_access = ANYWHERE if default_remote_access == "true" else LOCAL_ONLY
        else:
            remote_access = LOCAL_ONLY
    elif not remote_access.local_only and "DRBD" not in layers and "NVME" not in layers:
        raise InvalidArgument("parameter allowRemoteVolumeAccess: remote access needs the drbd "
                              f"(or nvme) layer, but layerList is {' '.join(layers).lower()}")
    p = _replace(p, remote_access=remote_access)
    if p.node_list or p.client_list:
        if (explicit_count and p.node_list and p.placement_count
                and len(p.node_list) > p.placement_count):
            raise InvalidArgument(
                f"parameter nodeList names {len(p.node_list)} nodes but placementCount is "
                f"{p.placement_count}; drop placementCount or make them agree")
        if p.client_list and "DRBD" not in layers and "NVME" not in layers:
            raise InvalidArgument("parameter clientList: diskless clients need the drbd (or "
                                  "nvme) layer")
        overlap = set(p.node_list) & set(p.client_list)
        if overlap:
            raise InvalidArgument(f"parameters nodeList and clientList both name {sorted(overlap)}")
        p = _replace(p, placement_count=len(p.node_list) if p.node_list else 0,
                     replicas_on_same=(), replicas_on_different=(), do_not_place_with_regex="",
                     placement_policy="Manual")
    elif p.placement_policy == "Manual":
        raise InvalidArgument("parameter placementPolicy: Manual needs nodeList or clientList")
    if p.use_pvc_name and not (pvc_name and pvc_namespace):
        warnings.append("usePvcName needs the provisioner's --extra-create-metadata; "
                        "using the volume name")
    return p


def with_encryption(layers: tuple[str, ...]) -> tuple[str, ...]:
    """The layer list with LUKS inserted right above STORAGE (LINSTOR's own default stack for
    encrypted volume definitions is DRBD, LUKS, STORAGE: CtrlRscLayerDataFactory
    .createDefaultStack), so DRBD replicates the encrypted data and every replica holds only
    ciphertext. The passphrases are LINSTOR's: it generates one per volume and keeps it
    encrypted with its master passphrase (RscLuksLayerHelper, EncryptionHelper)."""
    if "LUKS" in layers:
        return layers
    if "STORAGE" in layers:
        i = layers.index("STORAGE")
        return layers[:i] + ("LUKS",) + layers[i:]
    return layers + ("LUKS", "STORAGE")


def _check_names(key: str, names: tuple[str, ...], valid: Any, kind: str) -> tuple[str, ...]:
    """INVALID_ARGUMENT for a name LINSTOR would refuse (see ``ids.py`` for the rules)."""
    for name in names:
        if not valid(name):
            raise InvalidArgument(f"parameter {key}: {name!r} is not a valid LINSTOR {kind} name")
    return names


def _replace(p: VolumeParameters, **changes: Any) -> VolumeParameters:
    from dataclasses import replace

    return replace(p, **changes)


def _parse_x_replicas(key: str, value: str, prefix: str) -> tuple[tuple[str, int], ...]:
    try:
        data = yaml.safe_load(value) if value.strip() else {}
    except yaml.YAMLError as err:
        raise InvalidArgument(f"parameter {key}: not a YAML map of key: count: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"parameter {key}: must be a YAML map like "
                              "'topology.kubernetes.io/zone: 2', got {value!r}")
    out = []
    for k, v in data.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InvalidArgument(f"parameter {key}: entry {k!r}: {v!r} must map a topology key "
                                  "to a positive integer")
        out.append((_with_prefix(prefix, (k,))[0], v))
    return tuple(sorted(out))

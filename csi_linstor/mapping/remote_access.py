"""The remote-access policy (StorageClass ``allowRemoteVolumeAccess``): which nodes without a
replica may attach a volume, and the accessible topology that follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping.topology import HOSTNAME_KEY

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


# ---------------------------------------------------------------------------------------------
# Remote access policy
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteAccessPolicy:
    """Which nodes may reach a volume over the network: a list of ``fromSame`` rules.

    ``[()]`` (one empty rule) is "anywhere"; ``[("linbit.com/hostname",)]`` is "only on a node
    with a replica". A node may attach when, for some rule, it has the same value for every
    listed key as some node holding a diskful replica.
    """

    rules: tuple[tuple[str, ...], ...]

    @property
    def anywhere(self) -> bool:
        return any(len(rule) == 0 for rule in self.rules)

    @property
    def local_only(self) -> bool:
        return not self.anywhere and all(rule == (HOSTNAME_KEY,) for rule in self.rules)

    def render(self) -> str:
        """The volume-context value, as the Go driver writes it."""
        if self.anywhere and len(self.rules) == 1:
            return "true"
        if self.rules == ((HOSTNAME_KEY,),):
            return "false"
        return yaml.safe_dump([{"fromSame": list(rule)} if rule else {} for rule in self.rules],
                              default_flow_style=False)

    def accessible_segments(self, segments: Mapping[str, str]) -> list[dict[str, str]]:
        """Segments a node with ``segments`` makes accessible (Go ``AccessibleSegments``)."""
        result = []
        for rule in self.rules:
            result.append({k: segments[k] for k in rule if k in segments})
        return prune_patterns(result)

    def allows(self, replica_segments: list[Mapping[str, str]], node: Mapping[str, str]) -> bool:
        for rule in self.rules:
            for seg in replica_segments:
                if all(k in node and k in seg and node[k] == seg[k] for k in rule):
                    return True
        return False


ANYWHERE = RemoteAccessPolicy(((),))
LOCAL_ONLY = RemoteAccessPolicy(((HOSTNAME_KEY,),))


def prune_patterns(patterns: list[dict[str, str]]) -> list[dict[str, str]]:
    """Drop duplicates and patterns covered by a more general one (Go ``PrunePattern``)."""
    result: list[dict[str, str]] = []
    for pattern in sorted(patterns, key=len):
        if any(all(pattern.get(k) == v for k, v in kept.items()) for kept in result):
            continue
        result.append(pattern)
    return result


def parse_remote_access(key: str, value: str) -> RemoteAccessPolicy:
    text = value.strip()
    if text in _TRUE:
        return ANYWHERE
    if text in _FALSE:
        return LOCAL_ONLY
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidArgument(f"parameter {key}: {value!r} is neither true/false nor a YAML list "
                              f"of {{fromSame: [keys]}} rules: {err}") from err
    if not isinstance(data, list) or not data:
        raise InvalidArgument(f"parameter {key}: {value!r} must be true, false or a non-empty "
                              "YAML list like '- fromSame: [topology.kubernetes.io/zone]'")
    rules = []
    for item in data:
        if item is None:
            item = {}
        if not isinstance(item, dict) or set(item) - {"fromSame"}:
            raise InvalidArgument(f"parameter {key}: each rule must be a mapping with only "
                                  f"'fromSame', got {item!r}")
        keys = item.get("fromSame") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise InvalidArgument(f"parameter {key}: fromSame must be a list of topology keys, "
                                  f"got {keys!r}")
        rules.append(tuple(keys))
    return RemoteAccessPolicy(tuple(rules))

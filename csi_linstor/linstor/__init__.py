"""LINSTOR REST v1: client, return codes, typed errors."""

from csi_linstor.linstor.client import LinstorClient, normalize_url
from csi_linstor.linstor.errors import ApiCallRc, LinstorError, LinstorUnavailable

__all__ = ["ApiCallRc", "LinstorClient", "LinstorError", "LinstorUnavailable", "normalize_url"]

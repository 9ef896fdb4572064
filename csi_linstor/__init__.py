"""csi-linstor: a CSI driver for LINSTOR."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("csi-linstor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

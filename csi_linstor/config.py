"""One typed, validated configuration for the driver process, built from flags and environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DRIVER_NAME = "linstor.csi.linbit.com"
DEFAULT_CSI_ENDPOINT = "unix:///var/lib/kubelet/plugins/linstor.csi.linbit.com/csi.sock"
EMBEDDED = "embedded"
MODES = ("all", "controller", "node")
LOG_LEVELS = ("debug", "info", "warning", "error")
# DRBD's minor space per node, as LINBIT's driver reports it.
DEFAULT_MAX_VOLUMES_PER_NODE = 1048576
# kubelet's root: every staging and target path a node RPC names must resolve inside it.
DEFAULT_KUBELET_DIR = "/var/lib/kubelet"
# DRBD's udev rules link /dev/drbd/by-res/<resource>/<volume> to the volume's device.
DEFAULT_DRBD_BY_RES_DIR = "/dev/drbd/by-res"
# Where the node keeps the locks of mkfs/fsck/resize2fs runs, so they outlive a driver crash.
DEFAULT_RUNTIME_DIR = "/run/csi-linstor"

_DRIVER_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """A flag or environment value is invalid; the message is one line for the user."""


@dataclass(frozen=True)
class Endpoint:
    """Where the gRPC server listens: a unix socket path, or host:port for tcp."""

    scheme: str  # "unix" or "tcp"
    path: Path | None = None
    host: str = ""
    port: int = 0

    @property
    def grpc_address(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"tcp://{self.grpc_address}"


def parse_endpoint(value: str, cwd: Path | None = None) -> Endpoint:
    """Parse ``unix:///abs``, ``unix:rel``, ``unix://rel`` (relative to cwd) or ``tcp://host:port``."""
    value = value.strip()
    if not value:
        raise ConfigError("--csi-endpoint is empty; use unix:///path/csi.sock or tcp://host:port")
    if value.startswith("unix:"):
        rest = value[len("unix:"):]
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ConfigError(f"--csi-endpoint {value!r} names no socket path")
        path = Path(rest)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if len(str(path).encode()) > 107:
            raise ConfigError(
                f"--csi-endpoint socket path {path} is longer than the 107 bytes a unix socket allows"
            )
        return Endpoint("unix", path=path)
    if value.startswith("tcp://"):
        rest = value[len("tcp://"):]
        host, sep, port_text = rest.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ConfigError(f"--csi-endpoint {value!r} needs a port: tcp://host:port")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(f"--csi-endpoint {value!r}: port {port} is out of range 0-65535")
        host = host.strip("[]") or "127.0.0.1"
        return Endpoint("tcp", host=host, port=port)
    raise ConfigError(
        f"--csi-endpoint {value!r} has an unsupported scheme; use unix:///path or tcp://host:port"
    )


@dataclass(frozen=True)
class TlsConfig:
    root_ca: str | None = None  # PEM content or a file path
    user_certificate: str | None = None
    user_key: str | None = None
    skip_verify: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.root_ca or self.user_certificate or self.user_key)


@dataclass(frozen=True)
class Config:
    csi_endpoint: Endpoint
    mode: str = "all"
    node: str = ""
    driver_name: str = DEFAULT_DRIVER_NAME
    linstor_endpoints: tuple[str, ...] = ()
    embedded: bool = False
    log_level: str = "info"
    workers: int = 32
    metrics_address: str | None = None
    property_namespace: str = "Aux"
    label_by_storage_pool: bool = True
    default_remote_access_policy: str = "true"
    bearer_token_file: Path | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)
    drbdsetup: tuple[str, ...] = ("drbdsetup",)
    max_volumes_per_node: int = DEFAULT_MAX_VOLUMES_PER_NODE
    device_wait_seconds: float = 10.0
    kubelet_dir: Path = Path(DEFAULT_KUBELET_DIR)
    drbd_by_res_dir: Path = Path(DEFAULT_DRBD_BY_RES_DIR)
    # Lock files of long node operations (nodeops/oplock.py); outlives the process.
    runtime_dir: Path = Path(DEFAULT_RUNTIME_DIR)
    grace_period: float = 25.0
    linstor_connect_timeout: float = 5.0
    linstor_read_timeout: float = 60.0
    probe_interval: float = 5.0
    # issue 17: the Kubernetes API (RWX block validation, consistency groups)
    kubeconfig: Path | None = None
    rwx_block_validation: bool = True
    enable_consistency_groups: bool = False
    sim_nodes: int = 3
    sim_device_dir: Path | None = None
    sim_state_dir: Path | None = None

    @property
    def runs_controller(self) -> bool:
        return self.mode in ("all", "controller")

    @property
    def runs_node(self) -> bool:
        return self.mode in ("all", "node")


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "n", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def split_endpoints(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def validate(cfg: Config) -> Config:
    """Cross-field checks; raises ConfigError with one clear line."""
    if cfg.mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, not {cfg.mode!r}")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
    if not _DRIVER_NAME.match(cfg.driver_name):
        raise ConfigError(
            f"--driver-name {cfg.driver_name!r} is not a valid CSI driver name "
            "(lower-case DNS name, at most 63 characters)"
        )
    if not 1 <= cfg.workers <= 1024:
        raise ConfigError(f"--workers must be between 1 and 1024, not {cfg.workers}")
    if cfg.runs_node and not cfg.node and not cfg.embedded:
        raise ConfigError("--node (the LINSTOR node name of this host) is required in node mode")
    if not cfg.embedded and not cfg.linstor_endpoints:
        raise ConfigError(
            "no LINSTOR controller: pass --linstor-endpoint URL[,URL] or set LS_CONTROLLERS, "
            "or use --linstor-endpoint embedded for the built-in simulator"
        )
    if cfg.metrics_address is not None:
        host, sep, port = cfg.metrics_address.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(
                f"--metrics-address {cfg.metrics_address!r} must be [host]:port, e.g. :9090"
            )
    if cfg.bearer_token_file is not None and not cfg.bearer_token_file.is_file():
        raise ConfigError(f"--bearer-token {cfg.bearer_token_file} is not a readable file")
    tls = cfg.tls
    if bool(tls.user_certificate) != bool(tls.user_key):
        raise ConfigError("LS_USER_CERTIFICATE and LS_USER_KEY must be given together")
    if cfg.default_remote_access_policy not in ("true", "false"):
        raise ConfigError("--default-remote-access-policy must be true or false")
    if not cfg.kubelet_dir.is_absolute():
        raise ConfigError(f"--kubelet-dir {cfg.kubelet_dir} must be an absolute path")
    if os.path.realpath(cfg.kubelet_dir) == "/":
        raise ConfigError(
            "--kubelet-dir must not be /: node RPC paths are confined to the kubelet directory"
        )
    if cfg.sim_nodes < 1:
        raise ConfigError("--sim-nodes must be at least 1")
    return cfg


def env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None

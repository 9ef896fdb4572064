"""Command line: ``csi-linstor serve | sim | bench | status | report | doctor``. Flags → one typed, validated Config."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from csi_linstor import __version__
from csi_linstor.config import (
    DEFAULT_CSI_ENDPOINT,
    DEFAULT_DRIVER_NAME,
    DEFAULT_KUBELET_DIR,
    DEFAULT_MAX_VOLUMES_PER_NODE,
    DEFAULT_RUNTIME_DIR,
    EMBEDDED,
    LOG_LEVELS,
    MODES,
    Config,
    ConfigError,
    TlsConfig,
    env,
    parse_bool,
    parse_endpoint,
    split_endpoints,
    validate,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _bool(text: str) -> bool:
    try:
        return parse_bool("value", text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CSI")
    g.add_argument("--csi-endpoint", default=DEFAULT_CSI_ENDPOINT, metavar="URL",
                   help="where to serve CSI: unix:///abs/path, unix:rel/path or tcp://host:port "
                        "(default: %(default)s)")
    g.add_argument("--mode", choices=MODES, default="all",
                   help="which CSI services to run: controller (Deployment), node (DaemonSet) or "
                        "all (default: %(default)s)")
    g.add_argument("--node", default="", metavar="NAME",
                   help="this host's LINSTOR node name; required in node mode (Kubernetes: "
                        "$(KUBE_NODE_NAME)); with the embedded simulator defaults to its first node")
    g.add_argument("--driver-name", default=DEFAULT_DRIVER_NAME, metavar="NAME",
                   help="CSI driver name; StorageClasses name it as provisioner "
                        "(default: %(default)s)")
    g.add_argument("--workers", type=_positive_int, default=32, metavar="N",
                   help="gRPC worker threads; match the sidecars' --worker-threads "
                        "(default: %(default)s)")
    g.add_argument("--grace-period", type=_seconds, default=25.0, metavar="SECONDS",
                   help="on SIGTERM, how long in-flight RPCs may finish (default: %(default)s)")
    g.add_argument("--metrics-address", default=None, metavar="[HOST]:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)")
    g.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="log verbosity (default: %(default)s)")
    ls = p.add_argument_group("LINSTOR")
    ls.add_argument("--linstor-endpoint", default=None, metavar="URL[,URL]",
                   help="LINSTOR controller URL(s), comma-separated for failover; falls back to "
                        "$LS_CONTROLLERS; 'embedded' starts the built-in simulator")
    ls.add_argument("--bearer-token", default=None, type=Path, metavar="FILE",
                   help="file holding a bearer token (or JSON {\"token\": ...}) for LINSTOR, "
                        "sent only over HTTPS or to localhost (env LS_BEARER_TOKEN_FILE)")
    ls.add_argument("--linstor-root-ca", default=None, metavar="PEM|FILE",
                   help="CA to verify the controller's certificate (env LS_ROOT_CA)")
    ls.add_argument("--linstor-client-cert", default=None, metavar="PEM|FILE",
                   help="client certificate for mutual TLS (env LS_USER_CERTIFICATE)")
    ls.add_argument("--linstor-client-key", default=None, metavar="PEM|FILE",
                   help="client key for mutual TLS (env LS_USER_KEY)")
    ls.add_argument("--linstor-skip-tls-verification", action="store_true",
                   help="do not verify the controller's certificate (insecure)")
    ls.add_argument("--linstor-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="cap on one LINSTOR request, within the RPC's deadline "
                        "(default: %(default)s)")
    t = p.add_argument_group("topology and volumes")
    t.add_argument("--property-namespace", default="Aux", metavar="NS",
                   help="LINSTOR node properties under NS/ become topology segments "
                        "(default: %(default)s; the operator uses Aux/topology)")
    t.add_argument("--label-by-storage-pool", type=_bool, default=True, metavar="BOOL",
                   help="add linbit.com/sp-<pool> topology segments (default: true)")
    t.add_argument("--default-remote-access-policy", choices=("true", "false"), default="true",
                   help="allowRemoteVolumeAccess when a StorageClass does not set it "
                        "(default: %(default)s)")
    t.add_argument("--max-volumes-per-node", type=_positive_int,
                   default=DEFAULT_MAX_VOLUMES_PER_NODE, metavar="N",
                   help="reported in NodeGetInfo (default: DRBD's minor space, %(default)s)")
    t.add_argument("--device-wait-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="how long NodeStage waits for the DRBD device to appear "
                        "(default: %(default)s)")
    t.add_argument("--kubelet-dir", type=Path, default=Path(DEFAULT_KUBELET_DIR), metavar="DIR",
                   help="kubelet's root directory; node RPCs act only on staging and target paths "
                        "inside it (default: %(default)s)")
    t.add_argument("--runtime-dir", type=Path, default=None, metavar="DIR",
                   help="node: lock files of running mkfs/fsck/resize2fs, so a restarted driver "
                        "waits for what a killed one left running; a hostPath in the node pod "
                        f"(env CSI_LINSTOR_RUNTIME_DIR; default: {DEFAULT_RUNTIME_DIR})")
    t.add_argument("--drbdsetup", default=None, metavar="COMMAND",
                   help="command that answers `drbdsetup status --json RES` (default: drbdsetup)")
    k = p.add_argument_group("Kubernetes API (controller; features that read PVCs and pods)")
    k.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE",
                   help="kubeconfig for the Kubernetes API (default: $KUBECONFIG, then the pod's "
                        "service account)")
    k.add_argument("--disable-rwx-block-validation", action="store_true",
                   help="allow a ReadWriteMany raw block volume on two nodes for any pods, not "
                        "only the pods of one KubeVirt VM (live migration)")
    k.add_argument("--enable-consistency-groups", action="store_true",
                   help="place PVCs labelled linstor.csi.linbit.com/consistency-group=<g> as "
                        "volumes of one LINSTOR resource (one crash-consistent group snapshot)")
    s = p.add_argument_group("embedded simulator (--linstor-endpoint embedded)")
    s.add_argument("--sim-nodes", type=_positive_int, default=3, metavar="N",
                   help="number of simulated LINSTOR nodes (default: %(default)s)")
    s.add_argument("--sim-device-dir", type=Path, default=None, metavar="DIR",
                   help="where the simulator creates its drbdNNNN device nodes (default: /dev)")
    s.add_argument("--sim-state-dir", type=Path, default=None, metavar="DIR",
                   help="where the simulator keeps its sparse backing files (default: a temp dir)")


def _env_path(name: str) -> Path | None:
    value = env(name)
    return Path(value) if value else None


def config_from_args(args: argparse.Namespace) -> Config:
    endpoint_text = args.linstor_endpoint if args.linstor_endpoint is not None else (
        env("LS_CONTROLLERS") or "")
    embedded = endpoint_text.strip().lower() == EMBEDDED
    drbdsetup = tuple(shlex.split(args.drbdsetup)) if args.drbdsetup else ("drbdsetup",)
    cfg = Config(
        csi_endpoint=parse_endpoint(args.csi_endpoint),
        mode=args.mode,
        node=args.node,
        driver_name=args.driver_name,
        linstor_endpoints=() if embedded else split_endpoints(endpoint_text),
        embedded=embedded,
        log_level=args.log_level,
        workers=args.workers,
        metrics_address=args.metrics_address,
        property_namespace=args.property_namespace,
        label_by_storage_pool=args.label_by_storage_pool,
        default_remote_access_policy=args.default_remote_access_policy,
        bearer_token_file=args.bearer_token or _env_path("LS_BEARER_TOKEN_FILE"),
        tls=TlsConfig(
            root_ca=args.linstor_root_ca or env("LS_ROOT_CA") or env("LS_ROOT_CA_FILE"),
            user_certificate=args.linstor_client_cert or env("LS_USER_CERTIFICATE")
            or env("LS_USER_CERTIFICATE_FILE"),
            user_key=args.linstor_client_key or env("LS_USER_KEY") or env("LS_USER_KEY_FILE"),
            skip_verify=args.linstor_skip_tls_verification,
        ),
        drbdsetup=drbdsetup,
        max_volumes_per_node=args.max_volumes_per_node,
        kubeconfig=args.kubeconfig,
        rwx_block_validation=not args.disable_rwx_block_validation,
        enable_consistency_groups=args.enable_consistency_groups,
        device_wait_seconds=args.device_wait_timeout,
        kubelet_dir=args.kubelet_dir,
        runtime_dir=args.runtime_dir or Path(env("CSI_LINSTOR_RUNTIME_DIR")
                                             or DEFAULT_RUNTIME_DIR),
        grace_period=args.grace_period,
        linstor_read_timeout=args.linstor_timeout,
        sim_nodes=args.sim_nodes,
        sim_device_dir=args.sim_device_dir,
        sim_state_dir=args.sim_state_dir,
    )
    return validate(cfg)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="csi-linstor",
        description="A CSI driver for LINSTOR: replicated DRBD volumes for Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"csi-linstor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    serve = sub.add_parser(
        "serve", help="serve CSI (Identity, Controller, Node) on a socket",
        description="Serve the CSI Identity, Controller and Node services. Example, on a machine "
                    "with no cluster: csi-linstor serve --linstor-endpoint embedded "
                    "--csi-endpoint unix:///tmp/csi.sock",
    )
    add_serve_arguments(serve)
    sub.add_parser("sim", help="run the LINSTOR simulator alone (see csi-linstor sim --help)",
                   add_help=False)
    sub.add_parser("bench", help="benchmark a CSI endpoint (see csi-linstor bench --help)",
                   add_help=False)
    # operator commands (csi_linstor/ops): parsed there, listed here for --help
    for name, text in (("status", "LINSTOR nodes, pools and abnormal resources"),
                       ("report", "StorageClass -> PVC -> PV -> LINSTOR, and orphans"),
                       ("doctor", "walk the troubleshooting handbook for one PVC")):
        sub.add_parser(name, help=f"{text} (see csi-linstor {name} --help)", add_help=False)
    return parser


def serve(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"csi-linstor serve: error: {err}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    from csi_linstor.app import Driver
    from csi_linstor.server import ServerError

    driver = Driver(cfg)
    try:
        driver.start()
    except (ServerError, ValueError, OSError) as err:
        print(f"csi-linstor serve: error: {err}", file=sys.stderr)
        driver.stop()
        return 1
    return driver.wait()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        from csi_linstor.sim.cli import main as sim_main

        return sim_main(argv[1:])
    if argv and argv[0] == "bench":
        from csi_linstor.bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] in ("status", "report", "doctor"):
        from csi_linstor.ops.cli import main as ops_main

        return ops_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())

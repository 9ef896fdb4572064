"""``csi-linstor status | report | doctor``: argument parsing, reading, printing, exit codes.

LINSTOR: the driver's flags and environment (``--linstor-endpoint`` / ``LS_CONTROLLERS``,
``LS_ROOT_CA``, ``LS_USER_CERTIFICATE``, ``LS_USER_KEY``, ``LS_BEARER_TOKEN_FILE``), so
``kubectl exec`` into the controller pod needs no flag. Kubernetes: ``--kubeconfig`` /
``KUBECONFIG`` / the pod's service account / ``~/.kube/config``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn

from csi_linstor.config import DEFAULT_DRIVER_NAME, env, split_endpoints
from csi_linstor.ops import common
from csi_linstor.ops.common import OpsError
from csi_linstor.ops.output import dump_json

COMMANDS = ("status", "report", "doctor")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(common.USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _common(p: argparse.ArgumentParser, kube: bool) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g = p.add_argument_group("LINSTOR (as for csi-linstor serve)")
    g.add_argument("--linstor-endpoint", metavar="URL[,URL]",
                   help="LINSTOR controller URL(s) (default: $LS_CONTROLLERS)")
    g.add_argument("--bearer-token", type=Path, metavar="FILE",
                   help="bearer token file (env LS_BEARER_TOKEN_FILE)")
    g.add_argument("--linstor-root-ca", metavar="PEM|FILE", help="CA (env LS_ROOT_CA)")
    g.add_argument("--linstor-client-cert", metavar="PEM|FILE",
                   help="client certificate (env LS_USER_CERTIFICATE)")
    g.add_argument("--linstor-client-key", metavar="PEM|FILE",
                   help="client key (env LS_USER_KEY)")
    g.add_argument("--linstor-skip-tls-verification", action="store_true",
                   help="do not verify the controller's certificate (insecure)")
    k = p.add_argument_group("Kubernetes" + ("" if kube else " (optional for status)"))
    k.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig (default: $KUBECONFIG, the pod's service account, "
                        "~/.kube/config)")
    k.add_argument("--context", metavar="NAME", help="kubeconfig context")
    k.add_argument("--driver-name", default=DEFAULT_DRIVER_NAME, metavar="NAME",
                   help="CSI driver name (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="csi-linstor", description="Operator commands (read-only).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                required=True)
    s = sub.add_parser("status", help="LINSTOR nodes, pools and abnormal resources",
                       description="LINSTOR nodes (online/offline), storage pools (free/total, "
                       "thin over-provisioning) and every resource that is not UpToDate, has "
                       "no quorum or is in use on an unexpected node. Exit 0: healthy, 1: "
                       "something abnormal, 3: LINSTOR unreachable.")
    _common(s, kube=False)
    s.add_argument("--watch", type=float, nargs="?", const=5.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until interrupted")
    s.add_argument("--no-kube", action="store_true",
                   help="do not read Kubernetes (skips the unexpected-node check)")
    r = sub.add_parser("report", help="StorageClass -> PVC -> PV -> LINSTOR, and orphans",
                       description="Every StorageClass of this driver with its claims and PVs "
                       "joined with their LINSTOR resources (replicas, disk states, attached "
                       "node, snapshots), and the orphans both ways. Exit 0: no orphans, 1: "
                       "orphans found, 3: LINSTOR unreachable, 4: Kubernetes unreachable.")
    _common(r, kube=True)
    d = sub.add_parser("doctor", help="walk the troubleshooting handbook for one PVC",
                       description="Checks one claim: class, provisioner and parameters, "
                       "provisioning events, VolumeAttachments, the node plugin on the pod's "
                       "node, the LINSTOR satellite and DRBD state there, expansion and "
                       "snapshots; prints what is wrong and what to do. Exit 0: nothing wrong, "
                       "1: a problem found, 3: LINSTOR unreachable, 4: Kubernetes unreachable.")
    d.add_argument("pvc", metavar="PVC", help="the claim's name (or NAMESPACE/NAME)")
    d.add_argument("-n", "--namespace", default=None, help="the claim's namespace "
                   "(default: the kubeconfig context's, else 'default')")
    _common(d, kube=True)
    return parser


def linstor_client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from csi_linstor.ops.linstor_view import make_client

    text = args.linstor_endpoint if args.linstor_endpoint is not None else (
        env("LS_CONTROLLERS") or "")
    token = args.bearer_token or (Path(t) if (t := env("LS_BEARER_TOKEN_FILE")) else None)
    return make_client(
        split_endpoints(text), bearer_token_file=token,
        root_ca=args.linstor_root_ca or env("LS_ROOT_CA") or env("LS_ROOT_CA_FILE"),
        user_certificate=args.linstor_client_cert or env("LS_USER_CERTIFICATE")
        or env("LS_USER_CERTIFICATE_FILE"),
        user_key=args.linstor_client_key or env("LS_USER_KEY") or env("LS_USER_KEY_FILE"),
        skip_tls_verify=args.linstor_skip_tls_verification)


def kube_reader(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from csi_linstor.ops.kube import KubeReader

    reader = KubeReader(args.kubeconfig, args.context)
    reader.check()
    return reader


# -- status ------------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    from csi_linstor.ops import linstor_view, report, status

    client = linstor_client(args)
    kube = None
    note = ""
    if not args.no_kube:
        try:
            kube = kube_reader(args)
        except common.KubeUnreachable as err:
            note = f"Kubernetes not read ({err}); the unexpected-node check is skipped"
    try:
        while True:
            state = linstor_view.fetch(client)
            attached = None
            if kube is not None:
                k = report.KubeObjects(pvs=kube.pvs(), attachments=kube.volume_attachments())
                attached = report.attached_by_rd(k, args.driver_name)
            rows, findings = status.status_findings(state, attached)
            if args.json:
                out = status.status_json(state, rows, findings)
                if note:
                    out["note"] = note
                dump_json(out)
            else:
                if args.watch:
                    print("\033[H\033[2J", end="")
                    print(time.strftime("%Y-%m-%d %H:%M:%S"), "(every", args.watch, "s; ^C ends)")
                print(status.status_text(state, rows, findings))
                if note:
                    print(f"note: {note}")
            code = common.exit_code(findings)
            if not args.watch:
                return code
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return common.OK
    finally:
        client.close()
        if kube is not None:
            kube.close()


# -- report ------------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    from csi_linstor.ops import linstor_view, report

    kube = kube_reader(args)
    client = linstor_client(args)
    try:
        k = report.KubeObjects(
            storage_classes=kube.storage_classes(), pvcs=kube.pvcs(), pvs=kube.pvs(),
            attachments=kube.volume_attachments(),
            snapshot_contents=_optional(kube.volume_snapshot_contents) or [])
        state = linstor_view.fetch(client)
    finally:
        client.close()
        kube.close()
    rep = report.build(args.driver_name, k, state)
    if args.json:
        dump_json(rep)
    else:
        print(report.report_text(rep))
    return common.exit_code(report.report_findings(rep))


def _optional(fn):  # type: ignore[no-untyped-def]
    from csi_linstor.ops.kube import Forbidden

    try:
        return fn()
    except Forbidden:
        return None


# -- doctor ------------------------------------------------------------------------------------


def run_doctor(args: argparse.Namespace) -> int:
    from csi_linstor.ops import doctor, linstor_view
    from csi_linstor.ops.output import findings_text

    namespace, _, name = args.pvc.rpartition("/")
    kube = kube_reader(args)
    namespace = namespace or args.namespace or kube.namespace or "default"
    o = doctor.ClaimObjects(namespace, name)
    client = None
    try:
        try:
            client = linstor_client(args)
            o.linstor = linstor_view.fetch(client)
        except common.LinstorUnreachable as err:
            o.linstor_error = str(err)
        _read_claim(kube, o, args.driver_name)
    finally:
        if client is not None:
            client.close()
        kube.close()
    findings = doctor.Doctor(args.driver_name, o).inspect()
    verdict = doctor.diagnosis(findings)
    code = common.exit_code(findings)
    if o.linstor is None and o.pvc is not None:
        code = common.LINSTOR_UNREACHABLE
    if args.json:
        dump_json({"claim": f"{namespace}/{name}", "diagnosis": verdict, "exit_code": code,
                   "findings": [f.as_json() for f in findings]})
        return code
    pvc = o.pvc or {}
    spec, st = pvc.get("spec") or {}, pvc.get("status") or {}
    print(f"PVC {namespace}/{name}: " + (
        f"{st.get('phase', 'Pending')}, StorageClass {spec.get('storageClassName') or '-'}, "
        f"{(spec.get('resources') or {}).get('requests', {}).get('storage', '?')}, "
        f"PV {spec.get('volumeName') or '-'}" if o.pvc else "not found"))
    print(findings_text(findings, indent="  "))
    print(f"Diagnosis: {verdict}")
    return code


def _read_claim(kube, o, driver: str) -> None:  # type: ignore[no-untyped-def]
    from csi_linstor.ops.kube import Forbidden

    o.pvc = kube.pvc(o.namespace, o.name)
    if o.pvc is None:
        return
    spec = o.pvc.get("spec") or {}
    cls = spec.get("storageClassName")
    if cls:
        o.storage_class = kube.storage_class(cls)
    elif cls is None:
        o.default_classes = [
            (sc.get("metadata") or {}).get("name") for sc in kube.storage_classes()
            if ((sc.get("metadata") or {}).get("annotations") or {}).get(
                "storageclass.kubernetes.io/is-default-class") == "true"]
    if spec.get("volumeName"):
        o.pv = kube.pv(spec["volumeName"])
    o.pvc_events = kube.events(o.namespace, "PersistentVolumeClaim", o.name)
    try:
        from csi_linstor.ops.doctor import claim_pods

        o.pods = claim_pods(kube.pods(o.namespace), o.name)
    except Forbidden:
        o.pods = None
    for p in o.pods or []:
        pname = (p.get("metadata") or {}).get("name")
        o.pod_events[pname] = kube.events(o.namespace, "Pod", pname)
    o.attachments = [va for va in kube.volume_attachments()
                     if ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName")
                     == spec.get("volumeName")] if spec.get("volumeName") else []
    nodes = {(p.get("spec") or {}).get("nodeName") for p in o.pods or []} | {
        (va.get("spec") or {}).get("nodeName") for va in o.attachments}
    for n in sorted(x for x in nodes if x):
        o.csinodes[n] = kube.csinode(n)
    snaps = _optional(lambda: kube.volume_snapshots(o.namespace))
    o.snapshots = [s for s in snaps or [] if ((s.get("spec") or {}).get("source") or {}).get(
        "persistentVolumeClaimName") == o.name] if snaps is not None else None
    if o.snapshots:
        contents = _optional(kube.volume_snapshot_contents) or []
        o.snapshot_contents = {(c.get("metadata") or {}).get("name"): c for c in contents}
        for s in o.snapshots:
            sname = (s.get("metadata") or {}).get("name")
            o.snapshot_events[sname] = kube.events(o.namespace, "VolumeSnapshot", sname)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {"status": run_status, "report": run_report, "doctor": run_doctor}[args.command]
    try:
        return run(args)
    except OpsError as err:
        what = "LINSTOR" if err.exit_code == common.LINSTOR_UNREACHABLE else "Kubernetes" \
            if err.exit_code == common.KUBE_UNREACHABLE else "error"
        print(f"csi-linstor {args.command}: {what}: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests object by object.

Built-in kinds go through `kubernetes-validate --strict` for each requested Kubernetes
version; VolumeSnapshotClass (a CRD kind) is checked with jsonschema against the CRD schema
copy in tests/deploy/crds/. Any other kind without a schema is reported as skipped.

usage: validate_rendered.py --workdir DIR --k8s 1.30,1.31 FILE [FILE ...]
Exit status 1 if any object fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
CRD_SCHEMAS = {
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): HERE
    / "crds"
    / "snapshot.storage.k8s.io_volumesnapshotclasses.v1.schema.yaml",
}
# CRD-backed kinds we knowingly do not have a schema for (the examples' VolumeSnapshot).
CRD_GROUPS = ("snapshot.storage.k8s.io/", "groupsnapshot.storage.k8s.io/")

_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": _K8S_NAME, "maxLength": 253},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def available_versions() -> list[tuple[int, int]]:
    """Kubernetes versions whose strict schemas ship with the installed kubernetes-validate."""
    import kubernetes_validate

    data = Path(kubernetes_validate.__file__).resolve().parent / "kubernetes-json-schema"
    found = set()
    for p in data.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", p.name)
        if m:
            found.add((int(m.group(1)), int(m.group(2))))
    return sorted(found)


def resolve_versions(requested: list[str]) -> list[str]:
    have = available_versions()
    if not have:
        sys.exit("kubernetes-validate ships no strict schemas?")
    out: list[str] = []
    for r in requested:
        if r == "newest":
            out.append(f"{have[-1][0]}.{have[-1][1]}.0")
            continue
        major, minor = (int(x) for x in r.split(".")[:2])
        if (major, minor) in have:
            out.append(f"{major}.{minor}.0")
        else:
            newest = f"{have[-1][0]}.{have[-1][1]}.0"
            print(
                f"NOTE: kubernetes-validate has no schema for Kubernetes {r}; "
                f"validating against the newest it has, {newest}, instead"
            )
            out.append(newest)
    return list(dict.fromkeys(out))


def split(files: list[Path], workdir: Path) -> list[tuple[Path, dict]]:
    objs: list[tuple[Path, dict]] = []
    for f in files:
        sub = workdir / f.stem
        sub.mkdir(parents=True, exist_ok=True)
        for i, doc in enumerate(d for d in yaml.safe_load_all(f.read_text()) if d):
            name = doc.get("metadata", {}).get("name", "unnamed")
            out = sub / f"{i:02d}-{doc.get('kind', 'Unknown')}-{name}.yaml"
            out.write_text(yaml.safe_dump(doc, sort_keys=False))
            objs.append((out, doc))
    return objs


def crd_schema(api_version: str, kind: str) -> dict | None:
    path = CRD_SCHEMAS.get((api_version, kind))
    if path is None:
        return None
    schema = yaml.safe_load(path.read_text())["openAPIV3Schema"]
    schema = dict(schema)
    schema["properties"] = dict(schema["properties"], metadata=_METADATA)
    schema["additionalProperties"] = False  # like kubectl apply --validate=strict
    return schema


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument(
        "--k8s",
        required=True,
        help="comma separated, e.g. 1.30,1.31,newest (newest schemas shipped)",
    )
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()

    versions = resolve_versions(args.k8s.split(","))
    objs = split(args.files, args.workdir)
    builtin = [
        p
        for p, d in objs
        if crd_schema(d["apiVersion"], d["kind"]) is None
        and not d["apiVersion"].startswith(CRD_GROUPS)
    ]
    failed = 0

    for v in versions if builtin else []:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                v,
                *map(str, builtin),
            ],
            capture_output=True,
            text=True,
        )
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or "ERROR" in out or "WARN" in out:
            failed += 1
            print(f"FAIL kubernetes-validate --strict -k {v}: {len(builtin)} objects\n{out}")
        else:
            print(f"ok   kubernetes-validate --strict -k {v}: {len(builtin)} objects")

    for p, d in objs:
        schema = crd_schema(d["apiVersion"], d["kind"])
        if schema is not None:
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=str)
            if errors:
                failed += 1
                for e in errors:
                    print(f"FAIL {p.name}: {'/'.join(map(str, e.path))}: {e.message}")
            else:
                print(
                    f"ok   {d['kind']}/{d['metadata']['name']} against the {d['apiVersion']} CRD schema"
                )
        elif d["apiVersion"].startswith(CRD_GROUPS):
            print(
                f"skip {d['kind']}/{d['metadata'].get('name')}: no CRD schema copy for {d['apiVersion']}"
            )

    print(
        f"validated {len(objs)} objects from {len(args.files)} file(s) for Kubernetes {', '.join(versions)}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Validate JSON bodies against LINSTOR's REST OpenAPI schemas (read from the shared folder at
test time; the spec is GPL-3.0 and is never copied into this repository).

    from tests.contract.schema import validate, schema_errors, require_spec

    validate(body, "ResourceGroupSpawn")             # loose: the spec as published (patched)
    validate(body, "ResourceWithVolumes", strict=True)  # + additionalProperties: false

``strict=True`` adds ``additionalProperties: false`` to every object schema that declares
``properties`` (``allOf`` compositions are flattened first), except the free-form map schemas
(Properties, ReplicationStates, EffectivePropertiesMap ...). Use it for bodies *we* produce, so
misspelled or invented keys are caught.

A pytest fixture ``linstor_schema`` (import it into a conftest) yields a callable
``check(body, name, strict=False)`` and skips the test when the spec file is absent.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import pytest

from tests.prerequisites import require

SPEC_NAME = "linstor-rest-v1-openapi.validation-patched.yaml"
REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(os.environ.get("LINSTOR_OPENAPI_SPEC") or
                 REPO.parent / "shared" / "spec" / SPEC_NAME)
BASE_URI = "urn:linstor"
# Schemas that are maps (additionalProperties carries the value type) stay open.
MAP_SCHEMAS = {"Properties", "ReplicationStates", "EffectivePropertiesMap"}

# Known drift between the published spec and what the controller sends, applied to both modes.
# Node.type: the server serialises the enum constant name ("SATELLITE"), the spec lists
# "Satellite"; accept both spellings.
_ENUM_EXTRA = {("Node", "type"): ["CONTROLLER", "SATELLITE", "COMBINED", "AUXILIARY"]}


def spec_available() -> bool:
    return SPEC_PATH.is_file()


def require_spec() -> None:
    """Skip the calling test when the OpenAPI file is not present (fail under CI, where the
    shared folder is always beside the checkout: a skip there would hide a broken setup)."""
    require(spec_available(), f"LINSTOR OpenAPI spec not found at {SPEC_PATH} (it is read from "
                              "the shared folder at test time and never vendored: it is GPL)")


def schemas() -> dict[str, Any]:
    """``components/schemas`` of the spec as published (with the enum drift noted above)."""
    return _spec()["components"]["schemas"]


@functools.lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    import yaml

    with open(SPEC_PATH, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    schemas = spec["components"]["schemas"]
    for (name, prop), extra in _ENUM_EXTRA.items():
        p = schemas.get(name, {}).get("properties", {}).get(prop)
        if p and "enum" in p:
            p["enum"] = list(p["enum"]) + [e for e in extra if e not in p["enum"]]
    return spec


def _ref_name(ref: str) -> str | None:
    prefix = "#/components/schemas/"
    return ref[len(prefix):] if ref.startswith(prefix) else None


def _flatten_allof(schema: dict, schemas: dict, seen: tuple[str, ...] = ()) -> dict:
    """Merge an allOf of object schemas into one object schema."""
    props: dict[str, Any] = {}
    required: list[str] = []
    rest: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if "$ref" in part:
            name = _ref_name(part["$ref"])
            if name is None or name in seen:
                return schema
            part = schemas[name]
            if "allOf" in part:
                part = _flatten_allof(part, schemas, seen + (name,))
        if "allOf" in part:
            part = _flatten_allof(part, schemas, seen)
        props.update(part.get("properties") or {})
        required += [r for r in part.get("required") or [] if r not in required]
    out = {"type": "object", **rest, "properties": {**props, **(rest.get("properties") or {})}}
    if required:
        out["required"] = required
    return out


def _close(node: Any, top_name: str | None = None) -> Any:
    if isinstance(node, dict):
        for k, v in list(node.items()):
            if k in ("properties",):
                for pk, pv in v.items():
                    v[pk] = _close(pv)
            elif isinstance(v, (dict, list)) and k not in ("example", "enum", "default"):
                node[k] = _close(v)
        if ("properties" in node and top_name not in MAP_SCHEMAS
                and "additionalProperties" not in node):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_close(x) for x in node]
    return node


@functools.lru_cache(maxsize=1)
def _strict_spec() -> dict[str, Any]:
    spec = copy.deepcopy(_spec())
    schemas = spec["components"]["schemas"]
    for name, s in list(schemas.items()):
        if isinstance(s, dict) and "allOf" in s:
            schemas[name] = _flatten_allof(s, _spec()["components"]["schemas"])
    for name, s in schemas.items():
        schemas[name] = _close(s, name)
    return spec


@functools.lru_cache(maxsize=4)
def _registry(strict: bool) -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    spec = _strict_spec() if strict else _spec()
    res = Resource.from_contents(spec, default_specification=DRAFT4)
    return Registry().with_resource(BASE_URI, res)


@functools.lru_cache(maxsize=512)
def _validator(name: str, strict: bool) -> Any:
    from openapi_schema_validator import OAS30Validator

    spec = _strict_spec() if strict else _spec()
    if name not in spec["components"]["schemas"]:
        raise KeyError(f"no schema components/schemas/{name} in the spec")
    return OAS30Validator({"$ref": f"{BASE_URI}#/components/schemas/{name}"},
                          registry=_registry(strict))


def schema_errors(body: Any, name: str, strict: bool = False) -> list[str]:
    """Human-readable validation errors (empty list = valid). ``name`` may end in ``[]`` to
    validate a JSON array of that schema."""
    if name.endswith("[]"):
        if not isinstance(body, list):
            return [f"expected a JSON array of {name[:-2]}, got {type(body).__name__}"]
        out = []
        for i, item in enumerate(body):
            out += [f"[{i}] {e}" for e in schema_errors(item, name[:-2], strict)]
        return out
    v = _validator(name, strict)
    errs = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in errs]


def validate(body: Any, name: str, strict: bool = False) -> None:
    """Raise AssertionError listing every schema violation of ``body`` against ``name``."""
    errs = schema_errors(body, name, strict)
    if errs:
        mode = "strict " if strict else ""
        raise AssertionError(f"body does not match {mode}schema {name}:\n  " + "\n  ".join(
            errs[:20]))


@pytest.fixture
def linstor_schema() -> Any:
    """``check(body, name, strict=False)``; skips when the spec file is absent."""
    require_spec()
    return validate

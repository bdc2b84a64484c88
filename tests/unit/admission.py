"""A small stand-in for the API server's CRD admission, for unit tests: defaults, then CEL rules.

It walks the generated CRD schema (the text in crds/, not the models) next to a manifest, applies
schema defaults as the API server does before validation, converts `number` fields to doubles as
the typed CEL environment does, and evaluates every `x-kubernetes-validations` rule with
cel-python. The real API server is exercised by the cluster tests; this catches a CEL typo or a
rule that disagrees with its pydantic mirror in milliseconds.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import celpy
import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"
CRD_FILE = CRDS / "modeldeployments.rollwise.dev.yaml"


@functools.cache
def crd_schema(plural: str = "modeldeployments") -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{plural}.rollwise.dev.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _with_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = _with_defaults(sub, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [_with_defaults(schema["items"], v) for v in value]
    return value


def _typed(schema: dict[str, Any], value: Any) -> Any:
    """JSON -> the values CEL sees: `type: number` is always a double, even when written as 1."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: _typed(props[k], v) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [_typed(schema["items"], v) for v in value]
    return value


def _walk(schema: dict[str, Any], value: Any, path: str, out: list[str]) -> None:
    for r in schema.get("x-kubernetes-validations", []):
        result = _program(r["rule"]).evaluate({"self": celpy.json_to_cel(_typed(schema, value))})
        if isinstance(result, celpy.CELEvalError):
            raise AssertionError(f"{path or '<root>'}: CEL rule {r['rule']!r} failed to evaluate: {result}")
        if not bool(result):
            out.append(r["message"])
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name in value:
                _walk(sub, value[name], f"{path}.{name}" if path else name, out)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", out)


def cel_rejections(manifest: dict[str, Any], plural: str = "modeldeployments") -> list[str]:
    """The messages of every CEL rule the manifest breaks, as the API server would list them."""
    schema = crd_schema(plural)
    out: list[str] = []
    _walk(schema, _with_defaults(schema, manifest), "", out)
    return out

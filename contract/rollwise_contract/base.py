"""The base of every API model, and cross-field rules declared once for two judges.

A cross-field rule (weights ascending, exactly one strategy block, ...) is written next to the
model it constrains as a method decorated with `@rule(cel=..., field=..., message=...)`:

- the method body is the Python mirror, run as a pydantic validator, so unit tests and the
  operator see the rule without a cluster;
- the CEL text becomes an `x-kubernetes-validations` entry in the CRD (see `crdgen.py`), so the
  API server rejects the manifest at `kubectl apply` with the same message.

Messages name the field and the fix. The field path is not written by hand: `crdgen` prefixes the
CEL message with the schema path of the model, and `describe_errors` prefixes the pydantic error
with the location of the offending object, so both read
`spec.rollout.canary.steps: setWeight values must strictly increase ...`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

RULE_ERROR = "rollwise_rule"
"""The pydantic error type raised when a cross-field rule does not hold."""

_RULE_ATTR = "__rollwise_rule__"

M = TypeVar("M")


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: the CEL text for the API server and its Python mirror."""

    name: str
    cel: str
    field: str | None
    """Path of the offending field relative to the model (`steps`, `sha256`); None for the model."""
    message: str
    """What is wrong and how to fix it, without the field path (added where the rule is used)."""
    holds: Callable[[Any], bool]


def rule(
    *, cel: str, field: str | None, message: str
) -> Callable[[Callable[[M], bool]], Callable[[M], bool]]:
    """Mark a predicate method as a cross-field rule; it must return True when the object is valid."""

    def mark(holds: Callable[[M], bool]) -> Callable[[M], bool]:
        name = getattr(holds, "__name__", "rule")
        setattr(holds, _RULE_ATTR, Rule(name=name, cel=cel, field=field, message=message, holds=holds))
        return holds

    return mark


class ApiModel(BaseModel):
    """Spec models: camelCase on the wire, attribute docstrings as field docs, unknown fields rejected.

    Frozen, because the planner treats them as values: same input, same output.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
    )

    __rules__: ClassVar[tuple[Rule, ...]] = ()
    __map_keys__: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    """(field, its wire name, the key) for each list that is a map by that key, found once per class:
    every model validated runs these checks, the operator thousands of times a second at scale."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        own = tuple(r for v in vars(cls).values() if isinstance(r := getattr(v, _RULE_ATTR, None), Rule))
        cls.__rules__ = (*cls.__rules__, *own)
        keyed: list[tuple[str, str, str]] = []
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            keys = extra.get("x-kubernetes-list-map-keys") if isinstance(extra, dict) else None
            if isinstance(keys, list) and keys:
                keyed.append((name, info.alias or name, str(keys[0])))
        cls.__map_keys__ = tuple(keyed)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.__rules__:
            target = handler.resolve_ref_schema(schema)
            target["x-rollwise-rules"] = [
                {"rule": r.cel, "field": r.field, "message": r.message} for r in cls.__rules__
            ]
        return schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        cls = type(self)
        if not cls.__rules__ and not cls.__map_keys__:
            return self
        broken = [(r.field, r.message) for r in cls.__rules__ if not r.holds(self)]
        broken += self._duplicate_keys()
        if broken:
            raise PydanticCustomError(
                RULE_ERROR,
                "{summary}",
                {"summary": "; ".join(m for _, m in broken), "rules": broken},
            )
        return self

    def _duplicate_keys(self) -> list[tuple[str | None, str]]:
        """Mirror of `x-kubernetes-list-type: map`: the API server rejects a repeated key itself."""
        out: list[tuple[str | None, str]] = []
        for name, alias, key in type(self).__map_keys__:
            seen: set[object] = set()
            for item in getattr(self, name) or ():
                value = getattr(item, key)
                if value in seen:
                    out.append((alias, f"duplicate {key} {value!r}; each {key} may appear once"))
                seen.add(value)
        return out


class StatusModel(ApiModel):
    """Status models ignore unknown fields: a status written by a newer operator must still load."""

    model_config = ConfigDict(extra="ignore")


def field_path(loc: Sequence[int | str], field: str | None = None) -> str:
    """`("spec", "rollout", "canary", "steps", 2)` -> `spec.rollout.canary.steps[2]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    if field:
        out = f"{out}.{field}" if out else field
    return out


_FIXES = {
    "missing": "required; add this field",
    "extra_forbidden": "unknown field; remove it or fix its spelling (see docs/reference.md)",
}


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_errors(err: ValidationError) -> list[str]:
    """Every problem in one pass, one line each, as `field.path: what is wrong; the fix`.

    The operator puts these lines in the `Ready=False, reason InvalidSpec` condition message.
    """
    lines: list[str] = []
    for e in err.errors():
        loc = e["loc"]
        if e["type"] == RULE_ERROR:
            lines.extend(f"{field_path(loc, f)}: {m}" for f, m in e.get("ctx", {}).get("rules", []))
        elif e["type"] in _FIXES:
            lines.append(f"{field_path(loc)}: {_FIXES[e['type']]}")
        else:
            lines.append(f"{field_path(loc)}: {_shorten(repr(e['input']))} is invalid: {e['msg']}")
    return lines


def map_list(key: str) -> JsonDict:
    """Server-side apply merges these lists item by item, keyed by `key`, which must be unique."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


def count(*flags: bool) -> int:
    """How many of `flags` are set: the body of every "exactly one of" rule."""
    return sum(1 for f in flags if f)

"""The JSON shape of a Kubernetes object as the planner emits it and `kube/` applies it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
"""Any JSON value; recursive, so manifests stay typed without `Any`."""

Manifest: TypeAlias = dict[str, JsonValue]
"""One Kubernetes object (apiVersion, kind, metadata, spec ...), ready for server-side apply."""


def name_of(obj: Manifest) -> str:
    """`metadata.name`, or "" for an object without one."""
    meta = obj.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


def find(objects: Sequence[Manifest], kind: str, name: str) -> Manifest | None:
    """The object of that kind and name among `objects` (one namespace's), if any."""
    return next((o for o in objects if o.get("kind") == kind and name_of(o) == name), None)


def as_list(value: JsonValue) -> list[dict[str, JsonValue]]:
    """The objects of a JSON list; anything else reads as empty (live objects may be malformed)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def as_dict(value: JsonValue) -> dict[str, JsonValue]:
    return dict(value) if isinstance(value, dict) else {}


def annotations_of(obj: Manifest) -> dict[str, str]:
    meta = obj.get("metadata")
    raw = meta.get("annotations") if isinstance(meta, dict) else None
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

"""The JSON shape of a Kubernetes object as the planner emits it and `kube/` applies it."""

from __future__ import annotations

from typing import TypeAlias

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
"""Any JSON value; recursive, so manifests stay typed without `Any`."""

Manifest: TypeAlias = dict[str, JsonValue]
"""One Kubernetes object (apiVersion, kind, metadata, spec ...), ready for server-side apply."""

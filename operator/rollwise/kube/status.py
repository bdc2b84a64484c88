"""Status writes: a merge patch of the status subresource, only when something changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from rollwise.api.v1alpha1 import GROUP, PLURAL, VERSION


def status_differs(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when any field we set differs; fields others own (e.g. Kopf's) are ignored."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items())


def patch_status(api: client.ApiClient, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
    )

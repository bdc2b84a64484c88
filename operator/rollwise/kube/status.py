"""Status writes: a merge patch of the status subresource (the caller decides when)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from kubernetes import client

from rollwise.api.v1alpha1 import GROUP, PLURAL, VERSION


def patch_status(api: client.ApiClient, namespace: str, name: str, status: Mapping[str, Any]) -> str:
    """Patch and return the object's new resourceVersion."""
    patched = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
    )
    return str(cast(dict[str, Any], patched)["metadata"]["resourceVersion"])

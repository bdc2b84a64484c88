"""Server-side apply of desired children, skipping objects that already match.

Why a hash annotation: a server-side apply of an unchanged object does not bump resourceVersion,
but it is still a write request (audited, rate-limited, and counted by our idle-write test). We
stamp each applied object with the hash of the desired manifest and apply only when the live hash
differs. A manual edit of a field we own is put back on the next change or resync of the spec
(the hash is of our intent, not of the live object), which is what Argo Rollouts' pod-template
hash and Flagger's spec checksum also do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "rollwise"
HASH_ANNOTATION = "rollwise.dev/applied-hash"

# apiVersion/kind -> (path prefix, plural). Explicit, so no discovery round-trips at start-up; a
# kind we do not know is a programming error, reported as such.
_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    ("networking.istio.io/v1", "VirtualService"): ("/apis/networking.istio.io/v1", "virtualservices"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
}


@dataclass(frozen=True)
class ObjectKey:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectKey:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])

    def path(self) -> str:
        try:
            prefix, plural = _PATHS[(self.api_version, self.kind)]
        except KeyError:
            raise ValueError(f"no API path known for {self.api_version} {self.kind}") from None
        return f"{prefix}/namespaces/{self.namespace}/{plural}/{self.name}"


def desired_hash(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def stamped(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with its own hash in an annotation (the hash excludes the annotation)."""
    digest = desired_hash(manifest)
    out = json.loads(json.dumps(manifest))
    out["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
    return dict(out)


def is_current(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    if live is None:
        return False
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(HASH_ANNOTATION) == desired_hash(desired))


def _call(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    content_type: str | None = None,
    body: str | dict[str, Any] | None = None,
    missing_ok: bool = False,
) -> bytes | None:
    """One raw request (the typed API classes have no server-side apply); its body, None for a 404
    when `missing_ok`; raises on any other non-2xx.

    `body` is a dict for JSON (the client encodes it) and a pre-encoded string for the apply-patch
    content type (which the client will not encode); a string sent as JSON would be encoded twice
    and rejected with 400.
    """
    headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})
    serialized = api.param_serialize(
        method, path, query_params=query or [], header_params=headers, auth_settings=["BearerToken"]
    )
    resp_method, url, resp_headers, _, post_params = serialized
    response = api.call_api(resp_method, url, resp_headers, body, post_params)
    data: bytes = response.read() or b""  # type: ignore[no-untyped-call]  # untyped upstream
    if missing_ok and response.status == 404:
        return None
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
    return data


def read_object(api: client.ApiClient, key: ObjectKey) -> dict[str, Any] | None:
    """The live object at `key`, or None when there is none (404)."""
    data = _call(api, "GET", key.path(), missing_ok=True)
    if data is None:
        return None
    found: dict[str, Any] = json.loads(data)
    return found


def apply_objects(
    api: client.ApiClient,
    desired: Sequence[Mapping[str, Any]],
    live: Mapping[ObjectKey, Mapping[str, Any]],
) -> list[ObjectKey]:
    """Apply each desired object that is missing or stale; return the keys actually written."""
    written: list[ObjectKey] = []
    for manifest in desired:
        key = ObjectKey.of(manifest)
        if is_current(manifest, live.get(key)):
            continue
        _call(
            api,
            "PATCH",
            key.path(),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
            body=json.dumps(stamped(manifest)),
        )
        written.append(key)
    return written


def delete_objects(api: client.ApiClient, keys: Sequence[ObjectKey]) -> list[ObjectKey]:
    """Delete objects we no longer want (e.g. an old track); already-gone counts as done."""
    deleted: list[ObjectKey] = []
    for key in keys:
        try:
            _call(
                api,
                "DELETE",
                key.path(),
                query=[],
                content_type="application/json",
                body={"propagationPolicy": "Background"},
            )
        except ApiException as err:
            if err.status != 404:
                raise
        deleted.append(key)
    return deleted

"""What leaves the cluster without secrets: a ModelDeployment with its literal env values and the
credentials in its model URIs blanked, for webhook payloads (a webhook is an outside party the
tenant names; the spec's readers are the namespace's own).

Example: `s3://AKIA:secret@bucket/m.onnx?X-Amz-Signature=abc` -> `s3://***@bucket/m.onnx`, and
`{"name": "API_KEY", "value": "hunter2"}` -> `{"name": "API_KEY", "value": "<redacted>"}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollwise_contract.redact import redact_uri

REDACTED = "<redacted>"


def redacted_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `body` with every `env[].value` replaced and every `uri` redacted."""
    out = _walk(body)
    assert isinstance(out, dict)
    return out


def _walk(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _walk(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "env":
            return [_env(v) for v in value]
        return [_walk(v) for v in value]
    if key == "uri" and isinstance(value, str):
        return redact_uri(value)
    return value


def _env(entry: Any) -> Any:
    if isinstance(entry, Mapping):
        return {k: (REDACTED if k == "value" else _walk(v, k)) for k, v in entry.items()}
    return _walk(entry)

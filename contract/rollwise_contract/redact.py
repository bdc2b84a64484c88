"""How a model URI is shown anywhere outside the spec (the server's readiness, errors and logs; the
operator's webhook payloads): one rule for both sides."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_uri(uri: str) -> str:
    """``uri`` with the userinfo starred, the query (where a presigned URL carries its credential
    and signature) and fragment dropped, e.g. ``https://u:p@host:8443/m.onnx?X-Amz-Signature=..`` ->
    ``https://***@host:8443/m.onnx``. A plain path is shown as it is."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. a broken IPv6 literal: show nothing that could be a secret
        return uri.partition("://")[0] + "://***"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

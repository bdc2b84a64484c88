"""Local paths and mounted volumes (a PVC, a ConfigMap, an image layer): nothing to download, but
the same ``--max-model-bytes`` applies, so every scheme refuses the same artifacts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from rollwise_contract.redact import redact_uri

from rollwise_serving.errors import ArtifactTooLargeError, StorageError

SCHEMES = frozenset({"", "file"})


def local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    return Path(unquote(parts.path) if parts.scheme else uri)


def fetch(uri: str, *, max_bytes: int) -> Path:
    path = local_path(uri)
    if not path.is_file():
        raise StorageError(
            f"model artifact {str(path)!r} is not a readable file; check the path or the volume mount"
        )
    if path.stat().st_size > max_bytes:
        raise ArtifactTooLargeError(redact_uri(uri), max_bytes)
    return path

"""Local paths and mounted volumes (a PVC, a ConfigMap, an image layer): nothing to download."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from rollwise_serving.errors import StorageError

SCHEMES = frozenset({"", "file"})


def fetch(uri: str) -> Path:
    parts = urlsplit(uri)
    path = Path(unquote(parts.path) if parts.scheme else uri)
    if not path.is_file():
        raise StorageError(
            f"model artifact {str(path)!r} is not a readable file; check the path or the volume mount"
        )
    return path

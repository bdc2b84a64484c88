"""Where model artifacts come from: one module per URI scheme, chosen by ``fetch_artifact``.

Every scheme ends with a local file. Remote artifacts are downloaded once into the cache
directory, under the pinned digest when there is one (a restart or a second worker reuses a
verified copy instead of downloading again), to a temporary name renamed into place only when
complete, so a crash never leaves a half file that looks cached. Verification of the digest is
the repository's job and happens before anything is deserialised. Messages show the URI through
``redact_uri``: it may carry credentials.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from rollwise_contract.redact import redact_uri

from rollwise_serving.config import Redactor
from rollwise_serving.errors import StorageError
from rollwise_serving.storage import file, http, s3

__all__ = ["StorageError", "cache_path", "digest_of", "fetch_artifact"]


def fetch_artifact(
    uri: str,
    cache_dir: Path,
    *,
    max_bytes: int,
    sha256: str | None = None,
    s3_endpoint: str | None = None,
) -> Path:
    """The artifact as a local file, at most ``max_bytes`` (``--max-model-bytes``) long: a longer
    download is stopped where it crosses the limit and its part removed."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in file.SCHEMES:
        return file.fetch(uri, max_bytes=max_bytes)
    cached = cache_path(uri, cache_dir, sha256)
    if sha256 is not None and cached.is_file() and digest_of(cached) == sha256:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial")
    try:
        if scheme in http.SCHEMES:
            http.fetch(uri, partial, max_bytes=max_bytes)
        elif scheme in s3.SCHEMES:
            s3.fetch(uri, partial, max_bytes=max_bytes, endpoint=s3_endpoint)
        else:
            raise StorageError(
                f"--model-uri {redact_uri(uri)!r}: scheme {scheme!r} is not supported; "
                "use file://, http(s):// or s3://"
            )
    except StorageError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise StorageError(f"cannot fetch {redact_uri(uri)}: {Redactor([uri]).scrub(str(err))}") from err
    partial.replace(cached)
    return cached


def cache_path(uri: str, cache_dir: Path, sha256: str | None) -> Path:
    key = sha256 or "uri-" + hashlib.sha256(uri.encode()).hexdigest()
    name = Path(urlsplit(uri).path).name or "artifact"
    return cache_dir / "artifacts" / key / name


def digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

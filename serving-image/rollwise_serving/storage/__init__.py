"""Where model artifacts come from: one module per URI scheme, chosen by ``fetch_artifact``.

Every scheme ends with a local file, or a verified directory for a directory or archive
artifact (``directory``). Remote artifacts are downloaded once into the cache
directory, under the pinned digest when there is one (a restart or a second worker reuses a
verified copy instead of downloading again), to a temporary name renamed into place only when
complete, so a crash never leaves a half file that looks cached. Verification of the digest is
the repository's job and happens before anything is deserialised. Messages show the URI through
``redact_uri``: it may carry credentials.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote, urlsplit

from rollwise_contract.redact import redact_uri

from rollwise_serving.config import Redactor
from rollwise_serving.errors import ArtifactError, ArtifactTooLargeError, StorageError
from rollwise_serving.storage import directory, file, http, s3

__all__ = ["StorageError", "cache_path", "digest_of", "fetch_artifact"]


def fetch_artifact(
    uri: str,
    cache_dir: Path,
    *,
    max_bytes: int,
    sha256: str | None = None,
    s3_endpoint: str | None = None,
) -> Path:
    """The artifact as a local file (or a verified directory, ``directory``), at most
    ``max_bytes`` (``--max-model-bytes``) long: a longer download is stopped where it crosses the
    limit and its part removed."""
    if directory.is_directory_uri(uri) or directory.is_archive(uri):
        return _fetch_tree(uri, cache_dir, max_bytes=max_bytes, sha256=sha256, s3_endpoint=s3_endpoint)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in file.SCHEMES:
        return file.fetch(uri, max_bytes=max_bytes)
    cached = cache_path(uri, cache_dir, sha256)
    if sha256 is not None and cached.is_file() and digest_of(cached) == sha256:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial")
    _download(uri, partial, max_bytes=max_bytes, s3_endpoint=s3_endpoint)
    partial.replace(cached)
    return cached


def _download(uri: str, dest: Path, *, max_bytes: int, s3_endpoint: str | None) -> None:
    """One remote file to ``dest``; a failed download leaves nothing there."""
    scheme = urlsplit(uri).scheme.lower()
    try:
        if scheme in http.SCHEMES:
            http.fetch(uri, dest, max_bytes=max_bytes)
        elif scheme in s3.SCHEMES:
            s3.fetch(uri, dest, max_bytes=max_bytes, endpoint=s3_endpoint)
        else:
            raise StorageError(
                f"--model-uri {redact_uri(uri)!r}: scheme {scheme!r} is not supported; "
                "use file://, http(s):// or s3://"
            )
    except StorageError:
        dest.unlink(missing_ok=True)
        raise
    except Exception as err:
        dest.unlink(missing_ok=True)
        raise StorageError(f"cannot fetch {redact_uri(uri)}: {Redactor([uri]).scrub(str(err))}") from err


def _fetch_tree(
    uri: str, cache_dir: Path, *, max_bytes: int, sha256: str | None, s3_endpoint: str | None
) -> Path:
    """A directory or archive artifact, verified against its manifest and the pin (``directory``)."""
    shown = redact_uri(uri)
    if sha256 is None:
        raise ArtifactError(
            f"{shown} is a directory or archive artifact: it loads only with a pinned sha256, the "
            f"digest of its {directory.MANIFEST} (sha256sum {directory.MANIFEST}); pass --sha256"
        )
    local = urlsplit(uri).scheme.lower() in file.SCHEMES
    if local and directory.is_directory_uri(uri):
        root = file.local_path(uri)
        if not root.is_dir():
            raise StorageError(f"model artifact {str(root)!r} is not a readable directory; check the mount")
        directory.verify_directory(root, sha256, shown)
        _check_size(root, max_bytes, shown)
        return root
    target = cache_dir / "artifacts" / sha256 / "tree"
    if target.is_dir():
        try:
            directory.verify_directory(target, sha256, shown)
            return target
        except ArtifactError:
            shutil.rmtree(target, ignore_errors=True)  # a damaged copy is fetched again
    partial = target.with_name(f"tree.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if directory.is_archive(uri):
            archive = (
                file.fetch(uri, max_bytes=max_bytes)
                if local
                else _download_archive(uri, cache_dir, max_bytes=max_bytes, s3_endpoint=s3_endpoint)
            )
            directory.unpack(archive, partial, max_bytes=max_bytes, shown=shown)
        else:
            _download_listed(uri, partial, sha256, max_bytes=max_bytes, s3_endpoint=s3_endpoint)
        directory.verify_directory(partial, sha256, shown)
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _download_archive(uri: str, cache_dir: Path, *, max_bytes: int, s3_endpoint: str | None) -> Path:
    dest = cache_path(uri, cache_dir, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _download(uri, dest, max_bytes=max_bytes, s3_endpoint=s3_endpoint)
    return dest


def _download_listed(uri: str, root: Path, sha256: str, *, max_bytes: int, s3_endpoint: str | None) -> None:
    """A remote directory: its manifest first (checked against the pin before anything else is
    fetched), then each file it lists, all within one ``max_bytes`` budget."""
    shown = redact_uri(uri)
    root.mkdir(parents=True)
    manifest = root / directory.MANIFEST
    _download(_join(uri, directory.MANIFEST), manifest, max_bytes=1 << 20, s3_endpoint=s3_endpoint)
    data = manifest.read_bytes()
    got = directory.digest_bytes(data)
    if got != sha256:
        raise ArtifactError(
            f"sha256 mismatch for {shown}: its {directory.MANIFEST} digest is {got}, the pinned one is "
            f"{sha256}; refusing to fetch or load it"
        )
    used = 0

    def get(name: str, dest: Path) -> None:
        nonlocal used
        _download(_join(uri, name), dest, max_bytes=max_bytes - used, s3_endpoint=s3_endpoint)
        used += dest.stat().st_size

    directory.fetch_listed(root, data, shown, get)


def _join(uri: str, name: str) -> str:
    """A file of a directory URI, keeping the directory's query (a presigned URL's signature is
    per object, so such directories are better served as one archive)."""
    base, _, query = uri.partition("?")
    return base + quote(name) + (f"?{query}" if query else "")


def _check_size(root: Path, max_bytes: int, shown: str) -> None:
    if sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) > max_bytes:
        raise ArtifactTooLargeError(shown, max_bytes)


def cache_path(uri: str, cache_dir: Path, sha256: str | None) -> Path:
    key = sha256 or "uri-" + hashlib.sha256(uri.encode()).hexdigest()
    name = Path(urlsplit(uri).path).name or "artifact"
    return cache_dir / "artifacts" / key / name


def digest_of(path: Path) -> str:
    """A file's sha256, or a directory artifact's: its manifest's."""
    return directory.file_digest(path / directory.MANIFEST if path.is_dir() else path)

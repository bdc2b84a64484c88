"""Directory artifacts: a model that is several files, pinned by one digest.

A Hugging Face model, a TorchScript file with its vocabulary, ONNX with external weights: none is
one file. Such an artifact is a directory (a URI ending in ``/``: ``file:///models/x/``,
``pvc://claim/x/``, ``s3://bucket/x/``, ``https://host/x/``) or an archive (``.tar.gz``,
``.tgz``, ``.zip``) holding, at its root, a manifest ``SHA256SUMS`` in ``sha256sum``'s format
(``<hex>  <path>`` per file, made with ``sha256sum $(find . -type f ! -name SHA256SUMS) >
SHA256SUMS``). The pinned sha256 is the manifest's: it fixes every file's digest, so nothing is
loaded until the manifest matches its pin, every listed file matches its line, and (for a local
directory or an archive) no file is there that the manifest does not list. Remote directories are
fetched file by file from the manifest's list into the cache, under the pin, and reused from there
once verified, like single files.

Archives are unpacked by hand, not with ``extractall``: only regular files and directories, no
absolute paths, no ``..``, no links or devices, at most ``MAX_FILES`` files and the artifact size
bound in total, so a hostile archive cannot write outside the cache or fill the disk.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Final

from rollwise_serving.errors import ArtifactError, ArtifactTooLargeError, StorageError

MANIFEST: Final = "SHA256SUMS"
MAX_FILES: Final = 10_000
ARCHIVES: Final = (".tar.gz", ".tgz", ".zip")
_PLAIN = "archives and directories hold plain files"
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def is_directory_uri(uri: str) -> bool:
    return uri.endswith("/")


def is_archive(uri: str) -> bool:
    path = uri.split("?", 1)[0].lower()
    return path.endswith(ARCHIVES)


def parse_manifest(text: str, shown: str) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``SHA256SUMS`` file; every path is checked to stay inside."""
    files: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ArtifactError(
                f"{shown}: {MANIFEST} line {number} is not '<sha256>  <path>'; make it with sha256sum"
            )
        digest, raw = match.groups()
        name = safe_relative(raw.removeprefix("./"), shown)
        if name == MANIFEST:
            raise ArtifactError(f"{shown}: {MANIFEST} lists itself (line {number}); leave it out")
        if name in files:
            raise ArtifactError(f"{shown}: {MANIFEST} lists {name!r} twice")
        files[name] = digest
    if not files:
        raise ArtifactError(f"{shown}: {MANIFEST} lists no files")
    if len(files) > MAX_FILES:
        raise ArtifactError(f"{shown}: {MANIFEST} lists {len(files)} files, over {MAX_FILES}")
    return files


def safe_relative(name: str, shown: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("..", "") for part in path.parts) or "\\" in name:
        raise ArtifactError(f"{shown}: {name!r} is not a plain relative path inside the artifact")
    return str(path)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_directory(root: Path, pinned: str, shown: str, *, strict: bool = True) -> str:
    """Check a directory against its manifest and the pin; returns the manifest's digest.

    ``strict``: refuse files the manifest does not list (a local directory, an unpacked archive)."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ArtifactError(f"{shown}: no {MANIFEST} at the artifact's root; add one (see the docs)")
    data = manifest.read_bytes()
    digest = digest_bytes(data)
    if digest != pinned:
        raise ArtifactError(
            f"sha256 mismatch for {shown}: its {MANIFEST} digest is {digest}, the pinned one is {pinned}; "
            "refusing to load it. Pin the right digest or publish the right artifact."
        )
    files = parse_manifest(data.decode("utf-8", "replace"), shown)
    for name, want in files.items():
        path = root / name
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(f"{shown}: {name!r} is listed in {MANIFEST} but is not a regular file there")
        got = file_digest(path)
        if got != want:
            raise ArtifactError(
                f"sha256 mismatch for {shown}: file {name!r} has digest {got}, {MANIFEST} says {want}; "
                "refusing to load it"
            )
    if strict:
        present = {str(p.relative_to(root)) for p in _files(root)} - {MANIFEST}
        extra = sorted(present - set(files))
        if extra:
            raise ArtifactError(
                f"{shown}: {len(extra)} file(s) not in {MANIFEST}, e.g. {extra[:3]}; list them or remove them"
            )
    return digest


def _files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_symlink():
            raise ArtifactError(
                f"{path.name!r} in the artifact is a symbolic link; artifacts hold plain files"
            )
        if path.is_file():
            yield path


def fetch_listed(
    root: Path,
    manifest_data: bytes,
    shown: str,
    get: Callable[[str, Path], None],
) -> None:
    """Download every file a (pin-verified) manifest lists into ``root`` with ``get(name, dest)``."""
    files = parse_manifest(manifest_data.decode("utf-8", "replace"), shown)
    for name in files:
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        get(name, dest)
    (root / MANIFEST).write_bytes(manifest_data)


def unpack(archive: Path, dest: Path, *, max_bytes: int, shown: str) -> None:
    """Unpack a ``.tar.gz``/``.tgz``/``.zip`` into ``dest`` (which must not exist), safely."""
    dest.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _unzip(archive, dest, max_bytes, shown)
        else:
            _untar(archive, dest, max_bytes, shown)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise StorageError(f"{shown} is not a readable archive ({err})") from err
    except Exception:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _untar(archive: Path, dest: Path, max_bytes: int, shown: str) -> None:
    total = 0
    with tarfile.open(archive, "r:*") as tar:
        for count, member in enumerate(tar, 1):
            if count > MAX_FILES + 1:
                raise ArtifactError(f"{shown} holds more than {MAX_FILES} files")
            raw = member.name.removeprefix("./").rstrip("/")
            name = safe_relative(raw, shown) if raw not in ("", ".") else ""
            if member.isdir():
                if name:
                    (dest / name).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile() or not name:
                raise ArtifactError(
                    f"{shown}: {member.name!r} is a link or device; archives hold plain files"
                )
            total += member.size
            if total > max_bytes:
                raise ArtifactTooLargeError(shown, max_bytes)
            source = tar.extractfile(member)
            assert source is not None
            _copy(source, dest / name, member.size)


def _unzip(archive: Path, dest: Path, max_bytes: int, shown: str) -> None:
    total = 0
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_FILES + 1:
            raise ArtifactError(f"{shown} holds more than {MAX_FILES} files")
        for info in infos:
            if info.is_dir():
                (dest / safe_relative(info.filename.rstrip("/"), shown)).mkdir(parents=True, exist_ok=True)
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode not in (0, 0o100000):
                raise ArtifactError(
                    f"{shown}: {info.filename!r} is a link or device; archives hold plain files"
                )
            total += info.file_size
            if total > max_bytes:
                raise ArtifactTooLargeError(shown, max_bytes)
            with zf.open(info) as source:
                _copy(source, dest / safe_relative(info.filename, shown), info.file_size)


def _copy(source: IO[bytes], target: Path, size: int) -> None:
    """Copy at most ``size`` bytes (what the archive declared: a lying entry cannot write more)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    left = size
    with target.open("wb") as out:
        while left > 0:
            chunk = source.read(min(left, 1 << 20))
            if not chunk:
                break
            out.write(chunk)
            left -= len(chunk)

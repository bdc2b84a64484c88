"""http(s) downloads, streamed to disk so a large artifact never sits in memory, and cut at
``--max-model-bytes`` so an endless one cannot fill the disk."""

from __future__ import annotations

from pathlib import Path

import httpx
from rollwise_contract.redact import redact_uri

from rollwise_serving.errors import ArtifactTooLargeError, StorageError

SCHEMES = frozenset({"http", "https"})
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def fetch(uri: str, dest: Path, *, max_bytes: int) -> None:
    shown = redact_uri(uri)  # the URI may carry credentials: a presigned query, user:password@
    with httpx.stream("GET", uri, timeout=TIMEOUT, follow_redirects=True) as response:
        if response.status_code != 200:
            raise StorageError(
                f"GET {shown} answered HTTP {response.status_code}; check the URL and its access"
            )
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise ArtifactTooLargeError(shown, max_bytes)  # refused before a byte is written
        size = 0
        with dest.open("wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                size += len(chunk)
                if size > max_bytes:  # a Content-Length can lie, and chunked bodies have none
                    raise ArtifactTooLargeError(shown, max_bytes)
                out.write(chunk)

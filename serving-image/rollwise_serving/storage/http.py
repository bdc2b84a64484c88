"""http(s) downloads, streamed to disk so a large artifact never sits in memory."""

from __future__ import annotations

from pathlib import Path

import httpx

from rollwise_serving.errors import StorageError

SCHEMES = frozenset({"http", "https"})
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def fetch(uri: str, dest: Path) -> None:
    with httpx.stream("GET", uri, timeout=TIMEOUT, follow_redirects=True) as response:
        if response.status_code != 200:
            raise StorageError(
                f"GET {uri} answered HTTP {response.status_code}; check the URL and its access"
            )
        with dest.open("wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)

"""Live traffic to a model's Service, each answer recorded: the demo's load and the tests' load.

Every request is one OIP v2 inference on an Iris row (one row of each class, cycled, so class
shares mean something for drift checks); an answer is (time sent, HTTP status or 0 when nothing
answered, the model version that answered).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
BODIES = [
    json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": r}]}).encode()
    for r in ROWS
]
Answer = tuple[float, int, str]


def send(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One inference request: (HTTP status or 0 when unreachable, the answering model version)."""
    req = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, str(json.load(resp).get("model_version", ""))
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def send_many(url: str, headers: list[dict[str, str]], workers: int = 16) -> list[tuple[int, str]]:
    """One request per headers entry, `workers` at a time, answers in the same order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: send(url, BODIES[i % len(BODIES)], headers[i]), range(len(headers))))


class Looping(Protocol):
    """A loop that runs until its `stop` event is set."""

    stop: threading.Event

    def run(self) -> None: ...


L = TypeVar("L", bound=Looping)


@contextmanager
def in_background(loop: L) -> Iterator[L]:
    """Run `loop.run` in a thread for the block; stop it and wait for it (10 s at most) after."""
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.stop.set()
        thread.join(10)


@dataclass
class Load:
    """Requests at a steady rate from a thread until stopped (or `limit_seconds`)."""

    url: str
    rate_per_second: float = 25.0
    limit_seconds: float = 600.0
    headers: Callable[[int], dict[str, str]] | None = None
    bodies: list[bytes] = field(default_factory=lambda: list(BODIES))
    """The request bodies, cycled (the three Iris rows by default)."""
    results: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_seconds
        sent = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            code, version = send(
                self.url, self.bodies[sent % len(self.bodies)], self.headers(sent) if self.headers else None
            )
            sent += 1
            self.results.append((started, code, version))
            self.stop.wait(max(0.0, 1 / self.rate_per_second - (time.monotonic() - started)))

    def running(self) -> AbstractContextManager[Load]:
        return in_background(self)

    def since(self, start: float) -> list[Answer]:
        return [r for r in list(self.results) if r[0] >= start]

    def failures_since(self, start: float) -> list[Answer]:
        return [r for r in self.since(start) if r[1] != 200]

    def versions_since(self, start: float) -> set[str]:
        return {v for _, code, v in self.since(start) if code == 200}

    def steady(self, count: int = 20, timeout_seconds: float = 30) -> None:
        """Wait for `count` answers; raise naming the URL if they do not come."""
        deadline = time.monotonic() + timeout_seconds
        while len(self.results) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.results)} of {count} requests to {self.url} in {timeout_seconds}s"
                )
            time.sleep(0.2)

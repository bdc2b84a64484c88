"""Prediction cache: an in-process LRU in front of an optional shared Redis.

Keyed by the pod's Kubernetes namespace, model name, version, the digest of the artifact actually
loaded, the outputs asked for and a hash of the canonical input bytes (dtype, shape and data of
each tensor): ``rollwise:<namespace>:<name>:<version>:<sha256>:<hash>``. So two tenants' ``fraud``/
``v1`` never share answers in a shared Redis, a new artifact published under the same version (no
digest pinned) never reads its predecessor's answers, and a Redis ACL can confine each tenant to
``rollwise:<namespace>:*``. The digest is the one the repository computed on load, not the pinned
one: it is there for unpinned artifacts too.

Values are the encoded ``outputs`` JSON behind the predicted labels and scores (`pack_entry`), so
a hit skips the model *and* the encoder and is still counted in the class shares and prediction
histograms the judge compares (a cached answer is an answer users got).

Redis is an optimisation and never a dependency: every call has a short timeout, a failure counts
``rollwise_cache_total{tier="redis",result="error"}`` and reads as a miss, and after a failure
Redis is left alone for a second (each skipped look-up still counts as an error) so an outage
costs no latency. Writes to Redis are fire-and-forget and bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from rollwise_serving.metrics import ServerMetrics

log = logging.getLogger("rollwise_serving.cache")
REDIS_TIMEOUT_SECONDS = 0.05
REDIS_CONNECT_TIMEOUT_SECONDS = 0.25
"""A connection is made once and pooled; with ``rediss://`` making it includes a TLS handshake,
which 50 ms does not always cover on a loaded node. After a failure the backoff below keeps
requests from paying this again for a second."""
REDIS_BACKOFF_SECONDS = 1.0
MAX_PENDING_WRITES = 256


ENTRY_FORMAT = b"rw2"
"""Marks an entry `unpack_entry` reads; an entry of another format (an older server's, in a shared
Redis) reads as a miss."""


@dataclass(frozen=True)
class CachedPrediction:
    labels: np.ndarray[Any, Any] | None
    scores: np.ndarray[Any, Any] | None
    outputs: bytes


def pack_entry(
    labels: np.ndarray[Any, Any] | None, scores: np.ndarray[Any, Any] | None, outputs: bytes
) -> bytes:
    head = orjson.dumps(
        {
            "labels": labels.tolist() if labels is not None else None,
            "scores": scores.astype(np.float64).tolist() if scores is not None else None,
        }
    )
    return ENTRY_FORMAT + len(head).to_bytes(4, "big") + head + outputs


def unpack_entry(value: bytes) -> CachedPrediction | None:
    """The entry `pack_entry` made, or None for anything else."""
    if not value.startswith(ENTRY_FORMAT) or len(value) < len(ENTRY_FORMAT) + 4:
        return None
    start = len(ENTRY_FORMAT) + 4
    size = int.from_bytes(value[len(ENTRY_FORMAT) : start], "big")
    try:
        head = orjson.loads(value[start : start + size])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(head, dict):
        return None
    labels, scores = head.get("labels"), head.get("scores")
    return CachedPrediction(
        np.asarray(labels, dtype=object) if isinstance(labels, list) else None,
        np.asarray([math.nan if v is None else v for v in scores], dtype=np.float64)
        if isinstance(scores, list)
        else None,
        value[start + size :],
    )


def cache_key(
    prefix: bytes, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str] | None
) -> bytes:
    h = hashlib.blake2b(prefix, digest_size=20)
    h.update(orjson.dumps(list(outputs) if outputs is not None else None))
    for name in sorted(inputs):
        array = inputs[name]
        h.update(name.encode() + b"\0" + array.dtype.str.encode() + str(array.shape).encode())
        if array.dtype.kind == "O":
            h.update(orjson.dumps(array.ravel().tolist()))
        else:
            h.update(np.ascontiguousarray(array).tobytes())
    return h.digest()


class PredictionCache:
    def __init__(
        self,
        metrics: ServerMetrics,
        *,
        size: int,
        redis_url: str | None,
        ttl_seconds: int,
        namespace: str,
        redis_ca_file: Path | None = None,
    ) -> None:
        """``namespace`` is the key prefix up to the artifact digest, e.g. ``rollwise:team-a:iris:v1:``;
        ``redis_url`` may carry a password (``rediss://:pw@host:6380/0``, ``redis://user:pw@...``);
        ``rediss://`` verifies the server's certificate and host name, against ``redis_ca_file``
        when given."""
        self.size = size
        self.ttl_seconds = ttl_seconds
        self.namespace = namespace.encode()
        self._memory: OrderedDict[bytes, bytes] = OrderedDict()
        self._redis: Any = None
        if redis_url:
            import redis.asyncio  # noqa: PLC0415 - only when configured

            tls: dict[str, Any] = {}
            if redis_url.startswith("rediss://"):
                tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
                if redis_ca_file is not None:
                    tls["ssl_ca_certs"] = str(redis_ca_file)
            self._redis = redis.asyncio.Redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
                retry_on_timeout=False,
                **tls,
            )
        self._redis_down_until = 0.0
        self._writes: set[asyncio.Task[None]] = set()
        m = metrics.cache
        self._mem_hit, self._mem_miss = m[("memory", "hit")], m[("memory", "miss")]
        self._redis_hit, self._redis_miss, self._redis_error = (
            m[("redis", "hit")],
            m[("redis", "miss")],
            m[("redis", "error")],
        )

    @property
    def enabled(self) -> bool:
        return self.size > 0 or self._redis is not None

    def key(
        self, digest: str, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str] | None
    ) -> bytes:
        """The key of an answer of the artifact whose sha256 is ``digest``."""
        prefix = self.namespace + digest.encode() + b":"
        return prefix + cache_key(prefix, inputs, outputs).hex().encode()

    async def get(self, key: bytes) -> bytes | None:
        if self.size:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
                self._mem_hit.inc()
                return value
            self._mem_miss.inc()
        if self._redis is None:
            return None
        if time.monotonic() < self._redis_down_until:
            self._redis_error.inc()
            return None
        try:
            value = await self._redis.get(key)
        except Exception as err:  # any Redis failure is a miss, never an error to the client
            self._redis_failed(err)
            return None
        if value is None:
            self._redis_miss.inc()
            return None
        self._redis_hit.inc()
        self._remember(key, value)
        return bytes(value)

    def put(self, key: bytes, value: bytes) -> None:
        self._remember(key, value)
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return
        if len(self._writes) >= MAX_PENDING_WRITES:
            return
        task = asyncio.create_task(self._write(key, value))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: bytes, value: bytes) -> None:
        try:
            await self._redis.set(key, value, ex=self.ttl_seconds)
        except Exception as err:
            self._redis_failed(err)

    def _remember(self, key: bytes, value: bytes) -> None:
        if not self.size:
            return
        self._memory[key] = value
        self._memory.move_to_end(key)
        if len(self._memory) > self.size:
            self._memory.popitem(last=False)

    def _redis_failed(self, err: Exception) -> None:
        self._redis_error.inc()
        if time.monotonic() >= self._redis_down_until:
            log.warning(
                "redis cache unavailable (%s); serving without it for %.0fs", err, REDIS_BACKOFF_SECONDS
            )
        self._redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

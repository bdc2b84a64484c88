"""Prometheus as a metric provider: one instant query -> one `Measurement`.

What can go wrong, and what it becomes (never a pass: `plan/analysis.py` fails on errors):
- Prometheus unreachable, too slow, or answering 5xx/503: retried with exponential backoff and
  jitter (`RetryPolicy`), then a `QueryError` naming the last cause.
- A query Prometheus rejects (HTTP 400/422: bad PromQL, bad placeholder): a `QueryError` with
  Prometheus' own message, at once: retrying cannot fix a query.
- An empty vector or NaN: `NoData`. Several series: a `QueryError` asking for an aggregation,
  since a check must yield one number.
- Failures in a row open the `CircuitBreaker`: queries fail at once, without a request, until
  `reset_after` has passed; then one trial query decides whether it closes again. The breaker is
  an object the caller keeps (one per Prometheus URL), so a dead Prometheus is not hammered by
  every ModelDeployment's analysis, and its state survives between passes.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import httpx

from rollwise import telemetry
from rollwise.plan.measurement import Counts, Measurement, NoData, QueryError, Value

DEFAULT_TIMEOUT_SECONDS = 5.0
"""Per request, all of it (connect to last byte); an analysis interval is at least 5 s, and a slow
Prometheus is a failed check."""
MAX_VALUE_BYTES = 64 * 1024
"""A one-number answer: one series with its labels is well under 1 KiB; a query selecting
thousands of series (`{__name__=~".+"}`) is refused at this size instead of parsed."""
MAX_GROUPED_BYTES = 4 * 1024 * 1024
"""A grouped answer: `MAX_GROUPS` groups of about 300 bytes each, with room to spare."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts.

    The delay before retry `n` (1-based) is uniform in [d/2, d], d = min(max, base * 2**(n-1)):
    "equal jitter", so peers retrying at once spread out but still back off.
    Example, base 0.2 s: 0.1-0.2 s, then 0.2-0.4 s.
    """

    attempts: int = 3
    base_delay_seconds: float = 0.2
    max_delay_seconds: float = 2.0

    def delay_seconds(self, retry: int, rng: random.Random) -> float:
        d: float = min(self.max_delay_seconds, self.base_delay_seconds * 2.0 ** (retry - 1))
        return d / 2 + rng.random() * d / 2


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class CircuitBreaker:
    """Stops querying a Prometheus that keeps failing; the caller keeps one per URL.

    Opens after `failure_threshold` failed queries in a row (each after its retries); while open,
    `allow` refuses until `reset_after_seconds` passed, then lets one trial through (half-open):
    success closes it, failure opens it again. Time comes from `clock` (monotonic seconds).
    """

    failure_threshold: int = 3
    reset_after_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    last_error: str = ""

    def allow(self) -> bool:
        if self.state is BreakerState.OPEN and self.opened_at is not None:
            if self.clock() - self.opened_at < self.reset_after_seconds:
                return False
            self.state = BreakerState.HALF_OPEN
        return True

    def record_success(self) -> None:
        self.state, self.failures, self.opened_at, self.last_error = BreakerState.CLOSED, 0, None, ""

    def record_failure(self, detail: str) -> None:
        self.failures += 1
        self.last_error = detail
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self.state, self.opened_at = BreakerState.OPEN, self.clock()

    def retry_in_seconds(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_after_seconds - (self.clock() - self.opened_at))


class _UnavailableError(Exception):
    """Prometheus did not answer usefully; worth retrying."""


@dataclass
class PrometheusProvider:
    """Instant queries against `url` (e.g. `http://prometheus.monitoring:9090`)."""

    url: str
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    client: httpx.Client | None = None
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def query(self, promql: str, at: datetime, by: Sequence[str] = ()) -> Measurement:
        """Evaluate `promql` at `at` (the end of its ranges); `by` asks for `Counts` by those labels."""
        if not self.url:
            return QueryError("no Prometheus URL is configured (ROLLWISE_PROMETHEUS_URL)")
        if not self.breaker.allow():
            return QueryError(
                f"circuit open after {self.breaker.failures} failed queries in a row "
                f"(last: {self.breaker.last_error}); next try in {self.breaker.retry_in_seconds():.0f}s"
            )
        last = ""
        for attempt in range(1, self.retry.attempts + 1):
            if attempt > 1:
                self.sleep(self.retry.delay_seconds(attempt - 1, self.rng))
            try:
                result = self._once(promql, at, tuple(by))
            except _UnavailableError as err:
                telemetry.PROVIDER_QUERIES.labels("prometheus", "unavailable").inc()
                last = str(err)
                continue
            telemetry.PROVIDER_QUERIES.labels("prometheus", _outcome(result)).inc()
            self.breaker.record_success()
            return result
        detail = f"Prometheus at {self.url} failed {self.retry.attempts} attempt(s): {last}"
        self.breaker.record_failure(last)
        return QueryError(detail)

    def _once(self, promql: str, at: datetime, by: tuple[str, ...]) -> Measurement:
        params = {"query": promql, "time": f"{at.timestamp():.3f}"}
        endpoint = self.url.rstrip("/") + "/api/v1/query"
        cap = MAX_GROUPED_BYTES if by else MAX_VALUE_BYTES
        try:
            status, raw = self._read(endpoint, params, cap)
        except httpx.TimeoutException as err:
            raise _UnavailableError(
                f"timed out after {self.timeout_seconds:g}s ({type(err).__name__})"
            ) from err
        except httpx.HTTPError as err:
            raise _UnavailableError(f"{type(err).__name__}: {err}") from err
        if raw is None:
            return QueryError(
                f"the answer is larger than {cap // 1024} KiB, more than a check reads: the query "
                "selects too many series; aggregate it, e.g. sum(...)"
            )
        if status >= 500:
            raise _UnavailableError(f"HTTP {status}")
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise _UnavailableError(f"HTTP {status} with a body that is not JSON") from err
        if not isinstance(body, dict):
            raise _UnavailableError(f"HTTP {status} with a body that is not a JSON object")
        if status >= 400 or body.get("status") != "success":
            kind = body.get("errorType", f"HTTP {status}")
            error = str(body.get("error", ""))[:500]
            return QueryError(f"Prometheus rejected the query ({kind}): {error}: {promql}")
        data = body.get("data") or {}
        return _counts(data, by) if by else _measurement(data)

    def _read(self, endpoint: str, params: dict[str, str], cap: int) -> tuple[int, bytes | None]:
        """The status and body, read within one deadline and at most `cap` bytes (None past it):
        an answer of hundreds of MB is cut off, not parsed, and a trickle cannot outlast the
        deadline (each read waits at most what is left of it)."""
        deadline = time.monotonic() + self.timeout_seconds
        client = self.client or httpx.Client()
        try:
            # Identity encoding: the cap then bounds what is parsed, not only what crosses the wire.
            headers = {"Accept-Encoding": "identity"}
            with client.stream(
                "GET", endpoint, params=params, headers=headers, timeout=self.timeout_seconds
            ) as response:
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    raise httpx.DecodingError(
                        "Prometheus answered with a content encoding it was not asked for"
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_raw():
                    size += len(chunk)
                    if size > cap:
                        return response.status_code, None
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer took longer than the deadline")
                return response.status_code, b"".join(chunks)
        finally:
            if self.client is None:
                client.close()


def _outcome(result: Measurement) -> str:
    """The label of a query Prometheus answered (bench/operator_scale.py reads queries/s from it)."""
    match result:
        case Value():
            return "value"
        case NoData():
            return "no_data"
        case _:
            return "rejected"


def _measurement(data: dict[str, object]) -> Measurement:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _number(result[1])
    if kind == "vector" and isinstance(result, list):
        if not result:
            return NoData("the query returned an empty vector")
        if len(result) > 1:
            return QueryError(
                f"the query returned {len(result)} series; a check needs one number: "
                "aggregate it, e.g. sum(...)"
            )
        sample = result[0]
        value = sample.get("value") if isinstance(sample, dict) else None
        if isinstance(value, list) and len(value) == 2:
            return _number(value[1])
    return QueryError(f"unexpected result type {kind!r}; a check needs an instant vector or scalar")


MAX_GROUPS = 4096
"""Groups a grouped answer may have. successRate has at most 2 tracks x 4 outcomes, latencyP99 3 x
15 buckets, inputDrift 3 tracks x features x bins (about 100 features of 12 bins; watch one
`feature` on a wider model): a bound on what is parsed, not a limit any of them meets."""


def _counts(data: dict[str, object], by: tuple[str, ...]) -> Measurement:
    """A grouped instant vector as `Counts` keyed by the `by` labels' values; NaN samples skipped."""
    kind, result = data.get("resultType"), data.get("result")
    if kind != "vector" or not isinstance(result, list):
        return QueryError(f"unexpected result type {kind!r}; grouped counts need an instant vector")
    if len(result) > MAX_GROUPS:
        return QueryError(f"the query returned {len(result)} groups, more than {MAX_GROUPS}")
    values: dict[tuple[str, ...], float] = {}
    for sample in result:
        labels = sample.get("metric") if isinstance(sample, dict) else None
        value = sample.get("value") if isinstance(sample, dict) else None
        if not isinstance(labels, dict) or not isinstance(value, list) or len(value) != 2:
            return QueryError("a grouped sample without labels or value")
        number = _number(value[1])
        if isinstance(number, Value):
            key = tuple(str(labels.get(label, "")) for label in by)
            values[key] = values.get(key, 0.0) + number.value
    return Counts(values)


def _number(raw: object) -> Measurement:
    try:
        value = float(str(raw))
    except ValueError:
        return QueryError(f"not a number: {raw!r}")
    if math.isnan(value):
        return NoData("the query returned NaN (e.g. 0/0: no requests in the window)")
    return Value(value)

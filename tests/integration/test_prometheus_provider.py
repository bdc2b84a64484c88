"""The Prometheus provider against a real Prometheus scraping a real exporter process.

Debian's `/usr/bin/prometheus` is started on a free loopback port with a 1 s scrape of a tiny
exporter (prometheus_client in a child process) that serves known values. Both are stopped by
PID. A missing binary fails the test with the command that installs it; it never skips.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.metrics.prometheus import BreakerState, CircuitBreaker, PrometheusProvider, RetryPolicy
from rollwise.plan.analysis import (
    requests_for,
    samples_query,
    start,
    success_rate_query,
)
from rollwise.plan.compare import SUCCESS_GROUPS
from rollwise.plan.measurement import Counts, NoData, QueryError, Value
from rollwise.plan.scope import scoped

from tests.unit.manifests import base

EXPORTER = """
import sys, time
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
registry = CollectorRegistry()
Gauge("known_value", "a fixed number", registry=registry).set(42.5)
pair = Gauge("two_series", "two series", ["side"], registry=registry)
pair.labels("a").set(1)
pair.labels("b").set(2)
many = Gauge("many_series", "a query that selects thousands of series", ["i"], registry=registry)
for i in range(3000):
    many.labels(str(i)).set(i)
labels = ["model", "version", "track", "outcome"]
requests = Counter("rollwise_requests_total", "requests", labels, registry=registry)
start_http_server(int(sys.argv[1]), addr="127.0.0.1", registry=registry)
started = time.monotonic()
while True:
    requests.labels("iris", "2.0.0", "candidate", "success").inc(10)
    requests.labels("iris", "1.0.0", "stable", "client_error").inc(1)
    if time.monotonic() - started > 8:  # a series first seen late: it counts from zero
        requests.labels("iris", "2.0.0", "candidate", "server_error").inc(3)
    time.sleep(0.1)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Prom:
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("exporter")
    port = free_port()
    log = tmp / "exporter.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", EXPORTER, str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200,
            30,
            "the exporter",
            log,
        )
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def prometheus(exporter: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus is not installed; run `apt-get install prometheus`", pytrace=False)
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: known\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n"
        # The target labels Kubernetes discovery gives a candidate pod of ModelDeployment ml/iris:
        # the built-in queries select a ModelDeployment's own pods by them.
        "        labels: {namespace: ml, pod: iris-candidate-5d8f7c9b4-x2x9z}\n"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/-/ready", timeout=1).status_code == 200, 60, "Prometheus", log)

        def scraped_twice() -> bool:
            r = httpx.get(
                url + "/api/v1/query", params={"query": "count_over_time(known_value[1m])"}, timeout=2
            )
            result = r.json()["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 3

        wait_for(scraped_twice, 60, "three scrapes of the exporter", log)
        yield Prom(url, proc)
    finally:
        stop(proc)


def now() -> datetime:
    return datetime.now(UTC)


def provider(url: str, **kw: object) -> PrometheusProvider:
    return PrometheusProvider(url, sleep=lambda _: None, **kw)  # type: ignore[arg-type]


def test_a_known_value_is_measured(prometheus: Prom) -> None:
    assert provider(prometheus.url).query("known_value", now()) == Value(42.5)


def test_an_arithmetic_scalar_is_a_value(prometheus: Prom) -> None:
    assert provider(prometheus.url).query("scalar(known_value) * 2", now()) == Value(85.0)


def test_an_empty_vector_is_no_data(prometheus: Prom) -> None:
    assert isinstance(provider(prometheus.url).query('known_value{job="nope"}', now()), NoData)


def test_nan_is_no_data(prometheus: Prom) -> None:
    m = provider(prometheus.url).query("known_value - known_value / 0 * 0", now())
    assert isinstance(m, NoData), m


def test_several_series_are_an_error_asking_for_an_aggregation(prometheus: Prom) -> None:
    m = provider(prometheus.url).query("two_series", now())
    assert isinstance(m, QueryError) and "2 series" in m.detail and "sum(" in m.detail


def test_bad_promql_is_an_error_with_prometheus_message_and_no_retry(prometheus: Prom) -> None:
    sleeps: list[float] = []
    p = PrometheusProvider(prometheus.url, sleep=sleeps.append)
    m = p.query("sum(rate(known_value[", now())
    assert isinstance(m, QueryError)
    assert "bad_data" in m.detail and "sum(rate(known_value[" in m.detail
    assert sleeps == []  # a query Prometheus rejects is not retried
    assert p.breaker.state is BreakerState.CLOSED  # and Prometheus itself is fine


def test_an_answer_of_thousands_of_series_is_refused_by_size_not_parsed(prometheus: Prom) -> None:
    """`{__name__=~".+"}`-style answers: cut off at the byte cap with an error asking to aggregate."""
    m = provider(prometheus.url).query("many_series", now())
    assert isinstance(m, QueryError) and "larger than 64 KiB" in m.detail and "sum(" in m.detail
    grouped = provider(prometheus.url).query("many_series", now(), by=("i",))
    assert isinstance(grouped, Counts) and len(grouped.values) == 3000  # under the grouped cap


def test_a_scoped_custom_query_parses_and_reads_only_its_namespace(prometheus: Prom) -> None:
    """The exporter's series carry namespace=ml (its target labels), as a tenant's pods' would."""
    p = provider(prometheus.url)
    assert p.query(scoped("known_value", "ml"), now()) == Value(42.5)
    assert isinstance(p.query(scoped("known_value", "other-team"), now()), NoData)
    everything = scoped('count({__name__=~".+"})', "other-team")
    assert isinstance(p.query(everything, now()), NoData)
    mine = p.query(scoped('count({__name__=~"many_series|known_value"})', "ml"), now())
    assert mine == Value(3001.0)


def test_the_builtin_queries_parse_on_a_real_prometheus(prometheus: Prom) -> None:
    doc = base()
    doc["spec"]["model"]["version"] = "2.0.0"
    doc["spec"]["rollout"]["analysis"]["metrics"] = [
        {"name": "ok", "builtin": "successRate", "threshold": {"min": 99}},
        {"name": "p99", "builtin": "latencyP99", "threshold": {"max": 0.5}},
        {"name": "drift", "builtin": "predictionDrift", "threshold": {"max": 0.2}},
        {"name": "input", "builtin": "inputDrift", "feature": "petal_length", "threshold": {"max": 0.2}},
        {"name": "custom", "query": "known_value", "threshold": {"max": 100}, "compare": {"worseBy": 1}},
    ]
    md = ModelDeployment.model_validate(doc)
    spec = md.spec.rollout.analysis
    assert spec is not None
    p = provider(prometheus.url)
    at = now()
    analysis = start(spec, step=0, now=at - timedelta(seconds=5))
    for request in requests_for(md, spec, analysis, step=0, at=at):
        m = p.query(request.promql, at, request.by)
        assert not isinstance(m, QueryError), (request.metric, m)
        if request.metric in ("p99", "drift"):  # the exporter keeps no latency or predictions
            assert m == Counts({}), (request.metric, m)  # no counts, not an error
        if request.metric == "custom":  # one query, a value per track
            assert m == Counts({("candidate",): 42.5, ("stable",): 42.5}), m
    samples = p.query(samples_query(md, spec), now())
    assert isinstance(samples, Value) and samples.value > 0


def _raw_increments(url: str, *, since: datetime, at: datetime) -> dict[tuple[str, str], float]:
    """What successRate's counts must be, from the raw samples: per series, its last sample up to
    `at` minus its last sample up to `since` (zero without one), summed by track and outcome."""
    r = httpx.get(
        url + "/api/v1/query",
        params={"query": "rollwise_requests_total[10m]", "time": f"{at.timestamp():.3f}"},
        timeout=5,
    )
    out: dict[tuple[str, str], float] = {}
    for series in r.json()["data"]["result"]:
        samples = [(float(t), float(v)) for t, v in series["values"]]
        before = [v for t, v in samples if t <= since.timestamp()]
        key = (series["metric"]["track"], series["metric"]["outcome"])
        out[key] = out.get(key, 0.0) + samples[-1][1] - (before[-1] if before else 0.0)
    return out


def test_success_rate_counts_are_exact_sample_differences_on_a_real_prometheus(prometheus: Prom) -> None:
    """successRate's query gives whole numbers of requests, exactly what the raw samples say, for a
    series seen before the analysis started and one first seen after (no `increase()` extrapolation)."""
    doc = base()
    doc["spec"]["model"]["version"] = "2.0.0"
    md = ModelDeployment.model_validate(doc)
    wait_for(
        lambda: (
            "server_error"
            in httpx.get(
                prometheus.url + "/api/v1/query", params={"query": "rollwise_requests_total"}, timeout=2
            ).text
        ),
        30,
        "the late series",
        Path("/dev/null"),
    )
    at = now()
    since = at - timedelta(seconds=6)
    counts = provider(prometheus.url).query(success_rate_query(md, since=since, at=at), at, SUCCESS_GROUPS)
    assert isinstance(counts, Counts), counts
    assert dict(counts.values) == _raw_increments(prometheus.url, since=since, at=at)
    assert counts.get("candidate", "success") > 0 and counts.get("stable", "client_error") > 0
    assert all(v == int(v) for v in counts.values.values()), counts


def test_a_dead_prometheus_is_an_error_and_opens_the_breaker(prometheus: Prom, exporter: int) -> None:
    clock = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_after_seconds=30, clock=lambda: clock[0])
    sleeps: list[float] = []
    p = PrometheusProvider(
        prometheus.url,
        breaker=breaker,
        retry=RetryPolicy(attempts=3, base_delay_seconds=0.2, max_delay_seconds=2),
        timeout_seconds=1,
        sleep=sleeps.append,
    )
    assert p.query("known_value", now()) == Value(42.5)
    stop(prometheus.proc)
    first = p.query("known_value", now())
    assert isinstance(first, QueryError) and "failed 3 attempt(s)" in first.detail
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4  # exponential, with jitter
    assert breaker.state is BreakerState.CLOSED
    second = p.query("known_value", now())
    assert isinstance(second, QueryError)
    assert breaker.state is BreakerState.OPEN
    sleeps.clear()
    third = p.query("known_value", now())
    assert isinstance(third, QueryError) and "circuit open" in third.detail
    assert sleeps == []  # no request, no retry while open
    clock[0] = 31.0  # half-open: one trial, which fails again and reopens
    fourth = p.query("known_value", now())
    assert isinstance(fourth, QueryError) and "failed 3 attempt(s)" in fourth.detail
    assert breaker.state is BreakerState.OPEN


def test_an_unreachable_port_is_an_error_not_a_pass() -> None:
    p = provider(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(attempts=2))
    m = p.query("up", now())
    assert isinstance(m, QueryError) and "ConnectError" in m.detail


def test_a_trickling_prometheus_is_cut_off_at_the_deadline() -> None:
    """A byte every half second passes every per-read timeout; the whole read has one deadline."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    stop_event = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not stop_event.wait(0.5):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        m = provider(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=1), timeout_seconds=2.0).query(
            "up", now()
        )
        elapsed = time.monotonic() - started
    finally:
        stop_event.set()
        server.close()
    assert isinstance(m, QueryError) and "timed out after 2s" in m.detail
    assert elapsed < 10  # the trickle would take 14 hours

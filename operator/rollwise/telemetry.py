"""The operator's own Prometheus metrics (not the model server's: those are in serving-image/).

Exposed on ROLLWISE_METRICS_PORT (9100) at /metrics; the chart's pod annotations opt it in.
"""

from __future__ import annotations

from collections.abc import Iterator
from threading import Lock

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

RECONCILES = Counter(
    "rollwise_operator_reconciles_total",
    "Reconcile passes by result: ok, invalid (spec rejected by the operator), error (retried), or "
    "unchanged (woken by our own write coming back: nothing planned).",
    ["result"],
)
# Every result has a series from the start (at 0), so an error rate reads 0, not "no data".
for _result in ("ok", "invalid", "error", "unchanged"):
    RECONCILES.labels(_result)
RECONCILE_SECONDS = Histogram(
    "rollwise_operator_reconcile_duration_seconds",
    "Time of one reconcile pass: observe, plan, apply, patch status.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter(
    "rollwise_operator_api_writes_total",
    "Writes the operator sent to the API server, by kind and verb (an idle operator sends none).",
    ["kind", "verb"],
)
PROVIDER_QUERIES = Counter(
    "rollwise_operator_provider_queries_total",
    "Requests sent to a metric provider, by provider and outcome (value, no_data, rejected,"
    " unavailable); each retry counts, a query refused by an open circuit breaker sends nothing.",
    ["provider", "outcome"],
)


class PhaseCollector(Collector):
    """ModelDeployments by phase, and each one's phase and candidate weight, from the last reconcile
    of each (forgotten on deletion).

    The per-object series name the object with `model_deployment_namespace` and `model_deployment`,
    never `namespace`: Prometheus gives every target a `namespace` label (the operator's own), which
    would rename ours to `exported_namespace` unless the scrape honours labels. Only the current
    phase has a series (value 1), so a dashboard reads the phase as that series' label.
    """

    def __init__(self) -> None:
        self._lock = Lock()
        self._phases: dict[tuple[str, str], tuple[str, int]] = {}
        self._healthy: dict[tuple[str, str], bool] = {}

    def set(self, namespace: str, name: str, phase: str, weight: int, healthy: bool | None = None) -> None:
        """`healthy`: monitoring's verdict on the stable model (`ModelHealthy`), None for none."""
        with self._lock:
            self._phases[(namespace, name)] = (phase, weight)
            if healthy is None:
                self._healthy.pop((namespace, name), None)
            else:
                self._healthy[(namespace, name)] = healthy

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)
            self._healthy.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            state = sorted(self._phases.items())
            healthy = sorted(self._healthy.items())
        family = GaugeMetricFamily(
            "rollwise_operator_model_deployments", "ModelDeployments by phase.", labels=["phase"]
        )
        counts: dict[str, int] = {}
        for _, (phase, _weight) in state:
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family
        labels = ["model_deployment_namespace", "model_deployment"]
        phases = GaugeMetricFamily(
            "rollwise_operator_model_deployment_phase",
            "1 for each ModelDeployment's current phase (status.phase); no series for other phases.",
            labels=[*labels, "phase"],
        )
        weights = GaugeMetricFamily(
            "rollwise_operator_model_deployment_weight",
            "Percent of each ModelDeployment's traffic on the candidate (status.weight), 0..100.",
            labels=labels,
        )
        for (namespace, name), (phase, weight) in state:
            phases.add_metric([namespace, name, phase], 1)
            weights.add_metric([namespace, name], weight)
        yield phases
        yield weights
        model = GaugeMetricFamily(
            "rollwise_operator_model_healthy",
            "spec.monitoring's verdict on each stable model: 1 healthy, 0 degraded (ModelHealthy); no "
            "series without monitoring or before its first verdict.",
            labels=labels,
        )
        for (namespace, name), ok in healthy:
            model.add_metric([namespace, name], 1 if ok else 0)
        yield model


PHASES = PhaseCollector()
REGISTRY.register(PHASES)


def serve(port: int) -> None:
    start_http_server(port)

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
    "Reconcile passes by result: ok, invalid (spec rejected by the operator) or error (retried).",
    ["result"],
)
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


class PhaseCollector(Collector):
    """ModelDeployments by phase, from the last reconcile of each (forgotten on deletion)."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._phases: dict[tuple[str, str], str] = {}

    def set(self, namespace: str, name: str, phase: str) -> None:
        with self._lock:
            self._phases[(namespace, name)] = phase

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "rollwise_operator_model_deployments", "ModelDeployments by phase.", labels=["phase"]
        )
        counts: dict[str, int] = {}
        with self._lock:
            for phase in self._phases.values():
                counts[phase] = counts.get(phase, 0) + 1
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family


PHASES = PhaseCollector()
REGISTRY.register(PHASES)


def serve(port: int) -> None:
    start_http_server(port)

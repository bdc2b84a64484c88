"""The Grafana dashboard the chart ships (charts/rollwise/dashboards/rollwise.json): its ConfigMap as
`helm template` renders it, the shape of the JSON, and the operator's per-ModelDeployment series
its rollout panels read. tests/integration/test_dashboard.py runs every query on a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry
from rollwise.telemetry import PhaseCollector

from e2e import paths
from tests.unit.test_chart import CHART, only, render, run_helm, set_args

DASHBOARD = paths.REPO / "charts" / "rollwise" / "dashboards" / "rollwise.json"
VARIABLES = {"namespace", "model_deployment", "__rate_interval"}
"""Every variable a query may use: the two template variables and Grafana's rate window."""
SERVING_SELECTOR = 'namespace="$namespace", pod=~"$model_deployment-(stable|candidate)-[a-z0-9]+-[a-z0-9]+"'
OPERATOR_SELECTOR = 'model_deployment_namespace="$namespace", model_deployment="$model_deployment"'


@dataclass(frozen=True)
class Query:
    panel: str
    expr: str
    legend: str


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every PromQL expression in the dashboard's panels."""
    return [
        Query(p["title"], t["expr"], t.get("legendFormat", ""))
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Template variable name -> its `label_values(...)` query."""
    return {v["name"]: v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"}


def substitute(expr: str, values: dict[str, str]) -> str:
    """`$name` and `${name}` replaced; a variable without a value fails, naming it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"{expr!r} uses ${name}, which has no value; known: {sorted(values)}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_uses_only_the_declared_variables(dashboard: dict[str, Any]) -> None:
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert names == {"datasource", "namespace", "model_deployment"}
    for q in [*queries(dashboard), *(Query(k, v, "") for k, v in variable_queries(dashboard).items())]:
        used = set(re.findall(r"\$\{?(\w+)", q.expr))
        assert used <= VARIABLES, (q.panel, used - VARIABLES)


def test_the_dashboard_covers_rollout_serving_and_operator(dashboard: dict[str, Any]) -> None:
    exprs = [q.expr for q in queries(dashboard)]

    def using(metric: str) -> list[str]:
        return [e for e in exprs if re.search(rf"\b{metric}\b", e)]

    for metric in ("rollwise_operator_model_deployment_phase", "rollwise_operator_model_deployment_weight"):
        assert using(metric) and all(OPERATOR_SELECTOR in e for e in using(metric)), metric
    for metric in (
        "rollwise_requests_total",
        "rollwise_request_duration_seconds_bucket",
        "rollwise_prediction_psi",
        "rollwise_feature_psi",
        "rollwise_prediction_value_count",
        "rollwise_model_loaded",
    ):
        found = using(metric)
        assert found, metric
        # Per model, and split by track: the series a rollout is judged on.
        assert all(SERVING_SELECTOR in e and "track" in e for e in found), (metric, found)
    for metric in (
        "rollwise_operator_reconciles_total",
        "rollwise_operator_reconcile_duration_seconds_bucket",
        "rollwise_operator_api_writes_total",
    ):
        assert using(metric), metric
    assert any("histogram_quantile(0.5," in e for e in using("rollwise_request_duration_seconds_bucket"))
    assert any("histogram_quantile(0.99," in e for e in using("rollwise_request_duration_seconds_bucket"))
    assert any('result="error"' in e for e in using("rollwise_operator_reconciles_total"))


def test_panels_have_unique_ids_a_datasource_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    every = panels(dashboard)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for p in every:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
            assert p["targets"] and p["description"], p["title"]


def test_substitute_names_a_variable_without_a_value() -> None:
    assert substitute('up{a="$x", b="${y}"}', {"x": "1", "y": "2"}) == 'up{a="1", b="2"}'
    with pytest.raises(KeyError, match=r"\$z"):
        substitute("up[$z]", {})


# ---------------------------------------------------------------------------------------------
# The chart's ConfigMap


@pytest.fixture(scope="module")
def helm() -> Path:
    """The pinned helm binary; a missing one fails by name (as in test_chart.py), never skips."""
    if not paths.HELM.is_file():
        pytest.fail(f"helm not found at {paths.HELM}: build it with `bash e2e/build-binaries.sh helm`")
    return paths.HELM


def test_no_dashboard_configmap_by_default(helm: Path) -> None:
    assert not [m for m in render(helm) if m["kind"] == "ConfigMap"]


def test_the_configmap_carries_the_dashboard_for_grafanas_sidecar(helm: Path) -> None:
    cm = only(render(helm, {"dashboards.enabled": "true"}), "ConfigMap")
    assert cm["metadata"]["name"] == "rw-rollwise-dashboard"
    assert cm["metadata"]["namespace"] == "rollwise-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == "rw"
    assert "annotations" not in cm["metadata"]
    assert list(cm["data"]) == ["rollwise.json"]
    assert json.loads(cm["data"]["rollwise.json"]) == json.loads(DASHBOARD.read_text())


def test_the_configmap_follows_the_sidecar_settings(helm: Path) -> None:
    values = {
        "dashboards.enabled": "true",
        "dashboards.namespace": "monitoring",
        "dashboards.label": "grafana.com/dashboard",
        "dashboards.labelValue": "rollwise",
        "dashboards.annotations.grafana_folder": "ML",
    }
    cm = only(render(helm, values), "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana.com/dashboard"] == "rollwise"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        pytest.param({"dashboards.enabled": "yes please"}, "/dashboards/enabled", id="enabled is a boolean"),
        pytest.param({"dashboards.label": "no spaces"}, "/dashboards/label", id="the label is a label key"),
        pytest.param(
            {"dashboards.namespace": "Monitoring"}, "/dashboards/namespace", id="a DNS-label namespace"
        ),
        pytest.param({"dashboards.folder": "x"}, "folder", id="unknown keys are refused"),
    ],
)
def test_bad_dashboard_values_fail_naming_the_value(
    helm: Path,
    values: dict[str, str],
    field: str,
) -> None:
    proc = run_helm(helm, "template", "rw", str(CHART), *set_args(values))
    assert proc.returncode != 0
    assert field in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# The operator's per-ModelDeployment series the rollout panels read


def samples(collector: PhaseCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for family in registry.collect():
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_each_model_deployment_has_its_phase_and_weight() -> None:
    phases = PhaseCollector()
    phases.set("ml", "iris", "Paused", 50)
    phases.set("ml", "wine", "Healthy", 0)
    phases.set("other", "iris", "Healthy", 0)
    got = samples(phases)
    md = 'model_deployment="iris",model_deployment_namespace="ml"'
    assert got[f'rollwise_operator_model_deployment_phase{{{md},phase="Paused"}}'] == 1
    assert got[f"rollwise_operator_model_deployment_weight{{{md}}}"] == 50
    assert got['rollwise_operator_model_deployments{phase="Healthy"}'] == 2
    # One phase series per object: the phase is read from the series' label.
    assert len([k for k in got if k.startswith("rollwise_operator_model_deployment_phase{")]) == 3

    phases.set("ml", "iris", "RolledBack", 0)
    phases.forget("ml", "wine")
    got = samples(phases)
    assert f'rollwise_operator_model_deployment_phase{{{md},phase="Paused"}}' not in got
    assert got[f'rollwise_operator_model_deployment_phase{{{md},phase="RolledBack"}}'] == 1
    assert got[f"rollwise_operator_model_deployment_weight{{{md}}}"] == 0
    assert not [k for k in got if 'model_deployment="wine"' in k]


def test_monitorings_verdict_is_a_series_only_while_there_is_one() -> None:
    phases = PhaseCollector()
    phases.set("ml", "iris", "Healthy", 0, healthy=False)
    phases.set("ml", "wine", "Healthy", 0)
    got = samples(phases)
    assert (
        got['rollwise_operator_model_healthy{model_deployment="iris",model_deployment_namespace="ml"}'] == 0
    )
    assert not [k for k in got if k.startswith("rollwise_operator_model_healthy{") and "wine" in k]
    phases.set("ml", "iris", "Healthy", 0, healthy=True)
    assert (
        samples(phases)[
            'rollwise_operator_model_healthy{model_deployment="iris",model_deployment_namespace="ml"}'
        ]
        == 1
    )
    phases.forget("ml", "iris")
    assert not [k for k in samples(phases) if k.startswith("rollwise_operator_model_healthy{")]

"""The administrator's guardrails and the tenant's custom PromQL: what a spec may ask for, what a
query may read, and what a webhook payload may carry."""

from __future__ import annotations

from typing import Any

import pytest
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.plan.guardrails import Guardrails, violations
from rollwise.plan.redact import redacted_body
from rollwise.plan.scope import ScopeError, scoped
from rollwise.settings import SettingsError, from_env
from rollwise_contract.redact import redact_uri

from tests.unit.manifests import base, edit

IMAGE = "registry.local/rollwise/serving:0.1.0"


def md(**changes: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(edit(base(), **changes))


def refused(rails: Guardrails, **changes: Any) -> list[str]:
    return violations(md(**changes), rails, serving_image=IMAGE)


def test_the_defaults_allow_the_bundled_image_in_any_tag_and_nothing_else() -> None:
    rails = Guardrails()
    assert refused(rails) == []
    assert refused(rails, spec__runtime__image="registry.local/rollwise/serving:0.2.0") == []
    assert refused(rails, spec__runtime__image="registry.local/rollwise/serving@sha256:" + "a" * 64) == []
    (problem,) = refused(rails, spec__runtime__image="docker.io/evil/miner:latest")
    assert problem.startswith("spec.runtime.image: docker.io/evil/miner:latest is not an allowed image")
    assert "guardrails.allowedImages" in problem
    # A look-alike repository is not the bundled one.
    assert refused(rails, spec__runtime__image="registry.local/rollwise/serving-evil:1")


def test_listed_images_are_allowed_by_pattern() -> None:
    rails = Guardrails(allowed_images=["ghcr.io/acme/*"])
    assert refused(rails, spec__runtime__image="ghcr.io/acme/llm-server:3") == []
    assert refused(rails, spec__runtime__image="ghcr.io/other/x:1")


def test_env_secrets_pvcs_node_selectors_and_tolerations_are_checked_naming_each_field() -> None:
    rails = Guardrails(
        allowed_env_secrets=["model-*"],
        allowed_pvcs=["models"],
        allowed_node_selectors=["pool=ml-*"],
        allowed_tolerations=["ml"],
    )
    problems = refused(
        rails,
        spec__model__uri="pvc://payroll/iris.joblib",
        spec__runtime__env=[
            {"name": "OK", "valueFrom": {"secretKeyRef": {"name": "model-store", "key": "k"}}},
            {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "prod-db", "key": "password"}}},
        ],
        spec__runtime__nodeSelector={"pool": "ml-a", "node-role.kubernetes.io/control-plane": ""},
        spec__runtime__tolerations=[
            {"key": "ml", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
            {"operator": "Exists"},
        ],
    )
    fields = [p.split(":")[0] for p in problems]
    assert fields == [
        "spec.runtime.env[1].valueFrom.secretKeyRef.name",
        "spec.runtime.nodeSelector",
        "spec.runtime.tolerations[1]",
        "spec.runtime.tolerations[2]",
        "spec.model.uri",
    ]
    assert "Secret prod-db" in problems[0] and "guardrails.allowedEnvSecrets" in problems[0]
    assert "every taint (no key)" in problems[3]
    assert "PVC payroll" in problems[4]


def test_custom_queries_can_be_turned_off() -> None:
    metrics = [{"name": "q", "query": "sum(x)", "threshold": {"max": 1}}]
    doc = base()
    doc["spec"]["rollout"]["analysis"]["metrics"] = metrics
    spec = ModelDeployment.model_validate(doc)
    assert violations(spec, Guardrails(), serving_image=IMAGE) == []
    (problem,) = violations(spec, Guardrails(custom_queries=False), serving_image=IMAGE)
    assert problem.startswith("spec.rollout.analysis.metrics[0].query: custom queries are turned off")


def test_the_operator_reads_guardrails_and_egress_from_its_environment() -> None:
    s = from_env(
        {"ROLLWISE_GUARDRAILS": '{"customQueries": false}', "ROLLWISE_WEBHOOK_DENIED_CIDRS": "10.96.0.0/12"}
    )
    assert s.guardrails.custom_queries is False and [str(n) for n in s.webhook_denied_cidrs] == [
        "10.96.0.0/12"
    ]
    with pytest.raises(SettingsError, match=r"ROLLWISE_GUARDRAILS: allowedImage: Extra inputs"):
        from_env({"ROLLWISE_GUARDRAILS": '{"allowedImage": ["*"]}'})
    with pytest.raises(SettingsError, match="ROLLWISE_WEBHOOK_ALLOWED_CIDRS: 'ten' is not an address range"):
        from_env({"ROLLWISE_WEBHOOK_ALLOWED_CIDRS": "ten"})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('{__name__=~".+"}', '{__name__=~".+",namespace="ml"}'),
        ("up", 'up{namespace="ml"}'),
        ('x{namespace="other"}', 'x{namespace="other",namespace="ml"}'),
        ("sum by (pod) (rate(a_total[5m]))", 'sum by (pod) (rate(a_total{namespace="ml"}[5m]))'),
        (
            "sum(rate(a[1m:10s] offset 5m)) without (le)",
            'sum(rate(a{namespace="ml"}[1m:10s] offset 5m)) without (le)',
        ),
        (
            'a / on(pod) group_left(node) b{c!~"d"}',
            'a{namespace="ml"} / on(pod) group_left(node) b{c!~"d",namespace="ml"}',
        ),
        (
            "histogram_quantile(0.99, sum(rate(h_bucket[30s])) by (le)) > bool 1e-3",
            'histogram_quantile(0.99, sum(rate(h_bucket{namespace="ml"}[30s])) by (le)) > bool 1e-3',
        ),
        (
            'label_replace(up, "a", "$1", "b", "{x}") or on() vector(1)',
            'label_replace(up{namespace="ml"}, "a", "$1", "b", "{x}") or on() vector(1)',
        ),
        ("job:rate:5m + Inf - NaN", 'job:rate:5m{namespace="ml"} + Inf - NaN'),
        ("x @ start() # a comment {y}", 'x{namespace="ml"} @ start() # a comment {y}'),
        ("topk(3, x{a='b',})", "topk(3, x{a='b',namespace=\"ml\"})"),
    ],
)
def test_every_selector_of_a_custom_query_is_confined_to_the_namespace(query: str, expected: str) -> None:
    assert scoped(query, "ml") == expected


@pytest.mark.parametrize("query", ["x{a={b}}", "x}", "sum(x", "x{a='b'", "x ~ y", "x[{{interval}}]"])
def test_a_query_the_scoper_cannot_read_is_refused_not_passed_through(query: str) -> None:
    with pytest.raises(ScopeError):
        scoped(query, "ml")


def test_a_namespace_is_quoted_as_a_promql_string() -> None:
    assert scoped("x", 'a"b') == 'x{namespace="a\\"b"}'


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://AKIA:secret@bucket/m.onnx", "s3://***@bucket/m.onnx"),
        ("https://h/m.onnx?X-Amz-Signature=abc&X-Amz-Credential=k", "https://h/m.onnx"),
        ("file:///models/m.onnx", "file:///models/m.onnx"),
        ("pvc://models/iris/m.joblib", "pvc://models/iris/m.joblib"),
    ],
)
def test_uri_credentials_are_redacted(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_a_redacted_body_keeps_env_names_and_refs_and_drops_values() -> None:
    body = {
        "spec": {
            "model": {"uri": "https://u:p@h/m", "fallback": {"uri": "s3://k:s@b/f"}},
            "runtime": {"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"x": 1}}]},
        }
    }
    out = redacted_body(body)
    assert out["spec"]["runtime"]["env"] == [
        {"name": "A", "value": "<redacted>"},
        {"name": "B", "valueFrom": {"x": 1}},
    ]
    assert out["spec"]["model"] == {"uri": "https://***@h/m", "fallback": {"uri": "s3://***@b/f"}}
    assert body["spec"]["runtime"]["env"][0]["value"] == "1"  # the original is untouched


def test_a_backtests_pods_are_held_to_the_same_rules() -> None:
    rails = Guardrails(allowed_pvcs=["models"], allowed_env_secrets=["model-*"])
    backtest = {
        "dataset": {"uri": "pvc://payroll/history.parquet"},
        "labelColumn": "y",
        "metrics": [{"name": "accuracy"}],
        "image": "docker.io/evil/miner:latest",
        "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "prod-db", "key": "password"}}}],
    }
    doc = edit(base(), spec__rollout__backtest=backtest)
    doc["spec"]["model"]["featureSchema"] = {"features": [{"name": "x"}]}
    problems = violations(
        ModelDeployment.model_validate(doc), rails, serving_image=IMAGE, batch_image=IMAGE + "-batch"
    )
    assert [p.split(":")[0] for p in problems] == [
        "spec.rollout.backtest.image",
        "spec.rollout.backtest.env[0].valueFrom.secretKeyRef.name",
        "spec.rollout.backtest.dataset.uri",
    ]
    assert "PVC payroll is not one a ModelDeployment may mount" in problems[2]

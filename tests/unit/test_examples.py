"""Every manifest in examples/ is valid for pydantic and for the CRD's CEL rules, and plans.

A router example also carries the user's own route object (HTTPRoute, VirtualService, Ingress);
it must be the one the ModelDeployment names and route to its Service, so the router reads it
as all traffic on stable before the first rollout. (The integration test applies each router
example to the local cluster with the providers' real CRDs.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rollwise.api.batch import ModelBatchJob
from rollwise.api.v1alpha1 import ModelDeployment, StrategyName, TrafficProvider
from rollwise.plan.backtest import desired_backtest_job
from rollwise.plan.batch import Unresolved, batch_args, desired_job, resolve_model
from rollwise.plan.guardrails import Guardrails, batch_violations
from rollwise.plan.split import TrafficSplit
from rollwise.plan.steps import rollout_steps
from rollwise.routers import router_for
from rollwise_serving.batch import parse_batch_settings

from tests.unit.admission import cel_rejections
from tests.unit.rollout_world import steady_children
from tests.unit.test_routers import live_after

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "iris-sklearn.yaml": StrategyName.CANARY,
    "canary.yaml": StrategyName.CANARY,
    "canary-gateway-api.yaml": StrategyName.CANARY,
    "canary-istio.yaml": StrategyName.CANARY,
    "canary-nginx.yaml": StrategyName.CANARY,
    "blue-green.yaml": StrategyName.BLUE_GREEN,
    "ab-test.yaml": StrategyName.AB_TEST,
    "ab-test-gateway-api.yaml": StrategyName.AB_TEST,
    "shadow.yaml": StrategyName.SHADOW,
    "shadow-istio.yaml": StrategyName.SHADOW,
    "canary-labels.yaml": StrategyName.CANARY,
    "monitoring.yaml": StrategyName.CANARY,
    "segments.yaml": StrategyName.CANARY,
    "byo-json-server.yaml": StrategyName.CANARY,
    "byo-mlserver.yaml": StrategyName.CANARY,
    "byo-llm-server.yaml": StrategyName.CANARY,
    "backtest-canary.yaml": StrategyName.CANARY,
}
BATCH_EXAMPLES = {"batch-job.yaml": 4}
"""ModelBatchJob examples and their shard count."""
USER_OBJECT_KIND = {
    TrafficProvider.GATEWAY_API: "HTTPRoute",
    TrafficProvider.ISTIO: "VirtualService",
    TrafficProvider.NGINX: "Ingress",
}


def documents(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The example's ModelDeployment and the other documents beside it."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    mds = [d for d in docs if d.get("kind") == "ModelDeployment"]
    assert len(mds) == 1, f"{name}: expected one ModelDeployment, found {len(mds)}"
    return mds[0], [d for d in docs if d is not mds[0]]


def test_every_example_file_is_listed_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted([*EXPECTED, *BATCH_EXAMPLES])


@pytest.mark.parametrize(("name", "shards"), [pytest.param(n, s, id=n) for n, s in BATCH_EXAMPLES.items()])
def test_batch_example_is_valid_and_plans_its_indexed_job(name: str, shards: int) -> None:
    (doc,) = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    doc["metadata"]["namespace"] = "ml"
    mbj = ModelBatchJob.model_validate(doc)
    assert cel_rejections(doc, "modelbatchjobs") == []
    assert batch_violations(mbj, Guardrails(), serving_image="img", batch_image="img-batch") == []
    model = resolve_model(mbj, None)
    assert not isinstance(model, Unresolved)
    job = desired_job(mbj, model, owner_uid="uid", batch_image="img-batch")
    spec = job["spec"]
    assert isinstance(spec, dict)
    assert (spec["completionMode"], spec["completions"]) == ("Indexed", shards)
    settings = parse_batch_settings([str(a) for a in batch_args(mbj, model)], {"JOB_COMPLETION_INDEX": "0"})
    assert settings.shard_count == shards and settings.keep == tuple(mbj.spec.keep_columns)


@pytest.mark.parametrize(("name", "strategy"), [pytest.param(n, s, id=n) for n, s in EXPECTED.items()])
def test_example_is_valid_and_plans(name: str, strategy: StrategyName) -> None:
    doc, _ = documents(name)
    md = ModelDeployment.model_validate(doc)
    assert cel_rejections(doc) == []
    assert md.spec.rollout.strategy is strategy
    assert rollout_steps(md.spec.rollout)
    kinds = [m["kind"] for m in steady_children(md, owner_uid="uid", serving_image="img")]
    assert kinds[:2] == ["Deployment", "Service"]


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in EXPECTED])
def test_a_backtest_examples_job_arguments_parse_as_rollwise_batch_reads_them(name: str) -> None:
    doc, _ = documents(name)
    md = ModelDeployment.model_validate(doc)
    spec = md.spec.rollout.backtest
    if spec is None:
        return
    job = desired_backtest_job(
        md, spec, revision="0123456789", stable=md.spec.model, owner_uid="u", batch_image="b"
    )
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    settings = parse_batch_settings([str(a) for a in args], {"JOB_COMPLETION_INDEX": "1"})
    assert (settings.label_column, settings.shard_count, settings.shard_index) == (
        spec.label_column,
        spec.shards,
        1,
    )
    assert settings.baseline_sha256 == md.spec.model.sha256


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in EXPECTED])
def test_a_router_example_brings_the_route_its_router_reads(name: str) -> None:
    doc, others = documents(name)
    doc["metadata"]["namespace"] = "ml"
    md = ModelDeployment.model_validate(doc)
    provider = md.spec.rollout.traffic.provider
    if provider is TrafficProvider.REPLICAS:
        assert others == [], f"{name}: the replicas router needs no other object"
        return
    router = router_for(provider)
    assert router.problems(md) == []
    assert [o["kind"] for o in others] == [USER_OBJECT_KIND[provider]]
    user = others[0]
    user["metadata"]["namespace"] = "ml"
    # Before the first render the gatewayAPI and istio routers read the user's route as it is.
    if provider is not TrafficProvider.NGINX:
        before = router.read(md, [user])
        assert before.split == TrafficSplit.stable_only(), before.message
    split = TrafficSplit(10)
    routing = router.render(md, split, [user])
    assert routing.objects, f"{name}: the router renders nothing from the example's {user['kind']}"
    state = router.read(md, live_after(md, router, routing, [user]))
    assert state.carries(split), (state.split, state.message)
    if provider is TrafficProvider.NGINX:
        canary: Any = routing.objects[0]
        backends = [
            p["backend"]["service"]["name"] for r in canary["spec"]["rules"] for p in r["http"]["paths"]
        ]
        assert backends == [f"{md.metadata.name}-candidate"], backends

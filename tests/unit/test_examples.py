"""Every manifest in examples/ is valid for pydantic and for the CRD's CEL rules, and plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rollwise.api.v1alpha1 import ModelDeployment, StrategyName
from rollwise.plan.desired import desired_children
from rollwise.plan.steps import rollout_steps

from tests.unit.admission import cel_rejections

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "iris-sklearn.yaml": StrategyName.CANARY,
    "canary.yaml": StrategyName.CANARY,
    "canary-gateway-api.yaml": StrategyName.CANARY,
    "blue-green.yaml": StrategyName.BLUE_GREEN,
    "ab-test.yaml": StrategyName.AB_TEST,
    "shadow.yaml": StrategyName.SHADOW,
}


def test_every_example_file_is_listed_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "strategy"), [pytest.param(n, s, id=n) for n, s in EXPECTED.items()])
def test_example_is_valid_and_plans(name: str, strategy: StrategyName) -> None:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    md = ModelDeployment.model_validate(doc)
    assert cel_rejections(doc) == []
    assert md.spec.rollout.strategy is strategy
    assert rollout_steps(md.spec.rollout)
    kinds = [m["kind"] for m in desired_children(md, owner_uid="uid", serving_image="img")]
    assert kinds[:4] == ["Deployment", "Service", "Service", "Service"]

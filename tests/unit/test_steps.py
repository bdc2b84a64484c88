"""Each strategy as an ordered list of steps, and the split in effect at each step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollwise.api.v1alpha1 import Rollout
from rollwise.plan.split import TrafficSplit
from rollwise.plan.steps import (
    Analyze,
    Mirror,
    Pause,
    Preview,
    RouteMatches,
    SetWeight,
    SplitUsers,
    Step,
    rollout_steps,
    split_at,
)

METRICS = {"metrics": [{"name": "ok", "builtin": "successRate", "threshold": {"min": 99}}]}


@pytest.mark.parametrize(
    ("rollout", "steps"),
    [
        pytest.param(
            {
                "canary": {
                    "steps": [
                        {"setWeight": 5},
                        {"analysis": {"count": 2}},
                        {"pause": {"durationSeconds": 60}},
                        {"setWeight": 50},
                        {"pause": {}},
                    ]
                },
                "analysis": METRICS,
            },
            [SetWeight(5), Analyze(2), Pause(timedelta(seconds=60)), SetWeight(50), Pause(None)],
            id="canary steps map one to one",
        ),
        pytest.param(
            {"blueGreen": {"prePromotionAnalysis": {}, "autoPromotionSeconds": 30}, "analysis": METRICS},
            [Preview(None), Analyze(None), Pause(timedelta(seconds=30)), SetWeight(100)],
            id="blue/green previews, analyses, waits the auto-promotion delay, then switches",
        ),
        pytest.param(
            {"blueGreen": {"previewReplicas": 2}},
            [Preview(2), Pause(None), SetWeight(100)],
            id="blue/green without auto-promotion waits for a human before switching",
        ),
        pytest.param(
            {"blueGreen": {"autoPromotionSeconds": 0}},
            [Preview(None), SetWeight(100)],
            id="blue/green with a zero delay switches as soon as the preview is ready",
        ),
        pytest.param(
            {
                "abTest": {
                    "userHash": {"header": "x-user-id", "weight": 20},
                    "durationSeconds": 600,
                    "analysis": {},
                },
                "analysis": METRICS,
            },
            [SplitUsers("x-user-id", 20), Analyze(None), Pause(timedelta(seconds=600))],
            id="a user-hash A/B test splits users, analyses, then runs its duration",
        ),
        pytest.param(
            {"abTest": {"match": [{"header": {"name": "x-variant", "value": "b"}}]}},
            [
                RouteMatches(
                    tuple(
                        Rollout.model_validate(
                            {"abTest": {"match": [{"header": {"name": "x-variant", "value": "b"}}]}}
                        ).ab_test.match
                        or ()
                    )
                ),
                Pause(None),
            ],
            id="a header A/B test without duration or analysis waits for a human",
        ),
        pytest.param(
            {"shadow": {"analysis": {}}, "analysis": METRICS},
            [Mirror(), Analyze(None)],
            id="shadow mirrors then analyses, and is promoted when the analysis passes",
        ),
    ],
)
def test_rollout_steps(rollout: dict[str, Any], steps: list[Step]) -> None:
    assert rollout_steps(Rollout.model_validate(rollout)) == tuple(steps)


@pytest.mark.parametrize(
    ("steps", "index", "split"),
    [
        pytest.param(
            [SetWeight(5), Analyze(None), SetWeight(25)],
            -1,
            TrafficSplit(0),
            id="before the first step all is stable",
        ),
        pytest.param(
            [SetWeight(5), Analyze(None), SetWeight(25)],
            1,
            TrafficSplit(5),
            id="an analysis keeps the last weight",
        ),
        pytest.param(
            [SetWeight(5), Analyze(None), SetWeight(25)], 2, TrafficSplit(25), id="the latest weight wins"
        ),
        pytest.param(
            [Preview(None), Pause(None), SetWeight(100)],
            1,
            TrafficSplit(0),
            id="a preview gets no live traffic",
        ),
        pytest.param(
            [Mirror(), Analyze(None)], 1, TrafficSplit(0, mirror=True), id="mirroring stays on once started"
        ),
        pytest.param(
            [SplitUsers("u", 20), Pause(None)], 1, TrafficSplit(20), id="a user split carries its weight"
        ),
    ],
)
def test_split_at(steps: list[Step], index: int, split: TrafficSplit) -> None:
    assert split_at(steps, index) == split


def test_split_at_refuses_an_index_past_the_last_step() -> None:
    with pytest.raises(IndexError, match=r"step 3 is outside 0\.\.2"):
        split_at([SetWeight(5), SetWeight(10), SetWeight(20)], 3)


@given(st.lists(st.integers(1, 100), min_size=1, max_size=32, unique=True).map(sorted), st.data())
def test_canary_candidate_weight_never_exceeds_the_current_step_and_never_goes_down(
    weights: list[int], data: st.DataObject
) -> None:
    rollout = Rollout.model_validate({"canary": {"steps": [{"setWeight": w} for w in weights]}})
    steps = rollout_steps(rollout)
    seen = [split_at(steps, i).candidate for i in range(len(steps))]
    assert seen == weights
    i = data.draw(st.integers(0, len(steps) - 1))
    assert split_at(steps, i).candidate <= max(weights[: i + 1])

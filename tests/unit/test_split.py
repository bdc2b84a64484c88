"""Weight <-> replica arithmetic of the `replicas` router."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollwise.plan.split import TrackReplicas, TrafficSplit, pods_per_track, replicas_for


@pytest.mark.parametrize(
    ("weight", "total", "stable", "candidate"),
    [
        pytest.param(0, 4, 4, 0, id="weight 0 keeps every pod on stable"),
        pytest.param(5, 4, 3, 1, id="a 5 % canary on 4 pods still gets one pod"),
        pytest.param(25, 4, 3, 1, id="25 % of 4 pods is one pod"),
        pytest.param(50, 4, 2, 2, id="50 % splits evenly"),
        pytest.param(99, 4, 1, 3, id="99 % still leaves stable one pod"),
        pytest.param(100, 4, 0, 4, id="weight 100 moves every pod to the candidate"),
        pytest.param(50, 1, 0, 1, id="one pod at 50 % rounds half up to the candidate"),
        pytest.param(49, 1, 1, 0, id="one pod below 50 % stays on stable"),
        pytest.param(10, 0, 0, 0, id="no pods gives no pods"),
        pytest.param(33, 10, 7, 3, id="33 % of 10 pods is 3"),
    ],
)
def test_replicas_for(weight: int, total: int, stable: int, candidate: int) -> None:
    assert replicas_for(TrafficSplit(weight), total) == TrackReplicas(stable, candidate)


@pytest.mark.parametrize("weight", [pytest.param(-1, id="negative"), pytest.param(101, id="above 100")])
def test_a_weight_outside_0_to_100_is_refused(weight: int) -> None:
    with pytest.raises(ValueError, match=f"candidate weight {weight} is not a percentage; use 0..100"):
        TrafficSplit(weight)


weights = st.integers(0, 100)
totals = st.integers(0, 500)


@given(weights)
def test_every_split_sums_to_100_with_both_sides_in_0_to_100(weight: int) -> None:
    split = TrafficSplit(weight)
    assert split.stable + split.candidate == 100
    assert 0 <= split.stable <= 100 and 0 <= split.candidate <= 100


@given(weights, totals)
def test_replicas_for_keeps_the_total_and_a_pod_on_each_track(weight: int, total: int) -> None:
    r = replicas_for(TrafficSplit(weight), total)
    assert r.total == total and r.stable >= 0 and r.candidate >= 0
    if 1 <= weight <= 99 and total >= 2:
        assert r.stable >= 1 and r.candidate >= 1
    if weight == 0:
        assert r.candidate == 0
    if weight == 100:
        assert r.stable == 0


@given(weights, weights, totals)
def test_more_weight_never_means_fewer_candidate_pods(a: int, b: int, total: int) -> None:
    low, high = sorted((a, b))
    assert (
        replicas_for(TrafficSplit(low), total).candidate <= replicas_for(TrafficSplit(high), total).candidate
    )


@given(weights, st.integers(1, 500))
def test_the_real_weight_is_within_one_pod_of_the_asked_weight(weight: int, total: int) -> None:
    """The `replicas` router's pods during a canary step, as the planner sizes them."""
    pods = pods_per_track(
        TrafficSplit(weight),
        total,
        candidate_runs=True,
        promoting=False,
        blue_green_preview=None,
        preview_step=False,
        by_weight=True,
    )
    real = 100 * pods.candidate / (pods.stable + pods.candidate)
    assert abs(real - weight) <= 100 / total + 1

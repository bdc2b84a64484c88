"""A track Deployment as the planner sees it: rolled out, or only scaling, or still replacing pods."""

from __future__ import annotations

from typing import Any

import pytest
from rollwise.kube.observe import track_state


def deployment(*, generation: int, observed: int, want: int, total: int, updated: int, available: int) -> Any:
    return {
        "metadata": {"name": "iris-candidate", "generation": generation},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
        },
    }


@pytest.mark.parametrize(
    ("dep", "rolled_out", "current_only"),
    [
        (deployment(generation=2, observed=2, want=1, total=1, updated=1, available=1), True, True),
        # a shadow scaling the candidate 1 -> 2: one new pod starting, no old pod
        (deployment(generation=3, observed=3, want=2, total=2, updated=2, available=1), False, True),
        # a new template rolling out: an old pod still serves
        (deployment(generation=4, observed=4, want=1, total=2, updated=1, available=1), False, False),
        # a change of replicas the controller has not seen yet: the pods are still all current
        (deployment(generation=5, observed=4, want=2, total=1, updated=1, available=1), False, True),
    ],
    ids=["rolled out", "scaling", "replacing pods", "spec not seen"],
)
def test_scaling_keeps_current_pods_only_while_rolled_out_waits_for_every_pod(
    dep: Any, rolled_out: bool, current_only: bool
) -> None:
    state = track_state(dep)
    assert (state.rolled_out, state.current_pods_only) == (rolled_out, current_only)

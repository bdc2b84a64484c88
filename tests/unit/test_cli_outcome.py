"""When `--wait` calls a rollout over, and which actions the plugin refuses, checked against the
state machine itself so the plugin never refuses what the operator would do (or the reverse)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rollwise.api.actions import Action
from rollwise.api.v1alpha1 import ModelDeployment, Phase
from rollwise.cli.outcome import ExitCode, Outcome, ended, refusal

from tests.unit.cli_objects import aborted, conditions, md, paused_at_pause_step, promoted
from tests.unit.rollout_world import World, at
from tests.unit.test_machine import PAUSED_CANARY, md_of, started

ROLLED_BACK_ON_ANALYSIS = md(
    phase="RolledBack",
    candidateVersion="2.0.0",
    conditions=conditions("Stalled", "AnalysisFailed"),
    history=[
        {"version": "2.0.0", "revision": "r", "outcome": "RolledBack", "finishedAt": "2025-01-01T00:00:00Z"}
    ],
)
INVALID = md(phase="Invalid", conditions=conditions("Stalled", "InvalidSpec"))
DEGRADED = md(phase="Degraded", conditions=conditions("Stalled", "StableUnavailable"))
FAILED = ExitCode.ROLLED_BACK


@pytest.mark.parametrize(
    ("obj", "outcome", "reason", "code"),
    [
        pytest.param(
            promoted(), Outcome.PROMOTED, "Promoted", ExitCode.OK, id="promoted: Healthy, no candidate"
        ),
        pytest.param(aborted(), Outcome.ROLLED_BACK, "Aborted", FAILED, id="aborted: rolled back"),
        pytest.param(
            ROLLED_BACK_ON_ANALYSIS,
            Outcome.ROLLED_BACK,
            "AnalysisFailed",
            FAILED,
            id="a failed analysis: rolled back with the analysis as reason",
        ),
        pytest.param(INVALID, Outcome.INVALID, "InvalidSpec", FAILED, id="an invalid spec fails the wait"),
        pytest.param(
            DEGRADED, Outcome.DEGRADED, "StableUnavailable", FAILED, id="a stable that is down fails the wait"
        ),
    ],
)
def test_a_rollout_ends_promoted_or_not(
    obj: ModelDeployment, outcome: Outcome, reason: str, code: int
) -> None:
    result = ended(obj)
    assert result is not None
    assert (result.outcome, result.reason, result.exit_code) == (outcome, reason, code)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(paused_at_pause_step(), id="paused: a human must act, the wait goes on"),
        pytest.param(md(phase="Progressing", candidateVersion="2.0.0"), id="progressing"),
        pytest.param(md(phase="Promoting", candidateVersion="2.0.0"), id="promoting: not over until Healthy"),
        pytest.param(
            md(phase="RollingBack", candidateVersion="2.0.0"), id="rolling back: traffic still moving"
        ),
        pytest.param(md(phase="Pending"), id="pending: the first version is not ready yet"),
        pytest.param(
            md(phase="Healthy", generation=3, observed=2),
            id="healthy for an older spec: the operator has not seen the change yet",
        ),
        pytest.param(md(phase="RolledBack", observed=None), id="no observedGeneration: not judged"),
    ],
)
def test_a_rollout_in_flight_has_not_ended(obj: ModelDeployment) -> None:
    assert ended(obj) is None


# Refusals, phase by phase, against what the state machine does with the same annotation.


def healthy() -> World:
    w = World.of(md_of(PAUSED_CANARY))
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    return w


def paused() -> World:
    return started(md_of(PAUSED_CANARY))


def progressing() -> World:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {"durationSeconds": 600}}]}}))
    assert w.md.status.phase is Phase.PROGRESSING
    return w


def rolled_back() -> World:
    w = paused()
    w.annotate("abort:0")
    assert w.settle(at(3)).status.phase is Phase.ROLLED_BACK
    return w


WORLDS: dict[str, Callable[[], World]] = {
    "Healthy": healthy,
    "Paused": paused,
    "Progressing": progressing,
    "RolledBack": rolled_back,
}


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("phase", list(WORLDS))
def test_the_plugin_refuses_exactly_what_the_operator_would_ignore(phase: str, action: Action) -> None:
    w = WORLDS[phase]()
    assert w.md.status.phase == phase
    why_not = refusal(w.md, action)
    w.annotate(f"{action.value}:check")
    decision = w.step(at(5))
    ignored = any(" ignored: nothing to " in n.message for n in decision.notes)
    assert decision.status.last_action == f"{action.value}:check"
    assert (why_not is not None) == ignored, (why_not, [n.message for n in decision.notes])


@pytest.mark.parametrize(
    ("status", "action", "fix"),
    [
        pytest.param(
            {"phase": "Healthy"},
            Action.PROMOTE,
            "change spec.model (version, uri or sha256) to start one",
            id="nothing to promote names how to start a rollout",
        ),
        pytest.param(
            {"phase": "Paused"},
            Action.PAUSE,
            "resume it with `kubectl rollwise resume iris`",
            id="pausing twice says how to resume",
        ),
        pytest.param(
            {"phase": "Progressing"},
            Action.RESUME,
            "nothing to resume",
            id="resuming a running rollout is refused",
        ),
        pytest.param(
            {"phase": "RolledBack"},
            Action.PROMOTE,
            "kubectl rollwise retry iris",
            id="an ended rollout points at retry",
        ),
        pytest.param(
            {"phase": "Promoting"}, Action.ABORT, "kubectl rollwise wait iris", id="promoting points at wait"
        ),
        pytest.param(
            {"phase": "Invalid"}, Action.RESUME, "fix the spec first", id="an invalid spec comes first"
        ),
        pytest.param(
            {"phase": "Healthy"},
            Action.RETRY,
            "retry restarts a rolled-back candidate",
            id="retry explains itself",
        ),
    ],
)
def test_refusals_name_the_state_and_the_fix(status: dict[str, Any], action: Action, fix: str) -> None:
    why_not = refusal(md(message="the message", **status), action)
    assert why_not is not None
    assert why_not.startswith(f"iris is {status['phase']} (the message): ")
    assert fix in why_not


def test_a_status_behind_the_spec_is_not_second_guessed() -> None:
    assert refusal(md(phase="Healthy", generation=3, observed=2), Action.PROMOTE) is None

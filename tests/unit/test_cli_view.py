"""The plugin's views, rendered to text from status objects alone (no cluster): what a human reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rollwise.cli.view import (
    EventRow,
    Mark,
    age,
    events_table,
    history_table,
    list_table,
    progress_line,
    split_view,
    status_view,
    step_label,
    step_marks,
)
from rollwise.plan.steps import Analyze, Mirror, Pause, Preview, RouteMatches, SetWeight, SplitUsers, Step
from rollwise_contract.matches import RequestMatch

from tests.unit.cli_objects import (
    NOW,
    aborted,
    analysing,
    conditions,
    line_with,
    md,
    paused_at_pause_step,
    promoted,
    render,
    step_row,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(59, "59s", id="under a minute in seconds"),
        pytest.param(65, "1m05s", id="minutes keep two-digit seconds"),
        pytest.param(3 * 3600 + 7 * 60, "3h07m", id="hours and minutes"),
        pytest.param(2 * 86400 + 5 * 3600, "2d5h", id="days and hours"),
        pytest.param(-5, "0s", id="clock skew never shows a negative age"),
    ],
)
def test_ages_read_like_kubectl(seconds: int, text: str) -> None:
    assert age(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    ("step", "label"),
    [
        pytest.param(SetWeight(20), "setWeight 20", id="a weight step"),
        pytest.param(Pause(None), "pause until resumed", id="an indefinite pause"),
        pytest.param(Pause(timedelta(seconds=90)), "pause 1m30s", id="a timed pause"),
        pytest.param(Analyze(None), "analysis", id="an analysis with the default count"),
        pytest.param(Analyze(3), "analysis (3 measurements)", id="an analysis with its own count"),
        pytest.param(Preview(None), "preview at full size (no live traffic)", id="a blue/green preview"),
        pytest.param(Preview(2), "preview with 2 pods (no live traffic)", id="a smaller preview"),
        pytest.param(
            RouteMatches((RequestMatch.model_validate({"header": {"name": "x-variant", "value": "b"}}),)),
            "route matching requests: header x-variant=b",
            id="an A/B header match",
        ),
        pytest.param(SplitUsers("x-user-id", 20), "20% of users by x-user-id", id="an A/B user hash"),
        pytest.param(Mirror(), "mirror all traffic (answers discarded)", id="a shadow mirror"),
    ],
)
def test_each_step_reads_as_the_user_wrote_it(step: Step, label: str) -> None:
    assert step_label(step) == label


D, C, F, P = Mark.DONE, Mark.CURRENT, Mark.FAILED, Mark.PENDING


@pytest.mark.parametrize(
    ("status", "marks"),
    [
        pytest.param(
            {"phase": "Healthy", "weight": 0}, [P, P, P, P, P, P], id="no rollout: every step pending"
        ),
        pytest.param(
            {"phase": "Progressing", "candidateVersion": "2.0.0"},
            [C, P, P, P, P, P],
            id="before the first step the first step is current",
        ),
        pytest.param(
            {"phase": "Paused", "candidateVersion": "2.0.0", "currentStep": 1},
            [D, C, P, P, P, P],
            id="a paused step is current, earlier ones done",
        ),
        pytest.param(
            {"phase": "Promoting", "candidateVersion": "2.0.0", "currentStep": 4},
            [D, D, D, D, D, C],
            id="promoting: every step done, promotion current",
        ),
        pytest.param(
            {"phase": "RolledBack", "candidateVersion": "2.0.0", "currentStep": 2},
            [D, D, F, P, P, P],
            id="a rollback marks the step it stopped at",
        ),
        pytest.param(
            {"phase": "RollingBack", "candidateVersion": "2.0.0"},
            [F, P, P, P, P, P],
            id="a candidate rolled back before its first step fails the first",
        ),
    ],
)
def test_step_marks_follow_the_rollout(status: dict[str, Any], marks: list[Mark]) -> None:
    assert step_marks(md(**status)) == marks


def test_a_paused_rollout_highlights_its_pause_step_and_shows_the_split() -> None:
    out = render(status_view(paused_at_pause_step(), [], NOW))
    assert "ModelDeployment ml/iris  Paused (Paused)" in out
    assert "strategy canary   router replicas   stable 1.0.0   candidate 2.0.0   step 2/5 for 1m05s" in out
    current = step_row(out, "pause until resumed")
    assert "▶" in current and "1m05s, waiting for resume or promote" in current
    assert "✓" in step_row(out, "setWeight 20")
    assert "▶" not in step_row(out, "setWeight 60") and "✓" not in step_row(out, "setWeight 60")
    traffic = line_with(out, "Traffic")
    assert "stable 1.0.0 80%" in traffic and "20% candidate 2.0.0" in traffic
    assert traffic.count("█") == 40
    assert "waiting for rollwise.dev/action resume or promote" in out


def test_a_timed_pause_shows_time_spent_against_its_duration() -> None:
    timed = md(
        phase="Progressing",
        candidateVersion="2.0.0",
        currentStep=4,
        stepStartedAt=(NOW - timedelta(seconds=12)).isoformat(),
        weight=60,
        conditions=conditions("Reconciling", "Progressing"),
    )
    out = render(status_view(timed, [], NOW))
    assert "12s of 30s" in step_row(out, "pause 30s")
    assert "stable 1.0.0 40%" in out and "60% candidate 2.0.0" in out


def test_each_analysis_metric_shows_value_threshold_and_verdict() -> None:
    out = render(status_view(analysing(), [], NOW))
    assert "Analysis of step 3: Running (started 12s ago)" in out
    rate = line_with(out, "success-rate")
    for part in ("97.5%", "≥ 99%", "Failed", "1/1/0", "97.5 is below the minimum 99"):
        assert part in rate, (part, rate)
    latency = line_with(out, "latency")
    for part in ("0.01235s", "≤ 0.25s", "Running", "2/0/0"):
        assert part in latency, (part, latency)
    custom = line_with(out, "custom ")
    for part in ("1..3", "Inconclusive", "1/0/1", "no data"):
        assert part in custom, (part, custom)
    assert "12s, 2/3 measurements" in step_row(out, "analysis (3 measurements)")


def test_an_aborted_rollout_shows_where_it_stopped_and_why() -> None:
    out = render(status_view(aborted(), [], NOW))
    assert "RolledBack (Aborted)" in out
    stopped = step_row(out, "pause until resumed")
    assert "✗" in stopped and "rolled back here" in stopped
    assert "not reached" in step_row(out, "promote")
    assert "aborted by rollwise.dev/action" in out
    assert "stable 1.0.0 100%" in out


def test_promoting_highlights_the_promotion() -> None:
    out = render(
        status_view(
            md(phase="Promoting", candidateVersion="2.0.0", currentStep=4, weight=60, conditions=[]), [], NOW
        )
    )
    assert "▶" in step_row(out, "promote") and "updating the stable" in step_row(out, "promote")
    assert "✓" in step_row(out, "pause 30s")


def test_a_healthy_object_shows_no_rollout_and_the_last_analysis() -> None:
    done = md(
        phase="Healthy",
        stableVersion="2.0.0",
        conditions=conditions("Ready", "Available"),
        analysis={"step": 2, "verdict": "Successful", "startedAt": (NOW - timedelta(minutes=5)).isoformat()},
    )
    out = render(status_view(done, [], NOW))
    assert "Steps (no rollout in progress)" in out
    assert "▶" not in out and "✗" not in out
    assert "Last analysis of step 3: Successful" in out
    assert "stable 2.0.0 100%" in out and "0% candidate -" in out


def test_a_status_older_than_the_spec_is_flagged() -> None:
    out = render(status_view(md(generation=3, observed=2, phase="Healthy"), [], NOW))
    assert "the operator has not seen generation 3 yet (status is for 2)" in out


def test_events_show_the_newest_oldest_first_with_warnings_and_counts() -> None:
    events = [
        EventRow(NOW - timedelta(seconds=s), "Normal", f"R{s}", f"message {s}") for s in (50, 40, 30, 20, 10)
    ]
    events.append(EventRow(NOW - timedelta(seconds=5), "Warning", "Aborted", "rolling back", count=3))
    events.append(EventRow(None, "Normal", "Undated", "no time"))
    out = render(events_table(events, NOW, limit=3))
    lines = [line for line in out.splitlines() if line[:1].isdigit()]
    assert [line.split()[0] for line in lines] == ["20s", "10s", "5s"], out
    assert "Warning" in line_with(out, "Aborted") and "rolling back (x3)" in out
    assert "Undated" not in out and "R50" not in out


def test_no_events_says_so() -> None:
    assert "(none)" in render(events_table([], NOW))


def test_list_shows_one_row_per_object_with_step_weight_and_namespace() -> None:
    paused = paused_at_pause_step()
    other = md(phase="Healthy", conditions=conditions("Ready", "Available")).model_copy(
        update={"metadata": paused.metadata.model_copy(update={"name": "wine", "namespace": "prod"})}
    )
    out = render(list_table([paused, other], NOW, all_namespaces=True))
    header = out.splitlines()[0].split()
    assert header == ["NAMESPACE", "NAME", "STRATEGY", "PHASE", "STABLE", "CANDIDATE", "STEP", "WEIGHT",
                      "IN", "STEP", "AGE"]  # fmt: skip
    assert line_with(out, "iris").split() == ["ml", "iris", "canary", "Paused", "1.0.0", "2.0.0", "2/5",
                                              "20%", "1m05s", "1h00m"]  # fmt: skip
    assert line_with(out, "wine").split()[:8] == [
        "prod",
        "wine",
        "canary",
        "Healthy",
        "1.0.0",
        "-",
        "-",
        "0%",
    ]
    assert "NAMESPACE" not in render(list_table([paused], NOW, all_namespaces=False))


def test_history_lists_finished_rollouts_newest_first() -> None:
    out = render(history_table(aborted(), NOW))
    rows = [line for line in out.splitlines() if "ago" in line]
    assert [r.split()[1:4] for r in rows] == [
        ["ago", "2.0.0", "abc123def456"],
        ["ago", "1.0.0", "0123456789ab"],
    ]
    assert "Aborted" in rows[0] and "aborted by rollwise.dev/action" in rows[0]
    assert "Promoted" in rows[1] and rows[1].startswith("2h00m ago")


def test_progress_lines_carry_phase_step_weight_and_verdicts() -> None:
    line = progress_line(analysing(), NOW)
    assert line.startswith("iris: Progressing (AnalysisRunning) | step 3/5 analysis (3 measurements)")
    assert "candidate 2.0.0 at 20%" in line
    assert "success-rate=97.5 Failed" in line and "custom=- Inconclusive" in line
    assert progress_line(promoted(), NOW) == "iris: Healthy (Available) | 2/2 replicas available"
    # No clock in the line: a log gets a new line only when something changed.
    assert progress_line(analysing(), NOW + timedelta(seconds=30)) == line


@pytest.mark.parametrize(
    ("rollout", "step", "needle"),
    [
        pytest.param({"shadow": {"durationSeconds": 60}}, 1, "mirroring", id="shadow mirrors"),
        pytest.param(
            {"abTest": {"match": [{"header": {"name": "x-variant", "value": "b"}}]}},
            1,
            "matching requests go to the candidate: header x-variant=b",
            id="an A/B test routes matches",
        ),
        pytest.param(
            {"abTest": {"userHash": {"header": "x-user-id", "weight": 30}}},
            0,
            "users split by a hash of x-user-id",
            id="an A/B test splits users",
        ),
    ],
)
def test_routing_beyond_weights_is_shown(rollout: dict[str, Any], step: int, needle: str) -> None:
    running = md(rollout=rollout, phase="Progressing", candidateVersion="2.0.0", currentStep=step)
    assert needle in render(split_view(running))


def test_every_strategy_lists_the_steps_the_operator_walks() -> None:
    blue_green = md(
        rollout={"blueGreen": {"prePromotionAnalysis": {}}, "analysis": {"metrics": [
            {"name": "ok", "builtin": "successRate", "threshold": {"min": 99}}]}},
        phase="Paused", candidateVersion="2.0.0", currentStep=2,
    )  # fmt: skip
    out = render(status_view(blue_green, [], NOW))
    assert "✓" in step_row(out, "preview at full size")
    assert "✓" in step_row(out, "analysis")
    assert "▶" in step_row(out, "pause until resumed")
    assert "setWeight 100" in out


def test_a_compared_check_explains_itself_and_retaken_looks_are_counted() -> None:
    line = "success 74.0 % vs stable 100.0 % (+26.0 pp failed, 99 % CI +0.9..+51.1; 50 vs 89 requests): worse"
    doc = analysing()
    assert doc.status.analysis is not None
    first = doc.status.analysis.metrics[0].model_copy(update={"message": line})
    analysis = doc.status.analysis.model_copy(
        update={"deferred": 1, "metrics": [first, *doc.status.analysis.metrics[1:]]}
    )
    doc = doc.model_copy(update={"status": doc.status.model_copy(update={"analysis": analysis})})
    out = render(status_view(doc, [], NOW))
    assert "success 74.0 % vs stable 100.0 %" in out and "worse" in line_with(out, "requests): worse")
    assert "2/3 measurements (1 retaken: too few requests)" in step_row(out, "analysis (3 measurements)")


def test_monitoring_shows_the_stable_models_verdict_and_each_checks_last_look() -> None:
    watched = md(
        phase="Healthy",
        stableVersion="2.0.0",
        conditions=conditions("Ready", "Available"),
        monitoring={
            "revision": "r1",
            "startedAt": (NOW - timedelta(minutes=20)).isoformat(),
            "lastLookAt": (NOW - timedelta(seconds=40)).isoformat(),
            "looks": 4,
            "failing": 2,
            "healthy": False,
            "metrics": [
                {
                    "name": "drift",
                    "verdict": "Failed",
                    "successful": 2,
                    "failed": 2,
                    "lastValue": 0.41,
                    "message": "PSI 0.41 vs reference: drifted",
                },
            ],
        },
    )
    doc = watched.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["monitoring"] = {
        "metrics": [{"name": "drift", "builtin": "inputDrift", "threshold": {"max": 0.2}}]
    }
    out = render(status_view(type(watched).model_validate(doc), [], NOW))
    flat = " ".join(out.split())
    assert "Monitoring 2.0.0: degraded (last look 40s ago, every 300s; 2 failing look(s) in a row, 2" in flat
    assert "degrade it; on degraded: alert)" in flat
    row = line_with(out, "drift")
    assert "0.41" in row and "≤ 0.2" in row and "Failed" in row and "2/2/0" in row
    assert "Monitoring" not in render(status_view(md(phase="Healthy"), [], NOW))

"""ModelDeployments with a status, as the operator writes them, for the plugin's unit tests."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console, RenderableType
from rollwise.api.v1alpha1 import ModelDeployment

from tests.unit.manifests import base

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
CANARY = {
    "canary": {
        "steps": [
            {"setWeight": 20},
            {"pause": {}},
            {"analysis": {"count": 3}},
            {"setWeight": 60},
            {"pause": {"durationSeconds": 30}},
        ]
    },
    "analysis": {
        "intervalSeconds": 5,
        "count": 5,
        "metrics": [
            {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
            {"name": "latency", "builtin": "latencyP99", "threshold": {"max": 0.25}},
            {"name": "custom", "query": "sum(up)", "threshold": {"min": 1, "max": 3}},
        ],
    },
}


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def conditions(state: str, reason: str) -> list[dict[str, Any]]:
    return [
        {
            "type": kind,
            "status": "True" if kind == state else "False",
            "reason": reason,
            "lastTransitionTime": ago(60),
        }
        for kind in ("Ready", "Reconciling", "Stalled")
    ]


def md(
    *,
    rollout: dict[str, Any] | None = None,
    generation: int = 2,
    observed: int | None = 2,
    annotations: dict[str, str] | None = None,
    **status: Any,
) -> ModelDeployment:
    """A ModelDeployment in namespace ml whose status has the given camelCase fields."""
    doc = base()
    doc["spec"]["model"]["version"] = "2.0.0"
    doc["spec"]["rollout"] = rollout if rollout is not None else CANARY
    doc["metadata"].update(
        generation=generation, uid="u-1", creationTimestamp=ago(3600), annotations=annotations or {}
    )
    doc["status"] = {"observedGeneration": observed, "strategy": "canary", "stableVersion": "1.0.0", **status}
    return ModelDeployment.model_validate(doc)


def paused_at_pause_step() -> ModelDeployment:
    """Step 2 of 5 (`pause: {}`), 20 % on the candidate, paused 65 s ago."""
    return md(
        phase="Paused",
        candidateVersion="2.0.0",
        candidateRevision="abc123def4567890",
        currentStep=1,
        stepStartedAt=ago(65),
        weight=20,
        message="step 2/5: pause until resumed; waiting for rollwise.dev/action resume or promote",
        conditions=conditions("Reconciling", "Paused"),
    )


def analysing() -> ModelDeployment:
    return md(
        phase="Progressing",
        candidateVersion="2.0.0",
        candidateRevision="abc123def4567890",
        currentStep=2,
        stepStartedAt=ago(12),
        weight=20,
        message="step 3/5: analysis",
        conditions=conditions("Reconciling", "AnalysisRunning"),
        analysis={
            "step": 2,
            "verdict": "Running",
            "startedAt": ago(12),
            "metrics": [
                {"name": "success-rate", "verdict": "Failed", "successful": 1, "failed": 1, "lastValue": 97.5,
                 "message": "97.5 is below the minimum 99"},
                {"name": "latency", "verdict": "Running", "successful": 2, "lastValue": 0.012345},
                {"name": "custom", "verdict": "Inconclusive", "successful": 1, "inconclusive": 1,
                 "message": "no data"},
            ],
        },
    )  # fmt: skip


def aborted() -> ModelDeployment:
    return md(
        phase="RolledBack",
        candidateVersion="2.0.0",
        candidateRevision="abc123def4567890",
        currentStep=1,
        stepStartedAt=ago(65),
        weight=0,
        message="rolled back; the stable serves all traffic "
        "(rolling back 2.0.0: aborted by rollwise.dev/action)",
        conditions=conditions("Stalled", "Aborted"),
        history=[
            {"version": "2.0.0", "revision": "abc123def4567890", "outcome": "Aborted",
             "message": "aborted by rollwise.dev/action", "finishedAt": ago(20)},
            {"version": "1.0.0", "revision": "0123456789abcdef", "outcome": "Promoted",
             "message": "1.0.0 is the new stable", "finishedAt": ago(7200)},
        ],
    )  # fmt: skip


def promoted() -> ModelDeployment:
    return md(
        phase="Healthy",
        stableVersion="2.0.0",
        weight=0,
        message="2/2 replicas available",
        conditions=conditions("Ready", "Available"),
        history=[
            {"version": "2.0.0", "revision": "abc123def4567890", "outcome": "Promoted",
             "message": "2.0.0 is the new stable", "finishedAt": ago(5)},
        ],
    )  # fmt: skip


def render(renderable: RenderableType, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def line_with(text: str, needle: str) -> str:
    """The one output line containing `needle` (fails if none or several)."""
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, (needle, lines, text)
    return lines[0]


def step_row(text: str, label: str) -> str:
    """The row of the steps table whose step reads `label` (or the promote row)."""
    pattern = re.compile(r"^[✓▶✗ ]\s+\d*\s+" + re.escape(label) + r"(\s|$)")
    rows = [line for line in text.splitlines() if pattern.match(line)]
    assert len(rows) == 1, (label, rows, text)
    return rows[0]

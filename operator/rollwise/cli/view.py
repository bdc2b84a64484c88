"""What `kubectl rollwise` shows: pure functions of a ModelDeployment, its Events and the time.

No I/O and no clock here (`now` is an argument): the commands fetch, these render, so every view
is unit-tested from status objects alone, and the demo shows exactly what the plugin shows.

The step list comes from `plan/steps.py`, the same list the operator walks, so `status.currentStep`
points at the same row for every strategy (blue/green, A/B and shadow become short step lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rollwise.api.v1alpha1 import (
    AnalysisStatus,
    BacktestPhase,
    BuiltinMetric,
    MetricCheck,
    ModelDeployment,
    Phase,
    Reason,
    ThresholdRange,
    Verdict,
)
from rollwise.cli.outcome import current_reason
from rollwise.plan.steps import (
    Analyze,
    Pause,
    Step,
    compact_duration,
    describe_match,
    describe_step,
    rollout_steps,
    routing_at,
)

PHASE_STYLE = {
    Phase.PENDING: "yellow",
    Phase.HEALTHY: "bold green",
    Phase.PROGRESSING: "bold cyan",
    Phase.PAUSED: "bold yellow",
    Phase.PROMOTING: "bold green",
    Phase.ROLLING_BACK: "bold red",
    Phase.ROLLED_BACK: "bold red",
    Phase.DEGRADED: "bold red",
    Phase.INVALID: "bold red",
}
VERDICT_STYLE = {
    Verdict.RUNNING: "cyan",
    Verdict.SUCCESSFUL: "green",
    Verdict.FAILED: "bold red",
    Verdict.INCONCLUSIVE: "yellow",
}
OUTCOME_STYLE = {Reason.PROMOTED: "green", Reason.SUPERSEDED: "yellow"}
UNITS = {
    BuiltinMetric.SUCCESS_RATE: "%",
    BuiltinMetric.LATENCY_P99: "s",
    BuiltinMetric.TIME_TO_FIRST_TOKEN_P95: "s",
    BuiltinMetric.INTER_TOKEN_LATENCY_P95: "s",
    BuiltinMetric.OUTPUT_TOKENS_PER_SECOND: " tokens/s",
}
BAR_WIDTH = 40


@dataclass(frozen=True)
class EventRow:
    """One Kubernetes Event about the ModelDeployment, from either Events API."""

    time: datetime | None
    type: str
    """Normal or Warning."""
    reason: str
    message: str
    count: int = 1


class Mark(StrEnum):
    """Where a step stands in the rollout on screen."""

    DONE = "done"
    CURRENT = "current"
    FAILED = "failed"
    PENDING = "pending"


SYMBOL = {Mark.DONE: "✓", Mark.CURRENT: "▶", Mark.FAILED: "✗", Mark.PENDING: " "}


# ---------------------------------------------------------------------------------------------
# Small pieces


age = compact_duration
"""kubectl's compact ages: 42s, 3m05s, 2h10m, 4d3h."""


def since(then: datetime | None, now: datetime) -> str:
    return "-" if then is None else age(now - then)


step_label = describe_step


def threshold_label(threshold: ThresholdRange, unit: str = "") -> str:
    """`≥ 99%`, `≤ 0.25s`, or `0.1..0.5`."""
    lo, hi = threshold.min, threshold.max
    if lo is not None and hi is not None:
        return f"{lo:g}..{hi:g}{unit}"
    if lo is not None:
        return f"≥ {lo:g}{unit}"
    return f"≤ {hi:g}{unit}"


def _phase_text(md: ModelDeployment) -> Text:
    phase = md.status.phase
    if phase is None:
        return Text("(not reconciled yet)", style="dim")
    return Text(phase.value, style=PHASE_STYLE.get(phase, ""))


def _steps(md: ModelDeployment) -> tuple[Step, ...]:
    try:
        return rollout_steps(md.spec.rollout)
    except ValueError:
        return ()


def _in_rollout(md: ModelDeployment) -> bool:
    return md.status.candidate_version is not None and md.status.phase in (
        Phase.PROGRESSING,
        Phase.PAUSED,
        Phase.PROMOTING,
        Phase.ROLLING_BACK,
        Phase.ROLLED_BACK,
    )


def step_position(md: ModelDeployment) -> str:
    """`2/4` while a step runs, `-` otherwise (kubectl-get style)."""
    steps = _steps(md)
    if not _in_rollout(md) or md.status.current_step is None or not steps:
        return "-"
    return f"{min(md.status.current_step, len(steps) - 1) + 1}/{len(steps)}"


# ---------------------------------------------------------------------------------------------
# Steps


def step_marks(md: ModelDeployment) -> list[Mark]:
    """One mark per step, then one for the promotion that follows the last step.

    Before the first step (the candidate starting, pre-rollout webhooks) the first step is
    current. A rollout that ended in a rollback marks the step it stopped at as failed (or the
    first, if it never got there); with no rollout every row is pending.
    """
    steps = _steps(md)
    n = len(steps)
    marks = [Mark.PENDING] * (n + 1)
    if not _in_rollout(md):
        return marks
    phase, at = md.status.phase, md.status.current_step
    index = 0 if at is None else min(at, n)
    if phase is Phase.PROMOTING:
        return [Mark.DONE] * n + [Mark.CURRENT]
    for i in range(index):
        marks[i] = Mark.DONE
    marks[index] = Mark.FAILED if phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK) else Mark.CURRENT
    return marks


def _step_detail(md: ModelDeployment, step: Step, now: datetime) -> str:
    """Time in step, against its duration or measurement count where it has one."""
    started = md.status.step_started_at
    spent = since(started, now)
    match step:
        case Pause(duration=d) if d is not None:
            return f"{spent} of {age(d)}"
        case Pause(duration=None):
            return f"{spent}, waiting for resume or promote"
        case Analyze(count=count):
            analysis = md.status.analysis
            spec = md.spec.rollout.analysis
            wanted = count if count is not None else (spec.count if spec is not None else None)
            taken = _taken(analysis)
            retaken = (
                f" ({analysis.deferred} retaken: too few requests)" if analysis and analysis.deferred else ""
            )
            return f"{spent}, {taken}/{wanted if wanted is not None else '?'} measurements{retaken}"
        case _:
            return spent


def _taken(analysis: AnalysisStatus | None) -> int:
    if analysis is None or not analysis.metrics:
        return 0
    return analysis.metrics[0].measurements


def steps_table(md: ModelDeployment, now: datetime) -> Table:
    steps = _steps(md)
    marks = step_marks(md)
    title = "Steps" if _in_rollout(md) else "Steps (no rollout in progress)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("", width=1)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("time in step")
    for i, (step, mark) in enumerate(zip(steps, marks, strict=False)):
        style = {Mark.CURRENT: "bold reverse", Mark.FAILED: "bold red", Mark.DONE: "green"}.get(mark, "dim")
        detail = _step_detail(md, step, now) if mark is Mark.CURRENT else ""
        if mark is Mark.FAILED:
            detail = "rolled back here"
        table.add_row(SYMBOL[mark], str(i + 1), step_label(step), detail, style=style)
    last = marks[-1] if marks else Mark.PENDING
    promote_style = "bold reverse" if last is Mark.CURRENT else "dim"
    detail = "updating the stable to the candidate" if last is Mark.CURRENT else ""
    if md.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK) and _in_rollout(md):
        detail, promote_style = "not reached", "dim"
    table.add_row(SYMBOL[last], "", "promote", detail, style=promote_style)
    return table


# ---------------------------------------------------------------------------------------------
# Traffic


def split_view(md: ModelDeployment) -> Text:
    """Stable and candidate weights as a bar, plus what the router does beyond weights."""
    weight = md.status.weight
    cand = round(BAR_WIDTH * weight / 100)
    if weight > 0:
        cand = max(cand, 1)
    if weight < 100:
        cand = min(cand, BAR_WIDTH - 1)
    text = Text("Traffic  ")
    stable_label = md.status.stable_version or "?"
    text.append(f"stable {stable_label} {100 - weight}% ", style="green")
    text.append("█" * (BAR_WIDTH - cand), style="green")
    text.append("█" * cand, style="cyan")
    candidate_label = md.status.candidate_version or "-"
    text.append(f" {weight}% candidate {candidate_label}", style="cyan")
    extra = _routing_extra(md)
    if extra:
        text.append(f"\n         {extra}", style="cyan")
    return text


def _routing_extra(md: ModelDeployment) -> str:
    steps = _steps(md)
    at = md.status.current_step
    if md.status.phase not in (Phase.PROGRESSING, Phase.PAUSED) or at is None or not steps:
        return ""
    split = routing_at(steps, min(at, len(steps) - 1))
    parts = []
    if split.mirror:
        parts.append("mirroring: the candidate also gets a copy of every request")
    if split.matches:
        matches = ", ".join(map(describe_match, split.matches))
        parts.append(f"matching requests go to the candidate: {matches}")
    if split.sticky_header:
        parts.append(f"users split by a hash of {split.sticky_header}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Analysis


def _check(md: ModelDeployment, name: str) -> MetricCheck | None:
    spec = md.spec.rollout.analysis
    if spec is None:
        return None
    return next((m for m in spec.metrics if m.name == name), None)


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.4g}{unit}"


def analysis_table(md: ModelDeployment, now: datetime) -> RenderableType | None:
    """Each metric of the current (or last) analysis: value, threshold, verdict, tallies."""
    analysis = md.status.analysis
    if analysis is None:
        return None
    step = "" if analysis.step is None else f" of step {analysis.step + 1}"
    which = "Analysis" if md.status.phase in (Phase.PROGRESSING, Phase.PAUSED) else "Last analysis"
    title = Text.assemble(
        f"{which}{step}: ",
        (analysis.verdict.value, VERDICT_STYLE.get(analysis.verdict, "")),
        f" (started {since(analysis.started_at, now)} ago)",
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("metric", "value", "threshold", "verdict", "pass/fail/inconclusive", "detail"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for m in analysis.metrics:
        check = _check(md, m.name)
        unit = UNITS.get(check.builtin, "") if check is not None and check.builtin is not None else ""
        threshold = threshold_label(check.threshold, unit) if check is not None else "?"
        table.add_row(
            m.name,
            format_value(m.last_value, unit),
            threshold,
            Text(m.verdict.value, style=VERDICT_STYLE.get(m.verdict, "")),
            f"{m.successful}/{m.failed}/{m.inconclusive}",
            Text(m.message, overflow="fold"),
        )
    return table


BACKTEST_STYLE = {
    BacktestPhase.RUNNING: "cyan",
    BacktestPhase.PASSED: "green",
    BacktestPhase.FAILED: "bold red",
    BacktestPhase.INCONCLUSIVE: "yellow",
}


def backtest_table(md: ModelDeployment, now: datetime) -> RenderableType | None:
    """The current (or last) candidate's backtest: each metric's candidate and stable values,
    the bound the verdict compared with the tolerance, and the verdict."""
    bt = md.status.backtest
    if bt is None:
        return None
    rows = f", {bt.rows} rows ({bt.rows_rejected} rejected)" if bt.rows else ""
    title = Text.assemble(
        "Backtest: ",
        (bt.phase.value, BACKTEST_STYLE.get(bt.phase, "")),
        f" (Job {bt.job_name}, started {since(bt.started_at, now)} ago{rows})",
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("metric", "candidate", "stable", "bound", "tolerance", "verdict", "detail"):
        table.add_column(
            column, justify="right" if column in ("candidate", "stable", "bound", "tolerance") else "left"
        )
    for r in bt.metrics:
        table.add_row(
            r.name.value if r.segment is None else f"{r.name.value} [{r.segment}]",
            format_value(r.candidate),
            format_value(r.baseline),
            format_value(r.bound),
            format_value(r.tolerance),
            Text(r.verdict.value, style=VERDICT_STYLE.get(r.verdict, "")),
            Text(r.message, overflow="fold"),
        )
    if not bt.metrics:
        table.add_row("-", "-", "-", "-", "-", "-", Text(bt.message, overflow="fold"))
    return table


def monitoring_table(md: ModelDeployment, now: datetime) -> RenderableType | None:
    """`spec.monitoring`'s latest look at the stable model: its verdict and each check's reading."""
    spec, mon = md.spec.monitoring, md.status.monitoring
    if spec is None or mon is None:
        return None
    verdict = {None: ("no verdict yet", ""), True: ("healthy", "green"), False: ("degraded", "bold red")}
    word, style = verdict[mon.healthy]
    last = f"last look {since(mon.last_look_at, now)} ago" if mon.last_look_at else "no look yet"
    title = Text.assemble(
        f"Monitoring {md.status.stable_version}: ",
        (word, style),
        f" ({last}, every {spec.interval_seconds}s; {mon.failing} failing look(s) in a row, "
        f"{spec.failure_limit + 1} degrade it; on degraded: {spec.on_degraded.value})",
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("metric", "value", "threshold", "last look", "pass/fail/inconclusive", "detail"):
        table.add_column(column, justify="right" if column == "value" else "left")
    checks = {c.name: c for c in spec.metrics}
    for m in mon.metrics:
        check = checks.get(m.name)
        unit = UNITS.get(check.builtin, "") if check is not None and check.builtin is not None else ""
        table.add_row(
            m.name,
            format_value(m.last_value, unit),
            threshold_label(check.threshold, unit) if check is not None else "?",
            Text(m.verdict.value, style=VERDICT_STYLE.get(m.verdict, "")),
            f"{m.successful}/{m.failed}/{m.inconclusive}",
            Text(m.message, overflow="fold"),
        )
    return table


# ---------------------------------------------------------------------------------------------
# Events and history


def events_table(events: Sequence[EventRow], now: datetime, limit: int = 8) -> Table:
    """The newest `limit` Events, oldest first, as `kubectl describe` lists them."""
    recent = sorted(events, key=lambda e: (e.time is not None, e.time or now))[-limit:] if limit else []
    table = Table(title="Events", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("age", "type", "reason", "message"):
        table.add_column(column)
    for e in recent:
        count = f" (x{e.count})" if e.count > 1 else ""
        table.add_row(
            since(e.time, now),
            Text(e.type, style="bold red" if e.type == "Warning" else ""),
            e.reason,
            Text(e.message + count, overflow="fold"),
        )
    if not recent:
        table.add_row("", "", "", Text("(none)", style="dim"))
    return table


def history_table(md: ModelDeployment, now: datetime) -> Table:
    """Finished rollouts, newest first, as `status.history` keeps them."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("finished", "version", "revision", "outcome", "message"):
        table.add_column(column)
    for h in md.status.history:
        table.add_row(
            f"{since(h.finished_at, now)} ago",
            h.version,
            h.revision[:12],
            Text(h.outcome.value, style=OUTCOME_STYLE.get(h.outcome, "red")),
            Text(h.message, overflow="fold"),
        )
    return table


# ---------------------------------------------------------------------------------------------
# Whole views


def header(md: ModelDeployment, now: datetime) -> Text:
    s = md.status
    meta = md.metadata
    text = Text.assemble(
        ("ModelDeployment ", "dim"),
        (f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name, "bold"),
        "  ",
        _phase_text(md),
    )
    reason = current_reason(md)
    if reason:
        text.append(f" ({reason})")
    strategy = s.strategy.value if s.strategy is not None else md.spec.rollout.strategy.value
    text.append(f"\nstrategy {strategy}", style="")
    text.append(f"   router {md.spec.rollout.traffic.provider.value}")
    text.append(f"   stable {s.stable_version or '-'}")
    if s.candidate_version is not None:
        text.append(f"   candidate {s.candidate_version}", style="cyan")
    position = step_position(md)
    if position != "-":
        text.append(f"   step {position}")
        if s.step_started_at is not None and s.phase in (Phase.PROGRESSING, Phase.PAUSED):
            text.append(f" for {since(s.step_started_at, now)}")
    if s.message:
        text.append(f"\n{s.message}", style="italic")
    if s.observed_generation != meta.generation:
        text.append(
            f"\nthe operator has not seen generation {meta.generation} yet "
            f"(status is for {s.observed_generation})",
            style="yellow",
        )
    return text


def status_view(
    md: ModelDeployment, events: Sequence[EventRow], now: datetime, *, events_limit: int = 8
) -> RenderableType:
    """The live view of one ModelDeployment: header, steps, traffic, analysis, recent Events."""
    parts: list[RenderableType] = [header(md, now), Text(""), steps_table(md, now), Text(""), split_view(md)]
    tested = backtest_table(md, now)
    if tested is not None:
        parts += [Text(""), tested]
    analysis = analysis_table(md, now)
    if analysis is not None:
        parts += [Text(""), analysis]
    watched = monitoring_table(md, now)
    if watched is not None:
        parts += [Text(""), watched]
    if events_limit:
        parts += [Text(""), events_table(events, now, events_limit)]
    return Group(*parts)


def list_table(mds: Sequence[ModelDeployment], now: datetime, *, all_namespaces: bool) -> Table:
    """`kubectl rollwise list`: one row per ModelDeployment."""
    table = Table(show_edge=False, pad_edge=False, box=None)
    columns = ["NAME", "STRATEGY", "PHASE", "STABLE", "CANDIDATE", "STEP", "WEIGHT", "IN STEP", "AGE"]
    if all_namespaces:
        columns.insert(0, "NAMESPACE")
    for column in columns:
        table.add_column(column, header_style="bold")
    for md in mds:
        s = md.status
        row: list[str | Text] = [
            md.metadata.name,
            (s.strategy or md.spec.rollout.strategy).value,
            _phase_text(md),
            s.stable_version or "-",
            s.candidate_version or "-",
            step_position(md),
            f"{s.weight}%",
            since(s.step_started_at, now) if s.step_started_at is not None and _in_rollout(md) else "-",
            since(md.metadata.creation_timestamp, now),
        ]
        if all_namespaces:
            row.insert(0, md.metadata.namespace or "")
        table.add_row(*row)
    return table


def progress_line(md: ModelDeployment, now: datetime) -> str:
    """One line per change, for logs where a live view cannot redraw (CI, pipes)."""
    s = md.status
    phase = s.phase.value if s.phase is not None else "(not reconciled)"
    parts = [f"{md.metadata.name}: {phase}"]
    reason = current_reason(md)
    if reason and reason != phase:
        parts[0] += f" ({reason})"
    position = step_position(md)
    if position != "-":
        steps = _steps(md)
        index = min(s.current_step or 0, len(steps) - 1)
        parts.append(f"step {position} {step_label(steps[index])}")
    if s.candidate_version is not None:
        parts.append(f"candidate {s.candidate_version} at {s.weight}%")
    if s.analysis is not None and s.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.ROLLING_BACK):
        verdicts = ", ".join(
            f"{m.name}={format_value(m.last_value)} {m.verdict.value}" for m in s.analysis.metrics
        )
        if verdicts:
            parts.append(verdicts)
    if s.message:
        parts.append(s.message)
    return " | ".join(parts)

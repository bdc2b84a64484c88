"""The rollout's position (`State`, exactly what the status stores) and what a pass reads
besides it (`World`: the spec, the observed children, the time, the router).

Questions both the transitions and the desired objects ask of a position live here: which step runs,
whether its work is done, which split it routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property

from rollwise.api.v1alpha1 import (
    AnalysisSpec,
    AnalysisStatus,
    BacktestStatus,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentStatus,
    MonitoringStatus,
    Phase,
    Reason,
    RevisionSpec,
    StrategyName,
)
from rollwise.plan.decision import EventType, Note
from rollwise.plan.observed import Observed
from rollwise.plan.revision import revision_from_spec, revision_of
from rollwise.plan.router import Router, RouterReading
from rollwise.plan.split import TrafficSplit
from rollwise.plan.steps import Analyze, Pause, SetWeight, Step, routing_at

ROLLOUT_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING})
"""Phases in which a candidate runs and may take traffic."""


ENDED_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK})
"""Phases in which the candidate exists at zero replicas after a failure or abort."""


STEADY_PHASES = frozenset({Phase.PENDING, Phase.HEALTHY, Phase.DEGRADED})
"""No rollout: the stable serves everything; the phase follows the stable's health."""


@dataclass(frozen=True)
class State:
    phase: Phase
    stable: RevisionSpec
    """What the stable track runs (the candidate's revision once promotion starts)."""
    candidate: str | None = None
    """Revision hash of the candidate; None when no rollout happened since the last promotion."""
    candidate_version: str | None = None
    step: int | None = None
    """Index into the strategy's steps; None before the first step (pre-rollout gate)."""
    step_started_at: datetime | None = None
    analysis: AnalysisStatus | None = None
    reason: Reason = Reason.AVAILABLE
    message: str = ""
    last_action: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    previous_stable: RevisionSpec | None = None
    """The stable before the last promotion (`monitoring.onDegraded: rollback` returns to it)."""
    monitoring: MonitoringStatus | None = None
    backtest: BacktestStatus | None = None
    """The candidate's backtest (`spec.rollout.backtest`), kept after the rollout ends."""
    notes: tuple[Note, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, md: ModelDeployment) -> State:
        """The state the last pass wrote; a new object starts Pending with the spec as stable."""
        s = md.status
        stable = s.stable if s.stable is not None else revision_from_spec(md)
        return cls(
            phase=s.phase or Phase.PENDING,
            stable=stable,
            candidate=s.candidate_revision,
            candidate_version=s.candidate_version,
            step=s.current_step,
            step_started_at=s.step_started_at,
            analysis=s.analysis,
            reason=_reason_of(s),
            message=s.message,
            last_action=s.last_action,
            history=tuple(s.history),
            previous_stable=s.previous_stable,
            monitoring=s.monitoring,
            backtest=s.backtest,
        )

    def note(self, kind: EventType, reason: Reason, message: str) -> State:
        return replace(self, notes=(*self.notes, Note(kind, reason, message)))


def _reason_of(status: ModelDeploymentStatus) -> Reason:
    for c in status.conditions:
        if c.status == "True":
            return c.reason
    return Reason.AVAILABLE


@dataclass(frozen=True)
class World:
    """Everything a pass reads, besides the state: the spec, what was observed, the time."""

    md: ModelDeployment
    observed: Observed
    now: datetime
    router: Router
    steps: tuple[Step, ...]
    problems: tuple[str, ...]

    @property
    def spec_revision(self) -> str:
        return revision_of(revision_from_spec(self.md))

    @property
    def analysis_spec(self) -> AnalysisSpec | None:
        return self.md.spec.rollout.analysis

    @property
    def deadline(self) -> timedelta:
        return timedelta(seconds=self.md.spec.rollout.progress_deadline_seconds)

    def candidate_ready(self, state: State) -> bool:
        """The candidate Deployment runs the candidate revision, fully rolled out and available."""
        c = self.observed.candidate
        return c.available and c.revision == state.candidate

    def candidate_serving(self, state: State) -> bool:
        """The candidate revision has a pod available and no older pod left: a proxy routing to its
        Service reaches it. Unlike `candidate_ready`, it holds while the Deployment scales (a
        shadow taking the candidate from one pod to full)."""
        c = self.observed.candidate
        return c.exists and c.revision == state.candidate and c.current_pods_only and c.available_replicas > 0

    def stable_ready(self, state: State) -> bool:
        s = self.observed.stable
        return s.available and s.revision == revision_of(state.stable)

    @cached_property
    def reading(self) -> RouterReading:
        """The router's reading of the live objects, read once a pass (the objects do not change
        within one, and the machine asks several times)."""
        return self.router.read(self.md, (*self.observed.children, *self.observed.router_objects))

    def routes(self, split: TrafficSplit) -> bool:
        """The router reports `split` in effect on the live objects."""
        return self.reading.carries(split)

    def unrouted(self) -> bool:
        """The router's object is missing: nothing can route to the candidate through it."""
        return self.reading.split is None

    def router_message(self) -> str:
        return self.reading.message


def current_step(world: World, state: State) -> Step | None:
    if state.step is None or not 0 <= state.step < len(world.steps):
        return None
    return world.steps[state.step]


def is_switch(world: World, state: State) -> bool:
    """Blue/green's last step: the switch, held for scaleDownDelaySeconds as an instant rollback."""
    return (
        world.md.spec.rollout.strategy is StrategyName.BLUE_GREEN
        and state.step is not None
        and state.step == len(world.steps) - 1
    )


def blue_green_delay(world: World) -> int:
    bg = world.md.spec.rollout.blue_green
    return 0 if bg is None else bg.scale_down_delay_seconds


def step_work_done(world: World, state: State) -> bool:
    """The current step has done its work (analysis steps finish through `Judged`)."""
    step = current_step(world, state)
    started = state.step_started_at or world.now
    match step:
        case Pause(duration=None) | Analyze() | None:
            return False
        case Pause(duration=d) if d is not None:
            return world.now >= started + d
        case SetWeight() if is_switch(world, state):
            delay = timedelta(seconds=blue_green_delay(world))
            return (
                world.candidate_ready(state)
                and world.routes(routed_split(world, state))
                and (world.now >= started + delay)
            )
        case _:
            return world.candidate_ready(state) and world.routes(routed_split(world, state))


def routed_split(world: World, state: State) -> TrafficSplit:
    """The split a state routes.

    In progress: the split at the current step (all-stable before the first). Promoting: only the
    weighted share, so the stable rolls to the new revision once, without mirror or hash flags.
    Otherwise: all-stable, no mirroring.

    Behind a router that routes to the track Services (a gateway, a mesh, an ingress), nothing is
    sent to a candidate that is not available: its Service has no endpoint for the proxy, which
    answers the candidate's share with errors (Traefik: 503 "no available server") until one is
    ready. The replicas router needs no such guard (a pod takes traffic once it is ready), and must
    not have it: its split sets the candidate's replicas.
    """
    match state.phase:
        case Phase.PROGRESSING | Phase.PAUSED if state.step is not None:
            if world.router.routes_to_tracks and not world.candidate_serving(state):
                return TrafficSplit.stable_only()
            return routing_at(world.steps, min(state.step, len(world.steps) - 1))
        case Phase.PROMOTING if state.step is not None:
            return TrafficSplit(candidate=routing_at(world.steps, state.step).candidate)
        case _:
            return TrafficSplit.stable_only()


def candidate_exists(state: State) -> bool:
    return state.candidate is not None and state.phase in (ROLLOUT_PHASES | ENDED_PHASES)


def required_analysis_spec(world: World) -> AnalysisSpec:
    spec = world.analysis_spec
    if spec is None:  # the API rejects analysis steps without spec.rollout.analysis
        raise ValueError("spec.rollout.analysis: required by the strategy's analysis step")
    return spec

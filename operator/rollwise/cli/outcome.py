"""Has a rollout ended, and how; does a manual action apply now. Pure: status in, answer out.

`--wait` and the exit codes rest on `ended`: a CI job gates on it, so it only answers from a
status the operator wrote for the current spec (`status.observedGeneration == metadata.generation`);
right after `kubectl apply` the old status would otherwise read as "promoted". `refusal` mirrors
when `plan/machine.py` applies an action, so the plugin explains a pointless action at once
instead of writing an annotation the operator would ignore (`tests/unit/test_cli_outcome.py`
checks the two agree, phase by phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from rollwise.api.actions import Action
from rollwise.api.v1alpha1 import ModelDeployment, Phase, Reason


class ExitCode(IntEnum):
    """What `kubectl rollwise` returns, so a CI step can gate on a rollout."""

    OK = 0
    """The command did what it said; with --wait: promoted (Healthy, no candidate)."""
    ROLLED_BACK = 1
    """With --wait: the rollout was rolled back, aborted, or cannot go on (invalid spec, stable down)."""
    USAGE = 2
    """Bad arguments, no such object, no cluster, or an action that does not apply now."""
    TIMEOUT = 3
    """--timeout passed before the rollout ended (or before the operator took up the action)."""


class Outcome(StrEnum):
    """How a rollout ended."""

    PROMOTED = "Promoted"
    """Healthy and no candidate: the spec's version serves all traffic."""
    ROLLED_BACK = "RolledBack"
    """The candidate was rolled back (failed analysis, deadline, webhook) or aborted."""
    INVALID = "Invalid"
    """The spec cannot be acted on; the running version keeps serving."""
    DEGRADED = "Degraded"
    """No rollout, but the stable version is not available."""


@dataclass(frozen=True)
class Ended:
    outcome: Outcome
    reason: str
    """CamelCase reason: Promoted, Available, Aborted, AnalysisFailed, ProgressDeadlineExceeded, ..."""
    message: str

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.outcome is Outcome.PROMOTED else ExitCode.ROLLED_BACK


def current_reason(md: ModelDeployment) -> str:
    """The reason of the kstatus condition that is True (all three carry the same reason)."""
    for c in md.status.conditions:
        if c.status == "True":
            return c.reason.value
    return ""


def observed(md: ModelDeployment) -> bool:
    """The status describes the current spec: the operator has seen the latest change."""
    s = md.status
    return s.observed_generation is not None and s.observed_generation == md.metadata.generation


def ended(md: ModelDeployment) -> Ended | None:
    """How the rollout ended, or None while it runs (or the operator has not seen the spec yet).

    RollingBack is not an end: the traffic is still moving back to stable. Pending (a first
    version not ready yet) is not an end either: it becomes Healthy or Degraded.
    """
    if not observed(md):
        return None
    s = md.status
    reason = current_reason(md)
    match s.phase:
        case Phase.HEALTHY if s.candidate_version is None:
            last = s.history[0] if s.history else None
            if last is not None and last.outcome is Reason.PROMOTED:
                reason = last.outcome.value
            return Ended(Outcome.PROMOTED, reason, s.message)
        case Phase.ROLLED_BACK:
            last = s.history[0] if s.history else None
            if last is not None and last.outcome is Reason.ABORTED:
                reason = Reason.ABORTED.value
            return Ended(Outcome.ROLLED_BACK, reason, s.message)
        case Phase.INVALID:
            return Ended(Outcome.INVALID, reason, s.message)
        case Phase.DEGRADED:
            return Ended(Outcome.DEGRADED, reason, s.message)
        case _:
            return None


LIVE = frozenset({Phase.PROGRESSING, Phase.PAUSED})
"""Phases in which the operator applies pause, promote, promote-full and abort."""


def refusal(md: ModelDeployment, action: Action) -> str | None:  # noqa: C901 - a flat table: one case per (phase, action)
    """Why `action` would be ignored by the operator now, with what to do instead; None if it applies.

    A status the operator has not brought up to date with the spec is not judged: the operator
    will decide on the fresh spec, and ignored actions are still explained in an Event.
    """
    if not observed(md):
        return None
    name, s = md.metadata.name, md.status
    phase = s.phase or Phase.PENDING
    where = f"{name} is {phase.value}" + (f" ({s.message})" if s.message else "")
    match (phase, action):
        case (Phase.PROGRESSING, Action.PAUSE) | (Phase.PAUSED, Action.RESUME):
            return None
        case (p, Action.PROMOTE | Action.PROMOTE_FULL | Action.ABORT) if p in LIVE:
            return None
        case (Phase.ROLLED_BACK | Phase.ROLLING_BACK, Action.RETRY):
            return None
        case (Phase.PAUSED, Action.PAUSE):
            return f"{where}: already paused; resume it with `kubectl rollwise resume {name}`"
        case (Phase.PROGRESSING, Action.RESUME):
            return f"{where}: not paused, nothing to resume; pause it first, or promote it"
        case (Phase.PROMOTING, _):
            return f"{where}: already promoting; wait for it with `kubectl rollwise wait {name}`"
        case (Phase.ROLLED_BACK | Phase.ROLLING_BACK, _):
            return (
                f"{where}: the rollout has ended; start it again with `kubectl rollwise retry {name}`, "
                "or change spec.model to roll out another version"
            )
        case (Phase.INVALID, _):
            return f"{where}: the spec is invalid; fix the spec first (kubectl describe md {name})"
        case (_, Action.RETRY):
            return f"{where}: nothing to retry; retry restarts a rolled-back candidate"
        case _:
            return f"{where}: no rollout in progress; change spec.model (version, uri or sha256) to start one"

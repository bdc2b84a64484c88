"""Every strategy as one ordered list of steps, so the state machine walks a single shape.

Canary steps map one to one. Blue/green, A/B and shadow become short fixed sequences (route the
candidate somewhere, judge it, wait), and promotion always follows the last step. The step list is
derived from the spec alone, so `status.currentStep` means the same step after an operator restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from rollwise_contract.matches import RequestMatch

from rollwise.api.v1alpha1 import AbTest, AnalysisStep, BlueGreen, Canary, Rollout, Shadow
from rollwise.plan.split import TrafficSplit


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of live traffic to the candidate."""

    weight: int


@dataclass(frozen=True)
class Pause:
    """Hold for `duration`; None holds until a human resumes or promotes."""

    duration: timedelta | None


@dataclass(frozen=True)
class Analyze:
    """Run the rollout's analysis for `count` measurements (None: the analysis's own count).

    With `bake`, a canary's bake step: looks are taken from the start, a failing one ends it at
    once, and passes or inconclusive looks count only from `bake` after the start."""

    count: int | None
    bake: timedelta | None = None


@dataclass(frozen=True)
class Preview:
    """Blue/green: run the candidate at `replicas` pods (None: as many as stable) behind its own
    Service, with no live traffic."""

    replicas: int | None


@dataclass(frozen=True)
class RouteMatches:
    """A/B: requests matching any of `matches` go to the candidate."""

    matches: tuple[RequestMatch, ...]


@dataclass(frozen=True)
class SplitUsers:
    """A/B: hash the user id in `header`; `weight` percent of users go to the candidate, sticky."""

    header: str
    weight: int


@dataclass(frozen=True)
class Mirror:
    """Shadow: copy live traffic to the candidate; clients only see stable's answers."""


Step = SetWeight | Pause | Analyze | Preview | RouteMatches | SplitUsers | Mirror


def _analysis(step: AnalysisStep | None) -> list[Step]:
    return [] if step is None else [Analyze(count=step.count)]


def _seconds(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def canary_steps(canary: Canary) -> list[Step]:
    """The declared steps, in order."""
    out: list[Step] = []
    for s in canary.steps:
        if s.set_weight is not None:
            out.append(SetWeight(s.set_weight))
        elif s.pause is not None:
            out.append(Pause(_seconds(s.pause.duration_seconds)))
        elif s.analysis is not None:
            out.append(Analyze(s.analysis.count))
        elif s.bake is not None:
            out.append(Analyze(s.bake.count, bake=timedelta(seconds=s.bake.duration_seconds)))
    return out


def blue_green_steps(bg: BlueGreen) -> list[Step]:
    """Preview at full size, analyse it, wait for the auto-promotion delay or a human, then switch."""
    out: list[Step] = [Preview(bg.preview_replicas), *_analysis(bg.pre_promotion_analysis)]
    if bg.auto_promotion_seconds is None:
        out.append(Pause(None))
    elif bg.auto_promotion_seconds > 0:
        out.append(Pause(timedelta(seconds=bg.auto_promotion_seconds)))
    out.append(SetWeight(100))
    return out


def _judge_then_wait(analysis: AnalysisStep | None, duration_seconds: int | None) -> list[Step]:
    """Analyse, then run for the duration; with neither, wait for a human."""
    out = _analysis(analysis)
    if duration_seconds is not None:
        out.append(Pause(timedelta(seconds=duration_seconds)))
    elif not out:
        out.append(Pause(None))
    return out


def ab_test_steps(ab: AbTest) -> list[Step]:
    """Route by match or by user hash, then judge and wait."""
    route: Step = (
        SplitUsers(ab.user_hash.header, ab.user_hash.weight)
        if ab.user_hash is not None
        else RouteMatches(tuple(ab.match or ()))
    )
    return [route, *_judge_then_wait(ab.analysis, ab.duration_seconds)]


def shadow_steps(shadow: Shadow) -> list[Step]:
    """Mirror, then judge and wait."""
    return [Mirror(), *_judge_then_wait(shadow.analysis, shadow.duration_seconds)]


def rollout_steps(rollout: Rollout) -> tuple[Step, ...]:
    """The strategy's steps in order; promotion follows the last one."""
    if rollout.blue_green is not None:
        return tuple(blue_green_steps(rollout.blue_green))
    if rollout.ab_test is not None:
        return tuple(ab_test_steps(rollout.ab_test))
    if rollout.shadow is not None:
        return tuple(shadow_steps(rollout.shadow))
    if rollout.canary is not None:
        return tuple(canary_steps(rollout.canary))
    raise ValueError("spec.rollout: set exactly one strategy block: canary, blueGreen, abTest or shadow")


def split_at(steps: Sequence[Step], index: int) -> TrafficSplit:
    """The split in effect once `steps[: index + 1]` have run; index -1 is before the first step.

    Weight comes from the last SetWeight or SplitUsers at or before `index`; matches and previews
    send no weighted share; mirroring, once started, stays on until the rollout ends.
    Example: [SetWeight(5), Analyze(None), SetWeight(25)] at index 1 -> candidate 5.
    """
    if not -1 <= index < len(steps):
        raise IndexError(f"step {index} is outside 0..{len(steps) - 1}")
    weight, mirror = 0, False
    for step in steps[: index + 1]:
        match step:
            case SetWeight(weight=w) | SplitUsers(weight=w):
                weight = w
            case Mirror():
                mirror = True
            case _:
                pass
    return TrafficSplit(candidate=weight, mirror=mirror)


def routing_at(steps: Sequence[Step], index: int) -> TrafficSplit:
    """`split_at` plus what routers need beyond the weight: the A/B matches and the user-hash
    header in effect. Index -1 (before the first step) is all-stable.

    Example: [SplitUsers("x-user-id", 20), Pause(None)] at 1 -> 20 %, sticky on x-user-id.
    """
    base = split_at(steps, index)
    matches: tuple[RequestMatch, ...] = ()
    header: str | None = None
    for step in steps[: index + 1]:
        match step:
            case RouteMatches(matches=m):
                matches = m
            case SplitUsers(header=h):
                header = h
            case _:
                pass
    return TrafficSplit(candidate=base.candidate, mirror=base.mirror, matches=matches, sticky_header=header)


def compact_duration(delta: timedelta) -> str:
    """kubectl's compact ages: 42s, 3m05s, 2h10m, 4d3h. A negative delta (clock skew) is 0s."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def describe_step(step: Step) -> str:  # noqa: C901 - a flat table: one case per step kind
    """A step as a user wrote it in the spec (or as the strategy implies it): one wording for the
    status message the operator writes and the plugin's step table."""
    match step:
        case SetWeight(weight=w):
            return f"setWeight {w}"
        case Pause(duration=None):
            return "pause until resumed"
        case Pause(duration=d) if d is not None:
            return f"pause {compact_duration(d)}"
        case Analyze(bake=b) if b is not None:
            return f"bake {compact_duration(b)} (analysis looking)"
        case Analyze(count=None):
            return "analysis"
        case Analyze(count=n):
            return f"analysis ({n} measurements)"
        case Preview(replicas=None):
            return "preview at full size (no live traffic)"
        case Preview(replicas=n):
            return f"preview with {n} pods (no live traffic)"
        case RouteMatches(matches=matches):
            return "route matching requests: " + ", ".join(describe_match(m) for m in matches)
        case SplitUsers(header=h, weight=w):
            return f"{w}% of users by {h}"
        case Mirror():
            return "mirror all traffic (answers discarded)"
        case _:
            return type(step).__name__


def describe_match(match: RequestMatch) -> str:
    if match.header is not None:
        value = match.header.value if match.header.value is not None else f"~{match.header.regex}"
        return f"header {match.header.name}={value}"
    if match.cookie is not None:
        return f"cookie {match.cookie.name}={match.cookie.value}"
    return "?"

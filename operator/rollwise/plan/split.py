"""Traffic splits between the stable and candidate tracks, and their replica arithmetic.

The `replicas` router has no proxy: a Service spreads requests evenly over ready pods, so the only
lever on the weight is how many pods each track runs: `replicas_for` turns a weight into pods, and
`pods_per_track` sizes both tracks for any rollout position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollwise_contract.matches import RequestMatch


@dataclass(frozen=True)
class TrafficSplit:
    """Percent of live traffic on each track; `mirror` also copies stable's traffic to the candidate."""

    candidate: int
    """Percent of requests answered by the candidate, 0..100; stable answers the rest."""
    mirror: bool = False
    """Shadow: the candidate also receives a copy of every request, its answers discarded."""
    matches: tuple[RequestMatch, ...] = ()
    """A/B: requests matching any of these go to the candidate, whatever `candidate` says."""
    sticky_header: str | None = None
    """A/B user hash: `candidate` percent of users, picked by hashing this header, go to the
    candidate, and the same user always lands on the same side."""

    def __post_init__(self) -> None:
        if not 0 <= self.candidate <= 100:
            raise ValueError(f"candidate weight {self.candidate} is not a percentage; use 0..100")
        if self.sticky_header is not None and not 0 < self.candidate < 100:
            raise ValueError(f"a user-hash split needs a weight from 1 to 99, not {self.candidate}")

    @property
    def stable(self) -> int:
        """Percent of requests answered by stable; always `100 - candidate`."""
        return 100 - self.candidate

    @classmethod
    def stable_only(cls) -> TrafficSplit:
        """All traffic to stable, no mirroring: the steady state, and the result of any abort."""
        return cls(candidate=0)

    @property
    def touches_candidate(self) -> bool:
        """Whether any request (weighted, matched, hashed or mirrored) reaches the candidate."""
        return self.candidate > 0 or self.mirror or bool(self.matches)


@dataclass(frozen=True)
class TrackReplicas:
    """Pod counts of the two tracks."""

    stable: int
    candidate: int

    @property
    def total(self) -> int:
        return self.stable + self.candidate


def replicas_for(split: TrafficSplit, total: int) -> TrackReplicas:
    """Share `total` pods between the tracks so their ratio approximates the split.

    The candidate gets `total * weight / 100` pods rounded half up, then clamped so that a weight
    strictly between 0 and 100 keeps at least one pod on each track whenever `total >= 2`: a 5 %
    canary must still be measured, and stable must still answer the other 95 %.

    Worked example, 4 pods:
      weight  5 -> 4 * 5 / 100 = 0.2  -> 0, clamped up to 1  -> stable 3, candidate 1 (25 % real)
      weight 50 -> 4 * 50 / 100 = 2.0 -> 2                  -> stable 2, candidate 2
      weight 99 -> 4 * 99 / 100 = 3.96 -> 4, clamped to 3   -> stable 1, candidate 3 (75 % real)
      weight 100 -> 4                                       -> stable 0, candidate 4
    With one pod the split is all or nothing (weights below 50 keep it on stable).
    """
    if total < 0:
        raise ValueError(f"total replicas {total} is negative")
    candidate = (total * split.candidate + 50) // 100
    if 0 < split.candidate < 100 and total >= 2:
        candidate = min(max(candidate, 1), total - 1)
    return TrackReplicas(stable=total - candidate, candidate=candidate)


def candidate_share(total: int, weight: int) -> int:
    """Candidate pods for a weight when the stable stays full: ceil(total * weight / 100), >= 1."""
    return max(1, math.ceil(total * weight / 100))


def pods_per_track(
    split: TrafficSplit,
    total: int,
    *,
    candidate_runs: bool,
    promoting: bool,
    blue_green_preview: int | None,
    preview_step: bool,
    by_weight: bool,
) -> TrackReplicas:
    """Pods per track for `total` pods per track (the spec's replicas, or an HPA bound).

    - No candidate running (none, or after an abort or rollback): stable full, candidate 0.
    - Blue/green (`blue_green_preview`: its preview size): both full, the preview possibly smaller;
      the old stable stays full after the switch, as the instant rollback.
    - Shadow, or a preview step: both full (the candidate receives a copy of all traffic).
    - A router that weights by pod ratio (`by_weight`): `replicas_for`, with one pod on each side at
      any weight strictly between 0 and 100 (even with total 1: a 5 % canary must be measured).
    - Other routers and user-hash forwarding: the stable stays full, the candidate gets the
      weight's share, at least one pod.
    Example, total 4, weight 25: by weight stable 3, candidate 1; otherwise stable 4, candidate 1.
    """
    if not candidate_runs:
        return TrackReplicas(total, 0)
    if blue_green_preview is not None:
        before_switch = split.candidate < 100 and not promoting
        return TrackReplicas(total, blue_green_preview if before_switch else total)
    if split.mirror or preview_step:
        return TrackReplicas(total, total)
    w = split.candidate
    if by_weight and split.sticky_header is None and not split.matches:
        r = replicas_for(TrafficSplit(w), total)
        if promoting:
            return TrackReplicas(total, max(1, r.candidate))
        if w == 100:
            return TrackReplicas(0, total)
        return TrackReplicas(max(1, r.stable), max(1, r.candidate))
    return TrackReplicas(total, total if w == 100 else candidate_share(total, w))

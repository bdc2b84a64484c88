"""Traffic splits between the stable and candidate tracks, and their replica arithmetic.

The `replicas` router has no proxy: a Service spreads requests evenly over ready pods, so the only
lever on the weight is how many pods each track runs. These functions convert both ways.
"""

from __future__ import annotations

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


def split_of(replicas: TrackReplicas) -> TrafficSplit:
    """The split a replica ratio actually gives (what users see in `status.weight`).

    Rounded half up to whole percent; no pods at all counts as all-stable.
    Example: stable 3, candidate 1 -> candidate 25.
    """
    if replicas.stable < 0 or replicas.candidate < 0:
        raise ValueError(f"replica counts must not be negative: {replicas}")
    if replicas.total == 0:
        return TrafficSplit.stable_only()
    return TrafficSplit(candidate=(200 * replicas.candidate + replicas.total) // (2 * replicas.total))

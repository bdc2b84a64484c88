"""A Kubernetes Job and its pods as the plan reads them: what `kube/` builds from their bodies.

Apart from `plan/batch.py` so that `plan/observed.py` can hold a rollout's backtest Job without
importing what builds Jobs (which needs the desired children, which need the observed world).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError
from rollwise_contract.batch import ShardReport


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class ObservedPod:
    """One pod of the Job, as `kube/` reads it: its index annotation, phase, the shard container's
    exit code and termination message."""

    name: str
    index: int
    phase: PodPhase
    created: datetime
    exit_code: int | None = None
    message: str = ""
    job: str = ""
    """The Job that made it (its `batch.kubernetes.io/job-name` label)."""
    earlier_failures: int = 0
    """How many pods of this index failed before this one was made, as the Job controller counts
    them on the pods it creates (`batch.kubernetes.io/job-index-failure-count` plus
    `job-index-ignored-failure-count`): a failed pod the API deleted is gone from any list, and
    only this count still says the shard was retried."""


@dataclass(frozen=True)
class ObservedJob:
    """The Job's status fields the plan reads."""

    name: str
    owned: bool
    """Whether its controller owner is this batch job; a foreign Job is never touched."""
    completed_indexes: frozenset[int] = frozenset()
    failed_indexes: frozenset[int] = frozenset()
    complete: bool = False
    failed: bool = False
    failure_message: str = ""
    start_time: datetime | None = None
    completion_time: datetime | None = None


def parse_indexes(text: str | None) -> frozenset[int]:
    """A Job's `completedIndexes` / `failedIndexes`: `"1,3-5,7"` -> {1, 3, 4, 5, 7}."""
    out: set[int] = set()
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return frozenset(out)


def shard_report(message: str) -> ShardReport | None:
    """The shard's summary from its termination message; None when there is none or it is not
    one (a pod killed before writing it, an OOM kill)."""
    if not message.strip():
        return None
    try:
        return ShardReport.model_validate_json(message)
    except ValidationError:
        return None

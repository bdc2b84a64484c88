"""What the planner returns: desired children, the next status, events, when to look again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from rollwise.api.v1alpha1 import ModelDeploymentStatus, Reason
from rollwise.plan.manifest import Manifest
from rollwise.plan.observed import WebhookKey
from rollwise.plan.split import TrafficSplit


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Note:
    """One Kubernetes Event to post about the ModelDeployment."""

    type: EventType
    reason: Reason
    message: str


@dataclass(frozen=True)
class ChildRef:
    """A child to delete: enough to address it in its namespace."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Decision:
    desired: tuple[Manifest, ...]
    """Children to exist exactly like this (applied only when they differ from the live ones)."""
    delete: tuple[ChildRef, ...]
    """Children that must go (an old track after promotion, a router object no longer used)."""
    status: ModelDeploymentStatus
    """The whole next status; written only when it differs from the current one."""
    notes: tuple[Note, ...] = ()
    """Events, emitted only when the decision changes something."""
    requeue_after: timedelta | None = None
    """Look again after this long even if nothing changes (a pause, an analysis interval)."""
    split: TrafficSplit | None = None
    """The traffic split the desired objects route (None: no router was given, steady state)."""
    webhook_calls: tuple[WebhookCall, ...] = ()
    """Webhooks to call now (each once per key); their answers come back in `Observed.webhooks`."""


@dataclass(frozen=True)
class WebhookCall:
    """One POST the I/O layer must send: `url` with the ModelDeployment and the gate as JSON."""

    key: WebhookKey
    url: str
    timeout_seconds: int

"""Manual gates: the `rollwise.dev/action` annotation, its verbs, and the value not yet applied.

Part of the API, not of the planner: users (and the kubectl plugin) write it; the state machine
reads it through `requested_action`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rollwise.api.v1alpha1 import ModelDeployment

ACTION_ANNOTATION = "rollwise.dev/action"
"""Manual gate: `kubectl annotate md NAME rollwise.dev/action=VERB:NONCE --overwrite`.

VERB is pause, resume, promote (skip the current step), promote-full (skip to promotion), abort
or retry (restart a rolled-back candidate). The annotation is level state that stays on the
object, so the value last applied is kept in `status.lastAction` and the same value is never
applied twice; the NONCE (any text, e.g. a timestamp) makes a repeated action a new value. A
kubectl plugin sets exactly this annotation."""


class Action(StrEnum):
    """Verbs of the `rollwise.dev/action` annotation."""

    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class Request:
    """A not-yet-applied annotation value; `action` None when the verb is unknown."""

    raw: str
    action: Action | None


def requested_action(md: ModelDeployment) -> Request | None:
    """The annotation's value when it differs from the last one applied (`status.lastAction`)."""
    raw = md.metadata.annotations.get(ACTION_ANNOTATION)
    if raw is None or raw == md.status.last_action:
        return None
    verb = raw.split(":", 1)[0].strip()
    try:
        return Request(raw, Action(verb))
    except ValueError:
        return Request(raw, None)

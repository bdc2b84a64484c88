"""Kopf, tuned for thousands of ModelDeployments: settings, a cheaper diff-base essence, and a
start-up gate that costs linear time. Kept apart from `handlers.py`, which only registers."""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any, cast

import kopf
from kopf._cogs.aiokits import aiotoggles  # private: quiet_kopf_readiness_gate rewires it

from rollwise.settings import OperatorSettings

KOPF_GATE_FIXED_FOR = "1.45."
"""Kopf releases whose start-up gate `quiet_kopf_readiness_gate` rewires (checked again on upgrades)."""


def quiet_kopf_readiness_gate() -> bool:
    """Make Kopf's start-up cost linear in the objects it indexes, not quadratic.

    Kopf holds every object's first event until all indexed objects are listed (a ToggleSet with a
    toggle per object), and wakes every held event each time one more toggle is added or dropped:
    N² wake-ups. With 1 000 ModelDeployments (5 000 indexed objects) a restarted operator, or a
    follower taking over, spent 7 minutes of CPU before its first pass (bench/operator_scale.py;
    28 s -> 7 s at 500). Waking the waiters only when the set's aggregate state changes keeps the
    semantics: a waiter waits for that state, and `Toggle.turn_to` still wakes everyone. Applied
    only to the Kopf releases it was measured on; returns whether it was applied.
    """
    if not version("kopf").startswith(KOPF_GATE_FIXED_FOR):
        logging.getLogger(__name__).warning(
            "kopf %s: start-up gate left as is (rewired for %sx only)", version("kopf"), KOPF_GATE_FIXED_FOR
        )
        return False

    async def make_toggle(
        self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
    ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()

    aiotoggles.ToggleSet.make_toggle = make_toggle  # type: ignore[method-assign]  # deliberate rewiring
    aiotoggles.ToggleSet.drop_toggle = drop_toggle  # type: ignore[method-assign]  # deliberate rewiring
    return True


class EssenceStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's diff-base storage, building the same essence from less.

    On every event of every watched object Kopf deep-copies the whole body, then drops its status
    and all metadata but labels and annotations: for our Deployments, status and managedFields are
    most of the copy (a twentieth of the operator's CPU in a wave of 1 000). This copies only what
    stays. Extra fields (status fields some handlers watch) fall back to the full body; ours have none.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        extra = list(extra_fields or [])
        if extra:
            return super().build(body=body, extra_fields=extra)
        meta = body.get("metadata") or {}
        kept = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        kept["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, kept)), extra_fields=extra)


def tune(settings: kopf.OperatorSettings, op: OperatorSettings) -> None:
    """Kopf's settings and log levels for this operator."""
    # Our own Events say what happened; Kopf's per-handler log events would be a write per pass.
    settings.posting.enabled = False
    # Peers must differ in priority, or Kopf pauses all of them (two replicas from one template).
    settings.peering.priority = op.peering_priority
    # A killed leader is replaced once its last keep-alive is this old: the failover time.
    settings.peering.lifetime = op.peering_lifetime_seconds
    # Kopf keeps handler progress in annotations only: status belongs to our conditions.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rollwise.dev")
    settings.persistence.diffbase_storage = EssenceStorage(
        prefix="rollwise.dev", key="last-handled-configuration"
    )
    # Reconnect watches well before proxies or the API server drop them.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if op.log_level != "debug":
        # Kopf logs every handler call at INFO: a line per watched event, ten per ModelDeployment
        # in a wave. Our own log says what was decided; Kopf's lines come back at debug.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

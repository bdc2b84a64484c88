"""Webhook gates: which webhooks must answer before a step, what their answers say, and which
calls the I/O layer must make now (`kube/webhooks.py` sends them; answers return in `Observed`)."""

from __future__ import annotations

from dataclasses import dataclass

from rollwise.api.v1alpha1 import Phase, Reason, Verdict, WebhookType
from rollwise.plan.decision import WebhookCall
from rollwise.plan.observed import WebhookKey
from rollwise.plan.state import STEADY_PHASES, State, World, step_work_done


def hooks(world: World, kind: WebhookType) -> list[tuple[str, str, int]]:
    return [(w.name, w.url, w.timeout_seconds) for w in world.md.spec.rollout.webhooks if w.type is kind]


def gate_keys(world: World, state: State, step: int | None) -> list[tuple[WebhookKey, str, int]]:
    """Webhooks that must answer 2xx before `step` starts (None: before promotion... see below).

    Step 0 needs the preRollout and step webhooks; step k the step webhooks; index len(steps)
    (promotion) the confirmPromotion webhooks.
    """
    rev = state.candidate or ""
    out: list[tuple[WebhookKey, str, int]] = []
    if step == len(world.steps):
        kinds = [WebhookType.CONFIRM_PROMOTION]
    elif step == 0:
        kinds = [WebhookType.PRE_ROLLOUT, WebhookType.STEP]
    else:
        kinds = [WebhookType.STEP]
    for kind in kinds:
        for name, url, timeout in hooks(world, kind):
            out.append((WebhookKey(name, kind, rev, step), url, timeout))
    return out


@dataclass(frozen=True)
class Gate:
    open: bool
    refused: WebhookKey | None = None
    """The first webhook that refused (preRollout/step: roll back; confirmPromotion: pause)."""
    message: str = ""


def gate(world: World, state: State, step: int) -> Gate:
    """Open when every gate webhook answered 2xx; refused on the first refusal."""
    answers = {r.key: r for r in world.observed.webhooks}
    pending = False
    for key, _, _ in gate_keys(world, state, step):
        answer = answers.get(key)
        if answer is None:
            pending = True
        elif not answer.ok:
            return Gate(False, key, f"webhook {key.name} ({key.type}) refused: {answer.detail}")
    return Gate(not pending)


def rollback_asked(world: World, state: State) -> str | None:
    """Why a rollback webhook asked for a rollback of the candidate (it answered 2xx), if one did."""
    for r in world.observed.webhooks:
        if r.key.type is WebhookType.ROLLBACK and r.key.revision == state.candidate and r.ok:
            return f"webhook {r.key.name} (rollback) asked for a rollback: {r.detail}"
    return None


def webhook_calls(world: World, state: State) -> list[WebhookCall]:
    """Calls the I/O layer must make now: the next gate's webhooks, rollback polls, and the
    post-rollout notification in the pass a rollout ends."""
    answered = {r.key for r in world.observed.webhooks}
    calls: list[WebhookCall] = []
    if state.phase is Phase.PROGRESSING and state.candidate is not None:
        nxt = 0 if state.step is None else state.step + 1
        if state.step is None or step_work_done(world, state) or _judged_ok(state):
            for key, url, timeout in gate_keys(world, state, nxt):
                if key not in answered:
                    calls.append(WebhookCall(key, url, timeout))
    if state.phase is Phase.PAUSED and state.reason is Reason.WEBHOOK_FAILED and state.candidate is not None:
        for key, url, timeout in gate_keys(world, state, len(world.steps)):
            calls.append(WebhookCall(key, url, timeout))
    if state.phase in (Phase.PROGRESSING, Phase.PAUSED) and state.candidate is not None:
        for name, url, timeout in hooks(world, WebhookType.ROLLBACK):
            calls.append(
                WebhookCall(WebhookKey(name, WebhookType.ROLLBACK, state.candidate, None), url, timeout)
            )
    return calls


def _judged_ok(state: State) -> bool:
    return state.analysis is not None and state.analysis.verdict is Verdict.SUCCESSFUL


def post_rollout_calls(world: World, before: State, after: State) -> list[WebhookCall]:
    """postRollout webhooks, asked once: in the pass whose transitions end a rollout."""
    ended = before.candidate is not None and (
        (after.phase in STEADY_PHASES and before.phase not in STEADY_PHASES)
        or (after.phase is Phase.ROLLING_BACK and before.phase is not Phase.ROLLING_BACK)
    )
    if not ended or before.candidate is None:
        return []
    return [
        WebhookCall(WebhookKey(name, WebhookType.POST_ROLLOUT, before.candidate, None), url, timeout)
        for name, url, timeout in hooks(world, WebhookType.POST_ROLLOUT)
    ]


def degraded_calls(world: World, before: State, after: State) -> list[WebhookCall]:
    """modelDegraded webhooks, asked once: in the pass whose look changed monitoring's verdict to
    degraded, or back to healthy (keyed by the look, so a second degradation is sent again)."""
    old, new = before.monitoring, after.monitoring
    if new is None or new.healthy is None:
        return []
    was = old.healthy if old is not None and old.revision == new.revision else None
    changed = (new.healthy is False and was is not False) or (new.healthy is True and was is False)
    if not changed:
        return []
    return [
        WebhookCall(WebhookKey(name, WebhookType.MODEL_DEGRADED, new.revision, new.looks), url, timeout)
        for name, url, timeout in hooks(world, WebhookType.MODEL_DEGRADED)
    ]

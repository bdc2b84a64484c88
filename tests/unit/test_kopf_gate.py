"""Kopf's start-up gate as `rollwise.kube.kopf_tuning` rewires it: waiters wake when the gate opens or
closes, not once per object listed (bench/operator_scale.py measures the restart it speeds up)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles
from rollwise.kube import kopf_tuning


class CountingCondition(asyncio.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.wakeups = 0

    def notify_all(self) -> None:
        self.wakeups += 1
        super().notify_all()


def gate(fn: type[all] | type[any] = all) -> tuple[aiotoggles.ToggleSet, CountingCondition]:  # type: ignore[valid-type]  # the builtins are the aggregates Kopf uses
    toggles = aiotoggles.ToggleSet(fn)
    condition = CountingCondition()
    toggles._condition = condition
    return toggles, condition


def test_the_gate_is_rewired_for_this_kopf() -> None:
    assert kopf_tuning.quiet_kopf_readiness_gate() is True


async def test_a_thousand_objects_listed_wake_the_waiters_only_when_the_gate_opens() -> None:
    toggles, condition = gate(all)
    blocker = await toggles.make_toggle(name="orchestration blocker")
    objects = [await toggles.make_toggle(name=f"object {i}") for i in range(1000)]
    assert condition.wakeups == 1  # the first toggle closed the gate
    condition.wakeups = 0
    waiter = asyncio.create_task(toggles.wait_for(True))
    await asyncio.sleep(0)
    for toggle in objects:
        await toggles.drop_toggle(toggle)
    await asyncio.sleep(0)
    assert not waiter.done()  # the blocker still holds the gate
    assert condition.wakeups == 0
    await toggles.drop_toggle(blocker)
    await asyncio.wait_for(waiter, 1)
    assert condition.wakeups == 1


async def test_a_pause_toggle_turned_on_when_added_still_wakes_the_waiters() -> None:
    toggles, condition = gate(any)
    waiter = asyncio.create_task(toggles.wait_for(True))
    await asyncio.sleep(0)
    conflict = await toggles.make_toggle(True, name="a peer with a higher priority")
    await asyncio.wait_for(waiter, 1)
    resumed = asyncio.create_task(toggles.wait_for(False))
    await asyncio.sleep(0)
    await conflict.turn_to(False)  # Toggle.turn_to is untouched: it always wakes
    await asyncio.wait_for(resumed, 1)
    assert condition.wakeups == 2

"""Redraw a ModelDeployment's view until a condition holds: the engine of `--watch` and `--wait`.

On a terminal the view is redrawn in place (rich Live). Anywhere else (a CI log, a pipe) a
redrawn screen is noise, so one line is printed per change of phase, step, weight or verdict,
and the full view once at the end. Fetching is injected, so the demo drives the same loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.cli.view import EventRow, progress_line, status_view

Snapshot = tuple[ModelDeployment, Sequence[EventRow]]


@dataclass(frozen=True)
class Followed:
    """The last snapshot seen, and whether the condition held (False: the deadline passed)."""

    md: ModelDeployment
    events: Sequence[EventRow]
    reached: bool


def _now() -> datetime:
    return datetime.now(UTC)


def follow(
    fetch: Callable[[], Snapshot],
    console: Console,
    *,
    until: Callable[[ModelDeployment], bool] | None = None,
    timeout_seconds: float | None = None,
    interval_seconds: float = 1.0,
    events_limit: int = 8,
    live: bool | None = None,
    footer: Callable[[], RenderableType] | None = None,
) -> Followed:
    """Fetch and show every `interval_seconds` until `until(md)` holds (None: until Ctrl-C, which
    the caller handles) or `timeout_seconds` pass; the last snapshot is always shown.

    `footer` adds something the caller measures itself under the view (the demo's traffic)."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    use_live = console.is_terminal if live is None else live
    md, events = fetch()

    def screen_of() -> RenderableType:
        view = status_view(md, events, _now(), events_limit=events_limit)
        return view if footer is None else Group(view, Text(""), footer())

    def done() -> bool:
        return until is not None and until(md)

    def expired() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if use_live:
        with Live(screen_of(), console=console, auto_refresh=False) as screen:
            while not done() and not expired():
                time.sleep(interval_seconds)
                md, events = fetch()
                screen.update(screen_of(), refresh=True)
        return Followed(md, events, done())
    last = ""
    while True:
        line = progress_line(md, _now())
        if line != last:
            console.print(Text.assemble((f"{_now():%H:%M:%S} ", "dim"), line), soft_wrap=True)
            if footer is not None:
                console.print(footer(), soft_wrap=True)
            last = line
        if done() or expired():
            break
        time.sleep(interval_seconds)
        md, events = fetch()
    console.print(screen_of())
    return Followed(md, events, done())

"""The `--watch` / `--wait` loop: one line per change in a log, a redrawn view on a terminal."""

from __future__ import annotations

import io
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.cli.live import Snapshot, follow
from rollwise.cli.outcome import ended

from tests.unit.cli_objects import analysing, paused_at_pause_step, promoted


def script(*mds: ModelDeployment) -> tuple[Iterator[ModelDeployment], list[int]]:
    calls: list[int] = []

    def gen() -> Iterator[ModelDeployment]:
        for i, m in enumerate(mds):
            calls.append(i)
            yield m
        while True:
            yield mds[-1]

    return gen(), calls


def fetcher(mds: Iterator[ModelDeployment]) -> Snapshot:
    return next(mds), []


def test_in_a_log_each_change_is_one_line_and_the_view_is_printed_at_the_end() -> None:
    mds, _ = script(paused_at_pause_step(), paused_at_pause_step(), analysing(), analysing(), promoted())
    log = io.StringIO()
    console = Console(file=log, width=200, color_system=None)
    followed = follow(
        lambda: fetcher(mds),
        console,
        until=lambda md: ended(md) is not None,
        interval_seconds=0.001,
        footer=lambda: Text("traffic: fine"),
    )
    assert followed.reached and followed.md.status.phase == "Healthy"
    lines = log.getvalue().splitlines()
    progress = [line[9:] for line in lines if line[:2].isdigit() and line[2] == ":"]
    assert [p.split(" | ")[0] for p in progress] == [
        "iris: Paused",
        "iris: Progressing (AnalysisRunning)",
        "iris: Healthy (Available)",
    ]
    assert lines.count("traffic: fine") == 4  # under each change, and under the final view
    assert "ModelDeployment ml/iris  Healthy (Available)" in log.getvalue()


def test_the_deadline_ends_the_loop_unreached() -> None:
    mds, _ = script(paused_at_pause_step())
    console = Console(file=io.StringIO(), width=200, color_system=None)
    followed = follow(
        lambda: fetcher(mds), console, until=lambda md: False, timeout_seconds=0.05, interval_seconds=0.01
    )
    assert not followed.reached and followed.md.status.phase == "Paused"


def test_on_a_terminal_the_view_is_redrawn_in_place() -> None:
    mds, calls = script(paused_at_pause_step(), analysing(), promoted())
    screen = io.StringIO()
    console = Console(file=screen, width=160, force_terminal=True, color_system=None)
    followed = follow(
        lambda: fetcher(mds), console, until=lambda md: ended(md) is not None, interval_seconds=0.001
    )
    assert followed.reached and calls == [0, 1, 2]
    out = screen.getvalue()
    assert "\x1b[" in out  # cursor movement: the view is redrawn, not appended
    assert "Paused (Paused)" in out and "Healthy (Available)" in out

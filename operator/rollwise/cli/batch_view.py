"""What `kubectl rollwise batch NAME` shows: a ModelBatchJob's progress, shard by shard.

Pure, like `view.py`: a ModelBatchJob and the time in, a renderable out; the command fetches.
"""

from __future__ import annotations

from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rollwise.api.batch import BatchPhase, ModelBatchJob, ShardPhase, ShardStatus

PHASE_STYLE = {
    BatchPhase.PENDING: "yellow",
    BatchPhase.RUNNING: "bold cyan",
    BatchPhase.SUCCEEDED: "bold green",
    BatchPhase.FAILED: "bold red",
    BatchPhase.INVALID: "bold red",
}
SHARD_STYLE = {
    ShardPhase.PENDING: "dim",
    ShardPhase.RUNNING: "cyan",
    ShardPhase.RETRYING: "yellow",
    ShardPhase.SUCCEEDED: "green",
    ShardPhase.FAILED: "bold red",
}
BAR_WIDTH = 30


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#########.....]  3/4` with `done` of `total` shards filled, rounded down (never full early)."""
    filled = width * done // total if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _elapsed(mbj: ModelBatchJob, now: datetime) -> str:
    start = mbj.status.start_time
    if start is None:
        return "-"
    seconds = int(((mbj.status.completion_time or now) - start).total_seconds())
    minutes, secs = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _shard_row(shard: ShardStatus) -> list[Text | str]:
    return [
        str(shard.index),
        Text(shard.phase.value, style=SHARD_STYLE[shard.phase]),
        str(shard.failures) if shard.failures else "",
        f"{shard.rows_out:,}" if shard.rows_in else "",
        f"{shard.rows_rejected:,}" if shard.rows_in else "",
        f"{shard.rows_per_second:,.0f}" if shard.rows_per_second else "",
        shard.message,
    ]


def batch_view(mbj: ModelBatchJob, now: datetime, *, all_shards: bool = False) -> RenderableType:
    """Header (phase, model, totals, throughput), the shard bar, and one row per shard; with many
    shards only the ones not succeeded are listed unless `all_shards`."""
    st = mbj.status
    phase = st.phase or BatchPhase.PENDING
    head = Text()
    head.append(f"{mbj.metadata.namespace}/{mbj.metadata.name}  ", style="bold")
    head.append(phase.value, style=PHASE_STYLE[phase])
    if st.message:
        head.append(f"  {st.message}")
    lines: list[RenderableType] = [head]
    if st.model is not None:
        model = st.model
        lines.append(
            Text(f"model    {model.name} {model.version} ({model.source}) sha256 {model.sha256[:12]}")
        )
    total = st.shards_total or mbj.spec.shards
    lines.append(Text(f"shards   {progress_bar(st.shards_succeeded, total)}  failed {st.shards_failed}"))
    lines.append(
        Text(
            f"rows     {st.rows_done:,} scored, {st.rows_failed:,} rejected  "
            f"{st.rows_per_second:,.1f} rows/s  elapsed {_elapsed(mbj, now)}"
        )
    )
    shown = [s for s in st.shards if all_shards or len(st.shards) <= 20 or s.phase != ShardPhase.SUCCEEDED]
    if shown:
        table = Table(box=box.SIMPLE, pad_edge=False)
        for column in ("Shard", "State", "Failures", "Rows", "Rejected", "Rows/s", "Message"):
            table.add_column(
                column,
                justify="right" if column in {"Shard", "Failures", "Rows", "Rejected", "Rows/s"} else "left",
            )
        for shard in shown:
            table.add_row(*_shard_row(shard))
        lines.append(table)
    hidden = len(st.shards) - len(shown)
    if hidden:
        lines.append(Text(f"({hidden} succeeded shards not shown; --all lists them)", style="dim"))
    return Group(*lines)

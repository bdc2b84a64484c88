"""`kubectl rollwise diff`: the rows where a shadow candidate answered otherwise than stable.

The stable pod keeps them (`GET /v2/models/{model}/diff` of the model server, a ring of the last
64 per worker process); `client.py` fetches that answer through the API server's service proxy,
and this module reads it into typed rows and renders them. Pure: no I/O, `now` is an argument.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rollwise.cli.view import since

INPUT_CHARS = 60
"""Characters of an input row shown in the table; the server keeps up to 2 KiB of it."""

Scalar = str | int | float | bool | None
Json = Scalar | list["Json"] | dict[str, "Json"]


@dataclass(frozen=True)
class DiffRow:
    """One row where the shadow's answer differed from stable's."""

    time: datetime | None
    input: Json
    stable: Json
    shadow: Json
    shadow_version: str | None
    delta: float | None


@dataclass(frozen=True)
class ShadowDiff:
    """What one stable worker answered: its version, its ring's capacity, the rows, oldest first."""

    version: str
    worker_pid: int | None
    capacity: int | None
    rows: tuple[DiffRow, ...]


class DiffFormatError(ValueError):
    """The stable pod's answer is not the diff document this plugin reads."""


def read_diff(body: bytes) -> ShadowDiff:
    """The server's `/diff` JSON as typed rows; a field of the wrong type is a `DiffFormatError`."""
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise DiffFormatError(f"not JSON ({err})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise DiffFormatError('no "entries" list')
    rows = tuple(_row(e) for e in doc["entries"] if isinstance(e, dict))
    pid, capacity = doc.get("worker_pid"), doc.get("capacity")
    return ShadowDiff(
        version=str(doc.get("model_version", "")),
        worker_pid=pid if isinstance(pid, int) else None,
        capacity=capacity if isinstance(capacity, int) else None,
        rows=rows,
    )


def _row(entry: dict[str, Json]) -> DiffRow:
    delta = entry.get("delta")
    version = entry.get("shadow_version")
    return DiffRow(
        time=_time(entry.get("time")),
        input=entry.get("input"),
        stable=entry.get("stable"),
        shadow=entry.get("shadow"),
        shadow_version=version if isinstance(version, str) else None,
        delta=float(delta) if isinstance(delta, int | float) and not isinstance(delta, bool) else None,
    )


def _time(value: Json) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def shown_input(value: Json, limit: int = INPUT_CHARS) -> str:
    """An input row in one short cell: a single input's row bare (`[5.1, 3.5]`, not
    `{"input-0": [5.1, 3.5]}`), cut to `limit` characters with an ellipsis."""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_answer(value: Json) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def diff_view(name: str, diff: ShadowDiff, now: datetime) -> RenderableType:
    """A header line (versions, how many rows, which worker) and the rows, newest first."""
    versions = sorted({r.shadow_version for r in diff.rows if r.shadow_version})
    worker = f" (stable worker pid {diff.worker_pid})" if diff.worker_pid is not None else ""
    kept = f"; the last {diff.capacity} are kept per stable worker" if diff.capacity else ""
    if not diff.rows:
        return Text(
            f"{name}: no rows where the shadow answered otherwise than stable {diff.version}{worker}{kept}."
        )
    title = Text(
        f"{name}: {len(diff.rows)} rows where the candidate ({', '.join(versions) or '?'}) answered "
        f"otherwise than stable {diff.version}{worker}{kept}"
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("when", "input", "stable", "candidate", "delta"):
        table.add_column(column, justify="right" if column == "delta" else "left")
    for row in reversed(diff.rows):
        table.add_row(
            f"{since(row.time, now)} ago",
            Text(shown_input(row.input), overflow="fold"),
            shown_answer(row.stable),
            Text(shown_answer(row.shadow), style="yellow"),
            "-" if row.delta is None else f"{row.delta:.4g}",
        )
    return Group(title, table)

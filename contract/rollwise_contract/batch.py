"""Batch scoring's contract: what a ``rollwise-batch`` shard reports and how it exits.

The model server writes it (``rollwise_serving.batch``) and the operator reads it (the Job's
``podFailurePolicy`` from the exit codes, per-shard status from the termination message), so both
sides import it from here and neither keeps a copy.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ExitCode(IntEnum):
    """A shard's exit status, meant for a Job's ``podFailurePolicy``."""

    SCORED = 0
    """Scored, or skipped because a finished run with the same fingerprint is there."""
    RETRY = 1
    """Anything a retry may fix (a failed download, a full disk, a killed node)."""
    SETTINGS = 2
    """Bad settings: every retry would fail the same way."""
    PERMANENT = 3
    """The model or the data is wrong (digest mismatch, unloadable artifact, corrupt input file, a
    missing column): a retry cannot fix it."""


PERMANENT_EXIT_CODES = (ExitCode.SETTINGS, ExitCode.PERMANENT)
"""Exit codes that fail the shard's index at once instead of spending its retries."""


class DataFormat(StrEnum):
    """Input and output file formats of a batch job."""

    PARQUET = "parquet"
    CSV = "csv"


class ShardState(StrEnum):
    """A shard's ``status`` in its report."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    """A rerun found the shard's done marker with the same fingerprint and scored nothing."""
    FAILED = "failed"


class ShardReport(BaseModel):
    """A shard's summary as it writes it to its termination message (one JSON line, at most 4096
    bytes) and its done marker; the operator reads only these fields and ignores the rest."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore", frozen=True)

    shard: int = Field(ge=0)
    shards: int = Field(ge=1)
    status: ShardState
    rows_in: int = Field(default=0, ge=0)
    rows_out: int = Field(default=0, ge=0)
    rows_rejected: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    part: str = ""
    rejects: str = ""
    model_sha256: str | None = None
    error: str | None = None

"""`rollwise.dev/v1alpha1` ModelBatchJob: score a dataset with a pinned model on an Indexed Job.

A resource of its own, not a ModelDeployment field: a batch job runs to an end (Succeeded or
Failed), has its own retries (per shard) and its own history (one object per run, kept or
garbage-collected like a Job), while a ModelDeployment serves forever and rolls versions. A field
would make one spec mean two lifecycles and tie a nightly scoring's reruns to the serving object's
generation. A batch job may instead *refer* to a ModelDeployment (`model.fromDeployment`), which
pins the artifact the track serves at the time the job starts.

The model, runtime types, conditions and metadata are those of `v1alpha1`: declared once.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, ConfigDict, Field
from rollwise_contract.base import ApiModel, StatusModel, map_list, rule
from rollwise_contract.batch import DataFormat
from rollwise_contract.model import ModelFormat, Track

from rollwise.api.v1alpha1 import (
    Condition,
    Dataset,
    EnvVar,
    ModelSpec,
    Name,
    ObjectMeta,
    Resources,
    Sha256,
    Toleration,
    Uri,
)

KIND = "ModelBatchJob"
PLURAL = "modelbatchjobs"
SINGULAR = "modelbatchjob"
SHORT_NAMES = ("mbj",)

MAX_SHARDS = 1000
"""Shards per job; each is one index of the Job, and status keeps one entry per shard."""
MAX_NAME_LENGTH = 52
"""63 (a pod's hostname, `<job>-<index>` in an Indexed Job) minus `-999` and the Job's own margin."""
OUTPUT_URI = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^ ]+$"
"""Every shard writes its part, rejects and done marker to one directory all of them mount."""
KEEP_COLUMN = r"^[^,\s][^,]*$"
"""A column name `rollwise-batch --keep` can carry: no comma (its separator), no leading space."""


BatchInput = Dataset
"""The dataset to score (declared once, with a backtest's, in `v1alpha1`)."""


class BatchOutput(ApiModel):
    """Where the shards write: one part, one rejects file and one done marker each."""

    uri: Uri
    """A directory on a claim every shard mounts, pvc://claim/path (ReadWriteMany when shards may
    run on several nodes)."""
    format: DataFormat = DataFormat.PARQUET
    """Format of the output parts."""

    @rule(
        cel=f"self.uri.matches('{OUTPUT_URI}')",
        field="uri",
        message="must be a directory every shard can write; use pvc://claim/path (a ReadWriteMany "
        "claim when shards may run on several nodes)",
    )
    def _uri_shared(self) -> bool:
        return re.fullmatch(OUTPUT_URI, self.uri) is not None


class DeploymentRef(ApiModel):
    """A ModelDeployment in the batch job's namespace, and the track whose model to use."""

    name: Name
    """The ModelDeployment's name."""
    track: Track = Track.STABLE
    """stable: the model serving as stable (`status.stable`); candidate: the one being rolled out."""


class BatchModel(ApiModel):
    """Which model scores: a ModelDeployment's track, or a model spec written here."""

    from_deployment: DeploymentRef | None = None
    """Use the artifact (uri, sha256, format, feature schema) a ModelDeployment's track runs when
    the job starts; it is pinned in `status.model`, so a later rollout does not change a running job."""
    inline: ModelSpec | None = None
    """A model spec as in a ModelDeployment's `spec.model`; it needs uri, format, sha256 and
    featureSchema here."""

    @rule(
        cel="has(self.fromDeployment) != has(self.inline)",
        field=None,
        message="set exactly one of fromDeployment and inline",
    )
    def _one_source(self) -> bool:
        return (self.from_deployment is None) != (self.inline is None)

    @rule(
        cel="!has(self.inline) || (has(self.inline.uri) && has(self.inline.sha256))",
        field="inline",
        message="a batch job scores a pinned artifact; set uri, format and sha256 (sha256sum <file>)",
    )
    def _inline_pinned(self) -> bool:
        return self.inline is None or (self.inline.uri is not None and self.inline.sha256 is not None)

    @rule(
        cel="!has(self.inline) || has(self.inline.featureSchema)",
        field="inline.featureSchema",
        message="required: the shards check every row against it and reject the rows that break it",
    )
    def _inline_has_schema(self) -> bool:
        return self.inline is None or self.inline.feature_schema is not None


class ModelBatchJobSpec(ApiModel):
    """What to score, with which model, into where, in how many shards."""

    input: BatchInput
    """The dataset."""
    model: BatchModel
    """The model."""
    output: BatchOutput
    """Where the parts go."""
    keep_columns: list[Annotated[str, Field(min_length=1, max_length=256, pattern=KEEP_COLUMN)]] = Field(
        default_factory=list, max_length=64
    )
    """Input columns copied to the output beside the predictions (e.g. an id)."""
    shards: int = Field(default=1, ge=1, le=MAX_SHARDS)
    """Pieces the dataset is split into, one Job index each; files are dealt round-robin, and
    with fewer files than shards a file's row groups are split."""
    parallelism: int | None = Field(default=None, ge=1, le=MAX_SHARDS)
    """Shards running at once; unset: all of them."""
    backoff_limit_per_index: int = Field(default=3, ge=0, le=20)
    """Retries of one shard after a failure a retry may fix (exit 1: a failed download, a killed
    pod); bad data or a refused artifact (exit 2 or 3) fails the shard at once."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Image providing `rollwise-batch`; unset: the operator's batch image (`ROLLWISE_BATCH_IMAGE`,
    the serving image's batch variant, which adds pyarrow and pandas). A model in an optional
    format (xgboost, lightgbm) needs an image with that format too, e.g. `--variant batch,xgboost`."""
    resources: Resources | None = None
    """CPU, memory and GPU for each shard's pod; unset leaves them to namespace defaults."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64, json_schema_extra=map_list("name"))
    """Extra environment variables, e.g. S3 credentials from a Secret."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=32
    )
    """Node labels the shards' pods must match."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Taints the shards' pods tolerate."""

    @rule(
        cel="!has(self.parallelism) || self.parallelism <= self.shards",
        field="parallelism",
        message="is more than shards; pods beyond the shard count would never start; lower it or "
        "leave it unset",
    )
    def _parallelism_within_shards(self) -> bool:
        return self.parallelism is None or self.parallelism <= self.shards


# ---------------------------------------------------------------------------------------------
# status


class BatchPhase(StrEnum):
    """Where a batch job is; `plan/batch.py` derives it from the Job on every pass."""

    PENDING = "Pending"
    """No Job yet (the model is being resolved)."""
    RUNNING = "Running"
    """The Job's shards are running."""
    SUCCEEDED = "Succeeded"
    """Every shard scored (or was found finished by a rerun)."""
    FAILED = "Failed"
    """The Job failed: at least one shard failed for good."""
    INVALID = "Invalid"
    """The spec cannot be acted on (guardrails, an unresolvable model); nothing runs."""


class ShardPhase(StrEnum):
    """One shard's state."""

    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    """A pod of it failed with a retryable error; the Job runs it again."""
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ShardStatus(StatusModel):
    """One shard (Job index), from its pods' termination messages and the Job's indexes."""

    index: int = Field(ge=0, lt=MAX_SHARDS)
    """The Job completion index."""
    phase: ShardPhase
    """Its state."""
    failures: int = Field(default=0, ge=0)
    """Pods of this shard that failed."""
    rows_in: int = Field(default=0, ge=0)
    """Input rows read by its last finished pod."""
    rows_out: int = Field(default=0, ge=0)
    """Rows scored into its part."""
    rows_rejected: int = Field(default=0, ge=0)
    """Rows written to its rejects file with their problems."""
    rows_per_second: float = Field(default=0.0, ge=0)
    """Its own scoring speed (input rows over its pod's run time)."""
    message: str = Field(default="", max_length=1024)
    """Why it failed or is retried (the shard's own error), empty otherwise."""


class ResolvedModel(StatusModel):
    """The artifact the job runs, pinned when the Job is created."""

    name: str = Field(max_length=63)
    version: str = Field(max_length=63)
    uri: Uri
    sha256: Sha256
    format: ModelFormat
    source: str = Field(default="", max_length=256)
    """`inline`, or `ModelDeployment <name> (<track>)`."""


class ModelBatchJobStatus(StatusModel):
    """Observed state, rebuilt by the operator from the Job and its pods."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation this status describes."""
    phase: BatchPhase | None = None
    """Where the job is."""
    message: str = Field(default="", max_length=32768)
    """A one-line summary for humans."""
    job_name: str | None = Field(default=None, max_length=63)
    """The batch/v1 Job running the shards."""
    model: ResolvedModel | None = None
    """The model pinned for this run."""
    shards_total: int = Field(default=0, ge=0)
    shards_succeeded: int = Field(default=0, ge=0)
    shards_failed: int = Field(default=0, ge=0)
    rows_in: int = Field(default=0, ge=0)
    """Input rows of finished shards."""
    rows_done: int = Field(default=0, ge=0)
    """Rows scored into output parts."""
    rows_failed: int = Field(default=0, ge=0)
    """Rows in rejects files (each with its validation message)."""
    rows_per_second: float = Field(default=0.0, ge=0)
    """Input rows of finished shards over the job's wall time so far."""
    start_time: AwareDatetime | None = None
    completion_time: AwareDatetime | None = None
    shards: list[ShardStatus] = Field(
        default_factory=list, max_length=MAX_SHARDS, json_schema_extra=map_list("index")
    )
    """One entry per shard, by index."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, json_schema_extra=map_list("type")
    )
    """kstatus conditions: Ready (succeeded), Reconciling (running), Stalled (failed or invalid)."""


class ModelBatchJob(ApiModel):
    """Scores a dataset with a pinned model on a Kubernetes Indexed Job, one shard per index."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["rollwise.dev/v1alpha1"] = "rollwise.dev/v1alpha1"
    kind: Literal["ModelBatchJob"] = "ModelBatchJob"
    metadata: ObjectMeta
    spec: ModelBatchJobSpec
    status: ModelBatchJobStatus = Field(default_factory=ModelBatchJobStatus)

    @rule(
        cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        field="metadata.name",
        message=f"must start with a letter, use only a-z, 0-9 and '-', and have at most {MAX_NAME_LENGTH} "
        "characters (the Job's pods are named <name>-<index>); choose a shorter name",
    )
    def _name_fits_pods(self) -> bool:
        name = self.metadata.name
        return (
            len(name) <= MAX_NAME_LENGTH and re.fullmatch(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name) is not None
        )

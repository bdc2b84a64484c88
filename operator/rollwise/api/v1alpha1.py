"""`rollwise.dev/v1alpha1` ModelDeployment: the only place its fields are declared.

The CRD (`crds/`), the field reference (`docs/reference.md`) and the operator's types all come
from these models. Durations are integers with the unit in the name (`durationSeconds`),
percentages are integers 0..100, and every cross-field rule is a `@rule` that the API server
enforces as CEL and pydantic enforces in Python (see `base.py`).
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from rollwise_contract.base import ApiModel, StatusModel, count, map_list, rule
from rollwise_contract.batch import DataFormat
from rollwise_contract.features import FEATURE_NAME, FeatureSchema
from rollwise_contract.matches import HEADER_NAME, RequestMatch
from rollwise_contract.model import PICKLE_FORMATS, ModelFormat

GROUP = "rollwise.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md",)
CATEGORIES = ("rollwise",)
API_VERSION = f"{GROUP}/{VERSION}"

MAX_STEPS = 32
"""Bounds the canary steps list; CEL cost estimates multiply by list sizes, so every list is bounded."""
HISTORY_LIMIT = 10
"""Finished rollouts kept in `status.history`, newest first."""
MAX_NAME_LENGTH = 53
"""63 (a Service name) minus len("-candidate"): every child name must stay a valid DNS label."""

# ---------------------------------------------------------------------------------------------
# Scalar types

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
SHA256 = r"^[a-f0-9]{64}$"
URI = (
    "^(file:///[^ ]+"
    "|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^ ]+"
    "|https?://[^/ ]+(/[^ ]*)?"
    "|s3://[a-z0-9][-a-z0-9.]*[a-z0-9]/[^ ]+)$"
)
"""Artifact locations the serving image can read; `pvc://` is mounted read-only by the operator."""
LOCAL_URI = "^(file:///[^ ]+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^ ]+)$"
URI_FIX = "use file:///path, pvc://claim/path, http(s)://host/path or s3://bucket/key"
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
"""A DNS-1123 label: lower-case letters, digits and '-'."""
Percent = Annotated[int, Field(ge=0, le=100)]
"""A share of traffic or a utilization, in percent."""
Weight = Annotated[int, Field(ge=1, le=100)]
"""A candidate traffic weight in percent; 0 is not a step (that is the stable-only state)."""
Uri = Annotated[str, Field(min_length=1, max_length=2048)]
Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=SHA256)]


def _quantity(value: object) -> object:
    """Accept YAML's `cpu: 1` and `cpu: 0.5` as the API server does, and keep the text form."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and not re.fullmatch(QUANTITY, value):
        raise ValueError("not a Kubernetes quantity; write e.g. 500m, 2, 1Gi or 512Mi")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity (`500m`, `2`, `1Gi`)."""


# ---------------------------------------------------------------------------------------------
# spec.model


class FallbackModel(ApiModel):
    """A second model answering when the primary fails to load, errors, or misses its deadline."""

    uri: Uri
    """Where the artifact lives: file:///path, pvc://claim/path, http(s)://..., or s3://bucket/key."""
    format: ModelFormat | None = None
    """How to load it; unset uses the primary's format."""
    sha256: Sha256 | None = None
    """Hex sha256 of the artifact; required when loading it runs code (sklearn unpickles, python
    executes a `.py` file)."""

    @rule(cel=f"self.uri.matches('{URI}')", field="uri", message=f"unsupported location; {URI_FIX}")
    def _uri_supported(self) -> bool:
        return re.fullmatch(URI, self.uri) is not None


class ReferenceDistribution(ApiModel):
    """Training-time data (the serving image's reference JSON) that drift is measured against."""

    uri: Uri
    """A file in the image (file:///path) or on a volume (pvc://claim/path): the server reads it at start."""

    @rule(
        cel=f"self.uri.matches('{LOCAL_URI}')",
        field="uri",
        message="must be a local file; use file:///path or pvc://claim/path",
    )
    def _uri_local(self) -> bool:
        return re.fullmatch(LOCAL_URI, self.uri) is not None


_CODE_FORMATS = "[" + ", ".join(f"'{f.value}'" for f in ModelFormat if f in PICKLE_FORMATS) + "]"
"""PICKLE_FORMATS as a CEL list literal, so the digest rules name the formats that need one (a new
data format, like onnx, xgboost or lightgbm, needs none without touching the rules)."""


class ExplainSpec(ApiModel):
    """Per-feature attributions served at `POST /v2/models/{name}/explain`; off when unset."""

    max_rows: int = Field(default=16, ge=1, le=1000)
    """Rows one explain request may ask for."""
    max_evaluations: int = Field(default=65536, ge=16, le=1 << 24)
    """Model rows one explanation may evaluate: its cost bound (exact Shapley values need 2^features
    rows per explained row)."""
    timeout_ms: int = Field(default=5000, ge=10, le=600_000)
    """Time one explanation may take before it is abandoned (504)."""
    baseline: list[float] | None = Field(default=None, min_length=1, max_length=4096)
    """One number per feature, the row attributions are measured from; unset: the reference's
    per-feature medians (needs `featureSchema` and `reference`)."""


class ModelSpec(ApiModel):
    """What to serve: one artifact, its digest and format, and what its inputs look like."""

    name: str = Field(min_length=1, max_length=63, pattern=LABEL_VALUE)
    """Model name in the inference API (`/v2/models/<name>/infer`) and in metric labels."""
    version: str = Field(min_length=1, max_length=63, pattern=LABEL_VALUE)
    """Version label; changing it (or the artifact) starts a rollout of a candidate."""
    uri: Uri | None = None
    """Where the artifact lives: file:///path (inside the image), pvc://claim/path (mounted read-only),
    http(s)://host/path, or s3://bucket/key. A URI ending in `/`, or a `.tar.gz`/`.zip`, is a
    directory artifact whose root holds a `SHA256SUMS` manifest; its `sha256` is the manifest's.
    Required with the bundled server; unset with `runtime.server`, whose own server loads its model."""
    sha256: Sha256 | None = None
    """Hex sha256 of the artifact (of its `SHA256SUMS` for a directory), checked before loading;
    required for sklearn (unpickled) and python (a `.py` file that is executed), which would run
    code from a tampered file."""
    format: ModelFormat | None = None
    """How the serving image loads the artifact; required with `uri`."""
    feature_schema: FeatureSchema | None = None
    """Declared inputs; requests that do not match are rejected with HTTP 422. Unset accepts any input."""
    reference: ReferenceDistribution | None = None
    """Training-time reference data for drift metrics; unset compares candidate with stable only."""
    fallback: FallbackModel | None = None
    """A second model answering when the primary fails to load or errors."""
    explain: ExplainSpec | None = None
    """Serve per-feature explanations of answers (bounded in rows, model calls and time)."""

    @rule(
        cel=f"!has(self.uri) || self.uri.matches('{URI}')",
        field="uri",
        message=f"unsupported location; {URI_FIX}",
    )
    def _uri_supported(self) -> bool:
        return self.uri is None or re.fullmatch(URI, self.uri) is not None

    @rule(
        cel="has(self.uri) == has(self.format)",
        field="format",
        message="set uri and format together: the bundled server needs both to load the artifact "
        "(e.g. format: sklearn); with runtime.server set neither",
    )
    def _uri_with_format(self) -> bool:
        return (self.uri is None) == (self.format is None)

    @rule(
        cel="has(self.uri) || !(has(self.sha256) || has(self.fallback) || has(self.explain))",
        field="uri",
        message="sha256, fallback and explain are the bundled server's and need uri; remove them "
        "when runtime.server loads the model",
    )
    def _server_model_has_no_artifact_options(self) -> bool:
        return self.uri is not None or (
            self.sha256 is None and self.fallback is None and self.explain is None
        )

    @rule(
        cel=f"!has(self.format) || !(self.format in {_CODE_FORMATS}) || has(self.sha256)",
        field="sha256",
        message="required for format sklearn and python, whose loading runs code (unpickling, "
        "executing a .py file); "
        "add the artifact's digest (sha256sum <file>)",
    )
    def _pickle_has_digest(self) -> bool:
        return self.format not in PICKLE_FORMATS or self.sha256 is not None

    @rule(
        cel="!has(self.uri) || !(self.uri.endsWith('/') || self.uri.endsWith('.tar.gz') "
        "|| self.uri.endsWith('.tgz') || self.uri.endsWith('.zip')) || has(self.sha256)",
        field="sha256",
        message="required for a directory or archive artifact (a uri ending in /, .tar.gz, .tgz or "
        ".zip): pin the digest of its manifest (sha256sum SHA256SUMS)",
    )
    def _directory_has_digest(self) -> bool:
        return (
            self.uri is None
            or not self.uri.endswith(("/", ".tar.gz", ".tgz", ".zip"))
            or self.sha256 is not None
        )

    @rule(
        cel="!has(self.fallback) || has(self.fallback.sha256) || !has(self.format) || "
        f"!((has(self.fallback.format) ? self.fallback.format : self.format) in {_CODE_FORMATS})",
        field="fallback.sha256",
        message="required when loading the fallback runs code (format sklearn or python); "
        "add the fallback artifact's digest (sha256sum <file>)",
    )
    def _pickle_fallback_has_digest(self) -> bool:
        if self.fallback is None or self.fallback.sha256 is not None:
            return True
        return (self.fallback.format or self.format) not in PICKLE_FORMATS

    @property
    def artifact(self) -> tuple[str, ModelFormat]:
        """The bundled server's artifact and format; only called when `runtime.server` is unset,
        where the spec's rule makes both present."""
        if self.uri is None or self.format is None:
            raise ValueError("spec.model.uri and spec.model.format are required with the bundled server")
        return self.uri, self.format


# ---------------------------------------------------------------------------------------------
# spec.runtime


class ResourceList(ApiModel):
    """CPU and memory amounts."""

    cpu: Quantity | None = None
    """CPU cores, e.g. 500m or 2."""
    memory: Quantity | None = None
    """Memory, e.g. 512Mi or 2Gi."""
    ephemeral_storage: Quantity | None = None
    """Local disk, e.g. 10Gi; a limit also sizes the pod's `/tmp` scratch volume (10Gi without one),
    where artifacts are downloaded."""


class Resources(ApiModel):
    """Compute resources for each serving container."""

    requests: ResourceList | None = None
    """Guaranteed amounts; the scheduler places pods by these, the HPA measures CPU against them."""
    limits: ResourceList | None = None
    """Hard caps; memory over the limit kills the container."""
    gpu: int | None = Field(default=None, ge=1, le=16)
    """Whole GPUs per pod, requested as the `nvidia.com/gpu` limit."""


class SecretKeyRef(ApiModel):
    """One key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Secret name."""
    key: str = Field(min_length=1, max_length=253)
    """Key within the Secret."""


class ConfigMapKeyRef(ApiModel):
    """One key of a ConfigMap in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """ConfigMap name."""
    key: str = Field(min_length=1, max_length=253)
    """Key within the ConfigMap."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from (e.g. S3 credentials from a Secret)."""

    secret_key_ref: SecretKeyRef | None = None
    """Read the value from a Secret key."""
    config_map_key_ref: ConfigMapKeyRef | None = None
    """Read the value from a ConfigMap key."""

    @rule(
        cel="(has(self.secretKeyRef) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0) == 1",
        field=None,
        message="set exactly one of secretKeyRef or configMapKeyRef",
    )
    def _one_source(self) -> bool:
        return count(self.secret_key_ref is not None, self.config_map_key_ref is not None) == 1


RESERVED_ENV = ("POD_NAMESPACE", "ROLLWISE_HOP_TOKEN")
"""Env the operator sets on every serving container: a tenant setting POD_NAMESPACE could share
another namespace's cache entries, and one setting the hop token could forge hops."""


class EnvVar(ApiModel):
    """An environment variable for the serving container."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name; not one the operator sets (POD_NAMESPACE, ROLLWISE_HOP_TOKEN)."""
    value: str | None = Field(default=None, max_length=32768)
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Take the value from a Secret or ConfigMap key."""

    @rule(
        cel="!(has(self.value) && has(self.valueFrom))",
        field=None,
        message="set value or valueFrom, not both",
    )
    def _one_value(self) -> bool:
        return self.value is None or self.value_from is None

    @rule(
        cel="!(self.name in " + json.dumps(list(RESERVED_ENV)) + ")",
        field="name",
        message="is set by the operator (POD_NAMESPACE, ROLLWISE_HOP_TOKEN); use another name",
    )
    def _not_reserved(self) -> bool:
        return self.name not in RESERVED_ENV


class TolerationOperator(StrEnum):
    """How a toleration matches a taint."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """Which taint effect a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """Lets serving pods run on nodes with a matching taint (e.g. GPU nodes)."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key; unset with operator Exists tolerates every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    """Equal matches key and value; Exists matches the key alone."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value, for operator Equal."""
    effect: TaintEffect | None = None
    """Taint effect to tolerate; unset tolerates all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: seconds the pod stays bound after the taint appears."""


class CustomMetricTarget(ApiModel):
    """A per-pod metric served by a custom metrics adapter (e.g. prometheus-adapter)."""

    name: str = Field(min_length=1, max_length=253)
    """Metric name as the metrics adapter exposes it, e.g. `rollwise_inference_requests_per_second`."""
    target_average_value: Quantity
    """Desired average per pod; the HPA adds pods while the average is above it."""


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler per track; the operator then leaves `replicas` to the HPA."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest pods per track. Default 1."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most pods per track."""
    cpu_utilization: Percent | None = None
    """Target average CPU use, in percent of the CPU request (needs resources.requests.cpu)."""
    metric: CustomMetricTarget | None = None
    """Target for a custom per-pod metric."""
    scale_down_stabilization_seconds: int | None = Field(default=None, ge=0, le=3600)
    """How long the HPA waits on lower recommendations before scaling in (its
    `behavior.scaleDown.stabilizationWindowSeconds`); unset keeps Kubernetes' 300."""

    @rule(
        cel="self.minReplicas <= self.maxReplicas",
        field="minReplicas",
        message="must not exceed maxReplicas; lower minReplicas or raise maxReplicas",
    )
    def _min_le_max(self) -> bool:
        return self.min_replicas <= self.max_replicas

    @rule(
        cel="has(self.cpuUtilization) || has(self.metric)",
        field=None,
        message="set cpuUtilization, metric, or both, so the HPA has a target",
    )
    def _has_target(self) -> bool:
        return self.cpu_utilization is not None or self.metric is not None


class ServerProtocol(StrEnum):
    """What the user's server speaks; the signals proxy has one adapter for each."""

    OIP_REST = "oip-rest"
    """Open Inference Protocol v2 over REST (MLServer, KServe, Triton); with `grpcPort`, its gRPC
    service too (`inference.GRPCInferenceService`, passed through and counted)."""
    HTTP_JSON = "http-json"
    """Any JSON-over-HTTP model (a FastAPI app): predictions read at `predictionPath`."""
    OPENAI = "openai"
    """OpenAI-compatible completions (vLLM, llama.cpp, TGI): time to first token, inter-token
    latency, tokens and finish reasons, streaming passed through unbuffered."""


SERVER_PORTS_TAKEN: Final = (8080, 8081)
"""The signals proxy's HTTP and gRPC ports in the pod (`plan/desired.py`); the user's server
listens elsewhere, on loopback."""


class ServerSpec(ApiModel):
    """Your own model server image. Rollwise runs its signals proxy (`rollwise-proxy`) beside it in
    each pod: the Services send traffic to the proxy, which passes it to your server on loopback and
    exports the bundled server's metrics, so every check, strategy and router works unchanged."""

    image: str = Field(min_length=1, max_length=512)
    """Your server's image, e.g. `registry.example.com/team/mlserver:1.7.1-iris`."""
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=64)
    """Entrypoint; unset keeps the image's."""
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=256)
    """Arguments; unset keeps the image's. Make it listen on `port` (and `grpcPort`), best on 127.0.0.1."""
    protocol: ServerProtocol
    """What your server speaks: oip-rest, http-json or openai."""
    port: int = Field(default=9000, ge=1024, le=65535)
    """Port your server's HTTP listens on inside the pod (not 8080 or 8081: the proxy's)."""
    grpc_port: int | None = Field(default=None, ge=1024, le=65535)
    """oip-rest: your server's OIP gRPC port; the Services' `grpc` port (8081) is passed to it."""
    prediction_path: str | None = Field(default=None, min_length=2, max_length=256, pattern=r"^\$(\.[^.]+)+$")
    """http-json: where the answer holds one prediction per row, e.g. `$.predictions`."""
    features_path: str | None = Field(default=None, min_length=2, max_length=256, pattern=r"^\$(\.[^.]+)+$")
    """http-json: where the request holds its rows (objects by feature name, or lists in the feature
    schema's order), e.g. `$.instances`; unset counts outcomes and predictions only."""
    readiness_path: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^/[^ ]*$")
    """GET path that answers 2xx once your server can serve; unset: `/v2/health/ready` (oip-rest),
    `/v1/models` (openai), `/` (http-json). The pod is ready only when both proxy and server are."""
    timeout_seconds: int = Field(default=60, ge=1, le=3600)
    """Longest wait for your server's answer headers and between its streamed chunks."""
    max_connections: int = Field(default=128, ge=1, le=10_000)
    """Concurrent requests the proxy sends your server at most; more wait for a free connection."""

    @rule(
        cel=f"!(self.port in {list(SERVER_PORTS_TAKEN)})",
        field="port",
        message="8080 and 8081 are the signals proxy's; listen on another port, e.g. 9000",
    )
    def _port_free(self) -> bool:
        return self.port not in SERVER_PORTS_TAKEN

    @rule(
        cel=f"!has(self.grpcPort) || (self.protocol == 'oip-rest' && self.grpcPort != self.port && "
        f"!(self.grpcPort in {list(SERVER_PORTS_TAKEN)}))",
        field="grpcPort",
        message="only with protocol oip-rest, on a port other than port, 8080 and 8081 (e.g. 9001)",
    )
    def _grpc_port_fits(self) -> bool:
        if self.grpc_port is None:
            return True
        return (
            self.protocol is ServerProtocol.OIP_REST
            and self.grpc_port != self.port
            and self.grpc_port not in SERVER_PORTS_TAKEN
        )

    @rule(
        cel="(self.protocol == 'http-json') == has(self.predictionPath)",
        field="predictionPath",
        message="required with protocol http-json and only there; e.g. $.predictions",
    )
    def _prediction_path_fits(self) -> bool:
        return (self.protocol is ServerProtocol.HTTP_JSON) == (self.prediction_path is not None)

    @rule(
        cel="!has(self.featuresPath) || self.protocol == 'http-json'",
        field="featuresPath",
        message="only with protocol http-json (oip-rest and openai requests have a known shape); remove it",
    )
    def _features_path_fits(self) -> bool:
        return self.features_path is None or self.protocol is ServerProtocol.HTTP_JSON


class RuntimeSpec(ApiModel):
    """How the model runs: image, resources, placement and scale."""

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Serving image; unset uses the operator's `ROLLWISE_SERVING_IMAGE` (the chart sets it to the
    bundled image). The image must provide the `rollwise-serve` command (and `rollwise-proxy`,
    which runs from it beside `server`)."""
    server: ServerSpec | None = None
    """Run your own model server instead of the bundled one (leave `spec.model.uri` unset: your
    server loads its model); unset runs the bundled server."""
    resources: Resources | None = None
    """CPU, memory and GPU for each serving pod's model server (yours with `server`; the proxy beside
    it requests a fixed 100m CPU and 64Mi); unset leaves them to namespace defaults."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64, json_schema_extra=map_list("name"))
    """Extra environment variables, e.g. S3 credentials (`AWS_ACCESS_KEY_ID` from a Secret); with
    `server`, set on your server and on the proxy."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=32
    )
    """Node labels the serving pods must match."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Taints the serving pods tolerate."""
    replicas: int | None = Field(default=None, ge=1, le=1000)
    """Pods per track when not autoscaling; unset means 1. Changing it scales without a rollout."""
    autoscaling: Autoscaling | None = None
    """Scale each track with an HPA instead of a fixed replica count."""

    @rule(
        cel="!(has(self.replicas) && has(self.autoscaling))",
        field="replicas",
        message="set replicas or autoscaling, not both; remove replicas to let the HPA scale",
    )
    def _replicas_xor_autoscaling(self) -> bool:
        return self.replicas is None or self.autoscaling is None

    @rule(
        cel="!has(self.autoscaling) || !has(self.autoscaling.cpuUtilization) || "
        "(has(self.resources) && has(self.resources.requests) && has(self.resources.requests.cpu))",
        field="resources.requests.cpu",
        message="required when autoscaling.cpuUtilization is set (utilization is measured against "
        "the request); add a CPU request",
    )
    def _cpu_target_has_request(self) -> bool:
        if self.autoscaling is None or self.autoscaling.cpu_utilization is None:
            return True
        requests = self.resources.requests if self.resources else None
        return requests is not None and requests.cpu is not None

    @property
    def replica_count(self) -> int:
        """Pods per track when not autoscaling."""
        return self.replicas if self.replicas is not None else 1


# ---------------------------------------------------------------------------------------------
# spec.rollout: strategies


class PauseStep(ApiModel):
    """Hold the current weight."""

    duration_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    """How long to hold, in seconds; unset holds until resumed by hand."""


class AnalysisStep(ApiModel):
    """Run `spec.rollout.analysis` and wait for its verdict before going on."""

    count: int | None = Field(default=None, ge=1, le=1000)
    """Measurements to take at this step; unset uses `spec.rollout.analysis.count`."""


class BakeStep(ApiModel):
    """Hold the current weight while `spec.rollout.analysis` keeps looking, so checks on late
    signals (ground-truth labels that arrive minutes after the prediction) are judged on them."""

    duration_seconds: int = Field(ge=1, le=7 * 24 * 3600)
    """How long to hold. A look that fails rolls back at once; passes and inconclusive looks count
    only from the end of the bake on, on everything counted since the bake began."""
    count: int | None = Field(default=None, ge=1, le=1000)
    """Conclusive looks after the bake; unset uses `spec.rollout.analysis.count`."""


class CanaryStep(ApiModel):
    """One canary step: exactly one of setWeight, pause, analysis or bake."""

    set_weight: Weight | None = None
    """Send this percent of traffic to the candidate."""
    pause: PauseStep | None = None
    """Hold the current weight for a while, or until resumed."""
    analysis: AnalysisStep | None = None
    """Measure the candidate before going on."""
    bake: BakeStep | None = None
    """Hold the weight while the analysis runs for a fixed time, then judge on all of it."""

    @rule(
        cel="(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0)"
        " + (has(self.bake) ? 1 : 0) == 1",
        field=None,
        message="each step needs exactly one of setWeight, pause, analysis or bake; split it into "
        "separate steps",
    )
    def _one_action(self) -> bool:
        chosen = (self.set_weight, self.pause, self.analysis, self.bake)
        return count(*(c is not None for c in chosen)) == 1


_WEIGHTS = "self.steps.filter(s, has(s.setWeight))"
_INDICES = "[" + ", ".join(str(i) for i in range(MAX_STEPS - 1)) + "]"


class Canary(ApiModel):
    """Shift traffic to the candidate in steps; after the last step the candidate is promoted."""

    steps: list[CanaryStep] = Field(min_length=1, max_length=MAX_STEPS)
    """Ordered steps, e.g. setWeight 5, analysis, setWeight 25, pause 300s, setWeight 50, analysis."""

    @rule(
        # Plain CEL (no Kubernetes list extensions) so unit tests can evaluate it too: walk a literal
        # index list as long as the longest allowed steps list.
        cel=f"{_INDICES}.all(i, i + 1 >= size({_WEIGHTS}) || "
        f"{_WEIGHTS}[i].setWeight < {_WEIGHTS}[i + 1].setWeight)",
        field="steps",
        message="setWeight values must strictly increase within 1..100; reorder or fix the weights",
    )
    def _weights_increase(self) -> bool:
        weights = [s.set_weight for s in self.steps if s.set_weight is not None]
        return all(a < b for a, b in itertools.pairwise(weights))


class BlueGreen(ApiModel):
    """Run the candidate at full size behind the preview Service, then switch all traffic at once."""

    preview_replicas: int | None = Field(default=None, ge=1, le=1000)
    """Candidate pods before the switch; unset uses the stable's count."""
    auto_promotion_seconds: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    """Seconds to wait, once the preview is ready and pre-promotion analysis passed, before switching;
    unset waits for a manual promote."""
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=24 * 3600)
    """Seconds the old stable keeps running after the switch, as an instant rollback. Default 30."""
    pre_promotion_analysis: AnalysisStep | None = None
    """Analyse the preview before switching; unset switches without analysis."""


class UserHash(ApiModel):
    """A sticky split: a hash of a user-id header decides the side, so a user always lands on the same one."""

    header: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    """Header carrying the user id, e.g. `x-user-id`."""
    weight: Annotated[int, Field(ge=1, le=99)]
    """Percent of users sent to the candidate."""


class AbTest(ApiModel):
    """Route chosen requests to the candidate: by header/cookie match, or by a sticky user-hash split."""

    match: list[RequestMatch] | None = Field(default=None, min_length=1, max_length=8)
    """Requests matching any entry go to the candidate; the rest stay on stable."""
    user_hash: UserHash | None = None
    """Send a fixed share of users to the candidate by hashing a user-id header."""
    duration_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    """How long the test runs before promotion; unset waits for analysis or a manual promote."""
    analysis: AnalysisStep | None = None
    """Analyse the candidate during the test; a failure rolls back."""

    @rule(
        cel="(has(self.match) ? 1 : 0) + (has(self.userHash) ? 1 : 0) == 1",
        field=None,
        message="set exactly one of match or userHash",
    )
    def _one_routing(self) -> bool:
        return count(self.match is not None, self.user_hash is not None) == 1


class Shadow(ApiModel):
    """Mirror live traffic to the candidate; its answers are discarded and compared with stable's."""

    duration_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    """How long to mirror before promotion; unset waits for analysis or a manual promote."""
    analysis: AnalysisStep | None = None
    """Analyse the candidate on mirrored traffic; a failure rolls back."""


# ---------------------------------------------------------------------------------------------
# spec.rollout: analysis, traffic, webhooks


class BuiltinMetric(StrEnum):
    """Checks computed from the serving image's own metrics, usable by name."""

    SUCCESS_RATE = "successRate"
    """Percent of the candidate's inference requests it answered (0..100) since the analysis started,
    from exact counts; set threshold.min. While stable serves requests too, it is also compared with
    stable's (`compare`): more failures than stable's, client errors included, beyond `worseBy` at
    `confidence` fail it. Without that comparison its client errors count only beyond the stable's
    share of them and sampling noise."""
    LATENCY_P99 = "latencyP99"
    """99th percentile inference latency in seconds since the analysis started; set threshold.max
    (outside only when more than 1 % of requests are shown slower). While stable serves requests it
    is also compared with stable's: slower by more than `compare.worseBy` seconds (default 0.025)
    at some bucket boundary, shown at `compare.confidence`, fails it."""
    TIME_TO_FIRST_TOKEN_P95 = "timeToFirstTokenP95"
    """`runtime.server` with protocol openai: 95th percentile time to first token in seconds (from
    the request reaching the proxy to the first content chunk; a whole answer's time when not
    streamed) since the analysis started; set threshold.max. Compared with stable's as latencyP99
    is: slower by more than `compare.worseBy` seconds (default 0.1) at some bucket boundary, shown
    at `compare.confidence`, fails it."""
    INTER_TOKEN_LATENCY_P95 = "interTokenLatencyP95"
    """`runtime.server` with protocol openai: 95th percentile over streamed answers of each answer's
    mean gap between tokens, in seconds (one observation per answer of two or more chunks, so the
    answers are independent draws; single gaps of one stream are not) since the analysis started;
    set threshold.max. Compared with stable's as latencyP99 is: slower by more than
    `compare.worseBy` seconds (default 0.02) at some bucket boundary, shown at
    `compare.confidence`, fails it."""
    OUTPUT_TOKENS_PER_SECOND = "outputTokensPerSecond"
    """`runtime.server` with protocol openai: median over answers of each answer's output tokens
    per second (its completion tokens over its whole time, from the request reaching the proxy to
    its end) since the analysis started; higher is better, set threshold.min (below it only when
    more than half the answers are shown slower). Compared with stable's: `compare.worseBy` is a
    fraction of stable's rate (default 0.2: 20 % fewer tokens/s), and a candidate shown slower
    than stable's rate times (1 - worseBy) at some bucket boundary, at `compare.confidence`,
    fails it."""
    PREDICTION_DRIFT = "predictionDrift"
    """PSI between candidate and stable class shares since the analysis started, from exact counts;
    set threshold.max (0.2 is a common alarm level). A PSI above it fails only when the shares are
    also shown to differ at `compare.confidence` (a test of homogeneity), so a few dozen requests
    cannot fail a candidate that predicts like stable. A regressor: the same on its prediction
    histogram's bins."""
    INPUT_DRIFT = "inputDrift"
    """Largest per-feature PSI of the candidate's inputs since the analysis started (or `feature`
    only) against the reference the model ships (`spec.model.reference`), or without one against
    stable's inputs over the same time; set threshold.max. A PSI above it fails only when the
    feature's shares are also shown to differ at `compare.confidence` (Bonferroni over features)."""
    ACCURACY = "accuracy"
    """Percent of the candidate's labelled predictions whose class equals the ground-truth label
    (`/feedback`), over labels received since the analysis started; set threshold.min (below it
    fails only when shown at `compare.confidence`). Compared with stable's: more wrong answers than
    stable's beyond `worseBy` percentage points (default 1) fails it. Needs `minSamples` labels on
    the candidate to pass."""
    LOG_LOSS = "logLoss"
    """Mean log loss (nats) of the candidate's labelled predictions that had probabilities; set
    threshold.max. Compared with stable's: a higher mean by more than `worseBy` (default 0.02),
    shown at `compare.confidence`, fails it."""
    MEAN_ABSOLUTE_ERROR = "meanAbsoluteError"
    """A regressor's mean |label - prediction| over its labelled predictions, in the target's unit;
    set threshold.max. Compared with stable's: higher by more than `worseBy` (default 0: shown
    higher at all), at `compare.confidence`, fails it."""
    PREDICTION_AGREEMENT = "predictionAgreement"
    """In shadow: percent of mirrored rows where the candidate answered the same class as stable,
    counted by the stable pod that mirrors; set threshold.min (below it fails only when shown at
    `compare.confidence`). It is a comparison with stable by itself; needs `minSamples` rows."""
    PARITY = "parity"
    """The gap, in percentage points, between the segment values with the highest and the lowest
    rate (`parity.of`: the positive rate of `parity.positiveClass`, or accuracy) of `segment`; set
    threshold.max. Fails when the candidate's gap is shown above the threshold, or shown wider than
    stable's by more than `compare.worseBy` (default 2). The seed's bias audit, on every rollout."""
    PREDICTION_DELTA = "predictionDelta"
    """In shadow: mean |stable - candidate| per mirrored row (a regressor's value; a classifier's
    largest class-probability difference); set threshold.max (above it fails only when shown at
    `compare.confidence`). Needs `minSamples` rows."""


class BySegment(StrEnum):
    """How a check judges a segmented model."""

    WORST = "worst"
    """Judge every value of `segment` on its own (the candidate's segment against stable's same
    segment); the candidate fails when any segment fails."""


BY_SEGMENT = frozenset(
    {
        BuiltinMetric.SUCCESS_RATE,
        BuiltinMetric.ACCURACY,
        BuiltinMetric.MEAN_ABSOLUTE_ERROR,
        BuiltinMetric.PREDICTION_AGREEMENT,
    }
)
"""The checks that can be judged per segment."""


class ParityOf(StrEnum):
    """The rate a parity check compares across segments."""

    POSITIVE_RATE = "positiveRate"
    """The share of rows predicted `positiveClass` (demographic parity)."""
    ACCURACY = "accuracy"
    """The share of labelled rows predicted right (accuracy parity)."""


class Parity(ApiModel):
    """What a `parity` check compares across the values of its segment."""

    of: ParityOf
    """positiveRate or accuracy."""
    positive_class: str | None = Field(default=None, min_length=1, max_length=256)
    """The class whose share is compared (positiveRate)."""

    @rule(
        cel="self.of != 'positiveRate' || has(self.positiveClass)",
        field="positiveClass",
        message="required for positiveRate: name the class whose share must not differ by segment",
    )
    def _class_for_positive_rate(self) -> bool:
        return self.of is not ParityOf.POSITIVE_RATE or self.positive_class is not None


LABELLED_CHECKS = frozenset(
    {BuiltinMetric.ACCURACY, BuiltinMetric.LOG_LOSS, BuiltinMetric.MEAN_ABSOLUTE_ERROR}
)
"""Checks on ground-truth labels sent back to the server (`/feedback`)."""
SHADOW_CHECKS = frozenset({BuiltinMetric.PREDICTION_AGREEMENT, BuiltinMetric.PREDICTION_DELTA})
"""Checks on the stable pod's comparison of the shadow's answers with its own."""

COMPARED = frozenset(BuiltinMetric) - SHADOW_CHECKS
"""The built-in checks that compare the candidate's value with stable's (`compare`); the shadow
checks measure the difference of the two answers directly."""

DEFAULT_WORSE_BY = {
    BuiltinMetric.SUCCESS_RATE: 0.5,
    BuiltinMetric.LATENCY_P99: 0.025,
    BuiltinMetric.TIME_TO_FIRST_TOKEN_P95: 0.1,
    BuiltinMetric.INTER_TOKEN_LATENCY_P95: 0.02,
    BuiltinMetric.OUTPUT_TOKENS_PER_SECOND: 0.2,
    BuiltinMetric.ACCURACY: 1.0,
    BuiltinMetric.LOG_LOSS: 0.02,
    BuiltinMetric.MEAN_ABSOLUTE_ERROR: 0.0,
    BuiltinMetric.PARITY: 2.0,
}
"""`compare.worseBy` when unset: 0.5 percentage points of failed requests, 25 ms of latency, 100 ms
to the first token (a pause a chat user notices; the buckets step 100, 250, 500 ms there), 20 ms
per token between tokens (a 500-token answer 10 s longer; about the gap of a fast GPU server, so a
candidate that doubles it fails, and a few ms of noise does not), 20 % fewer output tokens per
second (a fraction of stable's rate, since rates differ a hundredfold between a CPU and a GPU; the
proxy's buckets step about 25 %, so less could not be resolved), 1 percentage point of accuracy,
0.02 nats of log loss, 2 points of a parity gap, and for the mean absolute error (a unit Rollwise
cannot know) any shown increase."""

DEFAULT_MIN_SAMPLES = 100
"""Labels (or compared shadow rows) a label or shadow check needs on the candidate to pass."""


class InconclusivePolicy(StrEnum):
    """What to do when inconclusiveLimit is exceeded (e.g. too little traffic to judge)."""

    PAUSE = "pause"
    """Pause the rollout for a human to resume, promote or abort."""
    FAIL = "fail"
    """Treat it as a failed analysis and roll back."""
    PROCEED = "proceed"
    """Go on to the next step as if it had passed: the candidate was not shown worse, and the
    traffic was too thin to show it no worse. For models whose owners accept that risk."""


class ThresholdRange(ApiModel):
    """Accepted range for a measurement; a value outside it is a failed measurement."""

    min: float | None = None
    """Smallest passing value (inclusive)."""
    max: float | None = None
    """Largest passing value (inclusive)."""

    @rule(
        cel="has(self.min) || has(self.max)",
        field=None,
        message="set min, max, or both",
    )
    def _bounded(self) -> bool:
        return self.min is not None or self.max is not None

    @rule(
        cel="!has(self.min) || !has(self.max) || self.min <= self.max",
        field="min",
        message="must not exceed max; swap or fix the bounds",
    )
    def _ordered(self) -> bool:
        return self.min is None or self.max is None or self.min <= self.max

    def contains(self, value: float) -> bool:
        """Whether `value` passes: inside the bounds, inclusive."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def label(self) -> str:
        """The bounds as a message reads them: `>= 99`, `<= 0.25`, `1..3`."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"<= {self.max:g}"


class Comparison(ApiModel):
    """How a check compares the candidate with stable over the same requests (docs/analysis.md).

    Evidence accumulates from the start of the analysis; the rule stays valid however often it is
    looked at (a confidence sequence), so a candidate no worse than `worseBy` is failed by it in at
    most `1 - confidence` of rollouts.
    """

    enabled: bool = True
    """Compare while stable serves requests. Default true."""
    worse_by: float | None = Field(default=None, ge=0, le=1e9)
    """The worsening that matters, in the check's unit: successRate in percentage points of failed
    requests (default 0.5), latencyP99 in seconds (default 0.025), timeToFirstTokenP95 and
    interTokenLatencyP95 in seconds (defaults 0.1, 0.02), outputTokensPerSecond as a fraction of
    stable's rate below 1 (default 0.2: 20 % slower), a query in its own unit (no default). The
    candidate fails when it is shown worse than stable by more. (predictionDrift's tolerance is its
    threshold.max.)"""
    confidence: float = Field(default=0.99, ge=0.5, le=0.9999)
    """How sure the judge must be before it fails a candidate. Default 0.99."""


class MetricCheck(ApiModel):
    """One measurement taken every interval: a built-in check or a PromQL query."""

    name: Name
    """Name shown in status and Events."""
    builtin: BuiltinMetric | None = None
    """A built-in check; set this or query."""
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """A PromQL template returning one number. Placeholders: {{namespace}}, {{name}} (the
    ModelDeployment), {{model}}, {{track}}, {{version}}, {{interval}} (e.g. `60s`). With `compare`
    it is run for each track ({{track}} and {{version}} filled for both) and the candidate fails
    when its value is worse than stable's by more than `compare.worseBy`, read as measured."""
    threshold: ThresholdRange
    """Passing range for the value."""
    feature: str | None = Field(default=None, min_length=1, max_length=64, pattern=FEATURE_NAME)
    """For inputDrift: the one feature to watch (a name of the feature schema); unset watches every
    feature."""
    by_segment: BySegment | None = None
    """`worst`: judge each value of `segment` on its own (successRate, accuracy, meanAbsoluteError,
    predictionAgreement), at a confidence raised for the number of segments (Bonferroni), and fail
    when any segment fails, naming it. Unset judges all traffic together."""
    segment: str | None = Field(default=None, min_length=1, max_length=64, pattern=FEATURE_NAME)
    """The segment feature for bySegment and parity (one of `featureSchema.segments`); unset: the
    only one declared."""
    parity: Parity | None = None
    """For builtin parity: which rate must not differ by segment."""
    min_samples: int | None = Field(default=None, ge=1, le=10_000_000)
    """Labels (accuracy, logLoss, meanAbsoluteError) or compared rows (predictionAgreement,
    predictionDelta) the candidate needs since the analysis started before the check can pass;
    fewer is inconclusive (a failure shown on fewer stands). Default 100."""
    compare: Comparison | None = None
    """Compare with stable. The built-ins (but the shadow checks): unset uses the defaults, on.
    A query: off unless set, and then `worseBy` is required; higher is worse when the threshold sets
    max, lower when it sets only min."""

    @rule(
        cel="(has(self.builtin) ? 1 : 0) + (has(self.query) ? 1 : 0) == 1",
        field=None,
        message="set exactly one of builtin or query",
    )
    def _one_source(self) -> bool:
        return count(self.builtin is not None, self.query is not None) == 1

    @rule(
        cel="!has(self.feature) || (has(self.builtin) && self.builtin == 'inputDrift')",
        field="feature",
        message="applies to builtin inputDrift only; remove it",
    )
    def _feature_for_input_drift(self) -> bool:
        return self.feature is None or self.builtin is BuiltinMetric.INPUT_DRIFT

    @rule(
        cel="!has(self.minSamples) || (has(self.builtin) && self.builtin in "
        + "["
        + ", ".join(f"'{b}'" for b in sorted(LABELLED_CHECKS | SHADOW_CHECKS | {BuiltinMetric.PARITY}))
        + "])",
        field="minSamples",
        message="applies to the label, shadow and parity checks (accuracy, logLoss, "
        "meanAbsoluteError, parity, predictionAgreement, predictionDelta); use "
        "analysis.minSampleCount for the others",
    )
    def _min_samples_for_counted_checks(self) -> bool:
        return self.min_samples is None or self.builtin in LABELLED_CHECKS | SHADOW_CHECKS | {
            BuiltinMetric.PARITY
        }

    @rule(
        cel="!has(self.compare) || !has(self.builtin) || !(self.builtin in "
        "['predictionAgreement', 'predictionDelta'])",
        field="compare",
        message="the shadow checks compare the two answers themselves; remove compare (set the threshold)",
    )
    def _shadow_checks_do_not_compare(self) -> bool:
        return self.compare is None or self.builtin not in SHADOW_CHECKS

    @rule(
        cel="!has(self.bySegment) || (has(self.builtin) && self.builtin in ["
        + ", ".join(f"'{b}'" for b in sorted(BY_SEGMENT))
        + "])",
        field="bySegment",
        message="applies to successRate, accuracy, meanAbsoluteError and predictionAgreement; remove it",
    )
    def _by_segment_checks(self) -> bool:
        return self.by_segment is None or self.builtin in BY_SEGMENT

    @rule(
        cel="(has(self.builtin) && self.builtin == 'parity') == has(self.parity)",
        field="parity",
        message="required for builtin parity and not allowed otherwise: set parity.of (and "
        "positiveClass for positiveRate)",
    )
    def _parity_iff_parity(self) -> bool:
        return (self.builtin is BuiltinMetric.PARITY) == (self.parity is not None)

    @rule(
        cel="!has(self.segment) || has(self.bySegment) || (has(self.builtin) && self.builtin == 'parity')",
        field="segment",
        message="names the segment of bySegment or parity; set one of them or remove it",
    )
    def _segment_used(self) -> bool:
        return self.segment is None or self.by_segment is not None or self.builtin is BuiltinMetric.PARITY

    @property
    def samples_needed(self) -> int:
        """`minSamples` with its default."""
        return self.min_samples if self.min_samples is not None else DEFAULT_MIN_SAMPLES

    @rule(
        cel="!has(self.builtin) || self.builtin != 'outputTokensPerSecond' || !has(self.compare) "
        "|| !has(self.compare.worseBy) || self.compare.worseBy < 1.0",
        field="compare.worseBy",
        message="for outputTokensPerSecond a fraction of stable's rate (0.2: 20 % fewer tokens/s); "
        "use a value below 1",
    )
    def _rate_tolerance_is_a_fraction(self) -> bool:
        return (
            self.builtin is not BuiltinMetric.OUTPUT_TOKENS_PER_SECOND
            or self.compare is None
            or self.compare.worse_by is None
            or self.compare.worse_by < 1
        )

    @rule(
        cel="!has(self.query) || !has(self.compare) || has(self.compare.worseBy)",
        field="compare.worseBy",
        message="a query that compares needs the difference that matters, in the query's unit; set it",
    )
    def _custom_compare_states_its_tolerance(self) -> bool:
        return self.query is None or self.compare is None or self.compare.worse_by is not None

    @property
    def comparison(self) -> Comparison | None:
        """The comparison this check makes, defaults filled; None when it makes none."""
        if self.query is not None and self.compare is not None:
            return self.compare if self.compare.enabled else None  # a query compares when asked to
        if self.builtin is None or self.builtin not in COMPARED:
            return None
        chosen = self.compare or Comparison()
        if chosen.worse_by is None and self.builtin in DEFAULT_WORSE_BY:
            chosen = chosen.model_copy(update={"worse_by": DEFAULT_WORSE_BY[self.builtin]})
        return chosen if chosen.enabled else None


class AnalysisSpec(ApiModel):
    """How the candidate is judged: metrics taken every interval and how many failures are tolerated.

    A measurement is pass, fail, or inconclusive (fewer than minSampleCount requests, no data);
    no data never passes. A Prometheus error counts as a failure. docs/analysis.md has the rules
    and their error rates.
    """

    metrics: list[MetricCheck] = Field(min_length=1, max_length=16, json_schema_extra=map_list("name"))
    """Checks taken every interval."""
    interval_seconds: int = Field(default=60, ge=5, le=3600)
    """Seconds between measurements. Every built-in check counts from the start of the analysis;
    this is also a custom query's `{{interval}}` and minSampleCount's window. Default 60."""
    count: int = Field(default=5, ge=1, le=1000)
    """Conclusive measurements (pass or fail) after which the analysis passes, when within
    failureLimit and at least one passed; with maxDurationSeconds, only for checks that cannot
    show "no worse" (drift, custom queries). Default 5."""
    failure_limit: int = Field(default=0, ge=0, le=1000)
    """Failed measurements tolerated; one more fails the analysis and rolls back. Default 0."""
    inconclusive_limit: int = Field(default=0, ge=0, le=1000)
    """Inconclusive measurements tolerated before inconclusivePolicy applies. Default 0."""
    min_sample_count: int = Field(default=50, ge=0, le=1_000_000)
    """Requests the candidate must have served in an interval for a measurement to pass; a thinner
    look is retaken (up to `count` times), then inconclusive, so a low-traffic model never passes on
    no data. A failure stands however few requests it saw. Default 50."""
    inconclusive_policy: InconclusivePolicy = InconclusivePolicy.PAUSE
    """What happens past inconclusiveLimit, or at maxDurationSeconds without a decision. Default pause."""
    max_duration_seconds: int | None = Field(default=None, ge=5, le=86_400)
    """Let the evidence end the analysis: it passes as soon as every successRate and latencyP99
    check that compares has shown the candidate no worse than stable by more than `worseBy` (other
    checks still need `count` passing looks), fails as soon as one is shown worse, and after this
    many seconds without a decision inconclusivePolicy applies. Unset: the analysis passes after
    `count` looks in which nothing was shown worse (no proof of "no worse" is asked for)."""

    @rule(
        cel="!has(self.maxDurationSeconds) || self.maxDurationSeconds >= self.intervalSeconds",
        field="maxDurationSeconds",
        message="must be at least intervalSeconds (one look); raise it or lower intervalSeconds",
    )
    def _max_duration_holds_a_look(self) -> bool:
        return self.max_duration_seconds is None or self.max_duration_seconds >= self.interval_seconds


class TrafficProvider(StrEnum):
    """Which component moves traffic between the tracks."""

    REPLICAS = "replicas"
    """Weights by the replica ratio of the two tracks behind one Service; needs nothing installed."""
    GATEWAY_API = "gatewayAPI"
    """Weights, matches and mirroring on a Gateway API HTTPRoute."""
    ISTIO = "istio"
    """Weights, matches and mirroring on an Istio VirtualService."""
    NGINX = "nginx"
    """ingress-nginx canary annotations on a second Ingress."""


DEFAULT_PROXY_SETTLE_SECONDS: Final = 5
"""A proxy's time to program a new endpoint, with margin: Traefik's 2 s configuration batching,
Istio's and Envoy Gateway's xDS debounce, ingress-nginx's sync."""


class GatewayMirroring(StrEnum):
    """Who copies a shadow step's requests to the candidate behind a Gateway API route."""

    REQUEST_MIRROR = "requestMirror"
    """The gateway, by a `RequestMirror` filter on the route's rule (an Extended feature of the
    Gateway API: Envoy Gateway, Istio, kgateway and others implement it)."""
    PODS = "pods"
    """The stable pods, as with the `replicas` router (`--mirror-url`), and the route is left
    without a filter. For gateways without `RequestMirror`, such as Traefik, which answers every
    request of a rule carrying a filter it does not implement with a 500."""


class GatewayApiTraffic(ApiModel):
    """The HTTPRoute the operator edits; it must already exist and route to the `<name>` Service."""

    http_route: Name
    """HTTPRoute name in the ModelDeployment's namespace."""
    mirroring: GatewayMirroring = GatewayMirroring.REQUEST_MIRROR
    """How a shadow step copies requests: `requestMirror` (the gateway) or `pods` (the stable pods;
    for a gateway that has no RequestMirror filter, e.g. Traefik)."""


class IstioTraffic(ApiModel):
    """The VirtualService the operator edits; it must already exist."""

    virtual_service: Name
    """VirtualService name in the ModelDeployment's namespace."""
    route: str | None = Field(default=None, min_length=1, max_length=253)
    """Name of the HTTP route inside it to edit; unset edits the first route."""


class NginxTraffic(ApiModel):
    """The Ingress in front of the `<name>` Service; the operator adds a canary Ingress beside it."""

    ingress: Name
    """Ingress name in the ModelDeployment's namespace."""


class Traffic(ApiModel):
    """Traffic routing between the stable and candidate tracks."""

    provider: TrafficProvider = TrafficProvider.REPLICAS
    """Which router to use. Default replicas."""
    gateway_api: GatewayApiTraffic | None = Field(default=None, alias="gatewayAPI")
    """Required with provider gatewayAPI."""
    istio: IstioTraffic | None = None
    """Required with provider istio."""
    nginx: NginxTraffic | None = None
    """Required with provider nginx."""
    endpoint_settle_seconds: int | None = Field(default=None, ge=0, le=300)
    """Seconds a new pod of either track must have been Ready before it counts as available (the
    Deployments' `minReadySeconds`), so a proxy in front of the tracks has programmed its endpoint
    before the rollout sends the track traffic or removes the pod it replaces. Unset: 0 with the
    `replicas` router (kube-proxy routes the Service), 5 with gatewayAPI, istio and nginx, whose
    proxies learn endpoints from the API on their own schedule (Traefik batches changes for 2 s
    and answers 503 for a backend it has no endpoint for yet)."""

    @property
    def settle_seconds(self) -> int:
        """`endpointSettleSeconds`, or its default for the provider."""
        if self.endpoint_settle_seconds is not None:
            return self.endpoint_settle_seconds
        return 0 if self.provider is TrafficProvider.REPLICAS else DEFAULT_PROXY_SETTLE_SECONDS

    @rule(
        cel="(self.provider == 'gatewayAPI') == has(self.gatewayAPI)",
        field="gatewayAPI",
        message="set it exactly when provider is gatewayAPI; add gatewayAPI.httpRoute or change the provider",
    )
    def _gateway_block(self) -> bool:
        return (self.provider is TrafficProvider.GATEWAY_API) == (self.gateway_api is not None)

    @rule(
        cel="(self.provider == 'istio') == has(self.istio)",
        field="istio",
        message="set it exactly when provider is istio; add istio.virtualService or change the provider",
    )
    def _istio_block(self) -> bool:
        return (self.provider is TrafficProvider.ISTIO) == (self.istio is not None)

    @rule(
        cel="(self.provider == 'nginx') == has(self.nginx)",
        field="nginx",
        message="set it exactly when provider is nginx; add nginx.ingress or change the provider",
    )
    def _nginx_block(self) -> bool:
        return (self.provider is TrafficProvider.NGINX) == (self.nginx is not None)


class WebhookType(StrEnum):
    """When a webhook is called; a timeout or a non-2xx answer counts as a failure."""

    PRE_ROLLOUT = "preRollout"
    """Before the candidate gets any traffic; failure rolls back."""
    STEP = "step"
    """Before each step; failure rolls back."""
    CONFIRM_PROMOTION = "confirmPromotion"
    """Before promotion; failure keeps the rollout paused until it answers 2xx."""
    POST_ROLLOUT = "postRollout"
    """After promotion or rollback, for notification; failure is only reported."""
    ROLLBACK = "rollback"
    """Polled during the rollout; a 2xx answer rolls back."""
    MODEL_DEGRADED = "modelDegraded"
    """When `spec.monitoring` finds the stable model degraded, and when it recovers, for
    notification; failure is only reported."""


class Webhook(ApiModel):
    """An HTTP POST the operator sends at a rollout gate, with the ModelDeployment and step as JSON."""

    name: Name
    """Name shown in status and Events."""
    type: WebhookType
    """When it is called."""
    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^ ]+$")
    """http(s) URL to POST to. Loopback, link-local, the API server and the ranges the administrator
    denies are refused (chart `webhooks.*`); only the answer's status counts, its body is not read."""
    timeout_seconds: int = Field(default=10, ge=1, le=300)
    """Seconds the whole call may take, from name lookup to the status line; past it the call is a
    failure. Default 10."""


class Dataset(ApiModel):
    """A dataset in files: the input of a ModelBatchJob and a backtest's labelled history."""

    uri: Uri
    """A file or directory: file:///path (in the image), pvc://claim/path (mounted read-only),
    http(s)://host/file, or an S3 prefix s3://bucket/prefix/ (every file under it)."""
    format: DataFormat | None = None
    """parquet or csv; unset: from the file names (.parquet, .pq, .csv)."""

    @rule(cel=f"self.uri.matches('{URI}')", field="uri", message=f"unsupported location; {URI_FIX}")
    def _uri_supported(self) -> bool:
        return re.fullmatch(URI, self.uri) is not None


class BacktestMetricName(StrEnum):
    """What a backtest compares between the candidate and the stable on the labelled rows."""

    ACCURACY = "accuracy"
    """Classifier: the share of rows whose predicted label is the true one, in percent."""
    AGREEMENT = "agreement"
    """Classifier: the share of rows where both models predict the same label, in percent."""
    MAE = "mae"
    """Regressor: mean absolute error, in the label's unit."""
    RMSE = "rmse"
    """Regressor: root mean squared error, in the label's unit."""


DEFAULT_BACKTEST_WORSE_BY: Final = 1.0
"""accuracy's default `worseBy`: one percentage point."""


class BacktestMetric(ApiModel):
    """One comparison of the backtest; each fails the candidate only when shown (docs/batch.md)."""

    name: BacktestMetricName
    """accuracy, agreement (classifiers), mae or rmse (regressors)."""
    worse_by: float | None = Field(default=None, ge=0, le=1e9)
    """The worsening that matters: accuracy in percentage points (default 1), mae and rmse in the
    label's unit (required). The candidate fails when it is shown worse than the stable by more, at
    the backtest's confidence; a smaller or unproven difference passes."""
    minimum: float | None = Field(default=None, ge=0, le=100)
    """agreement only (required there): the smallest share of rows, in percent, on which both
    models must predict the same label; failed only when shown below it."""
    by_segment: bool = False
    """Also judge each segment value the candidate's feature schema declares (a segment parity
    check): no segment value with at least minRows rows may be shown worse by more than `worseBy`.
    The whole dataset and the m segment values are m + 1 comparisons, each at alpha / (m + 1)
    (Bonferroni), so the check as a whole keeps the backtest's confidence."""

    @rule(
        cel="self.name != 'agreement' || has(self.minimum)",
        field="minimum",
        message="required for agreement; set the smallest share of rows both models must agree on, e.g. 95",
    )
    def _agreement_has_minimum(self) -> bool:
        return self.name is not BacktestMetricName.AGREEMENT or self.minimum is not None

    @rule(
        cel="self.name == 'agreement' || !has(self.minimum)",
        field="minimum",
        message="only agreement takes a minimum; use worseBy for accuracy, mae and rmse",
    )
    def _minimum_only_for_agreement(self) -> bool:
        return self.name is BacktestMetricName.AGREEMENT or self.minimum is None

    @rule(
        cel="!(self.name == 'mae' || self.name == 'rmse') || has(self.worseBy)",
        field="worseBy",
        message="required for mae and rmse (in the label's unit, e.g. 0.1); there is no default",
    )
    def _error_has_worse_by(self) -> bool:
        return self.name not in (BacktestMetricName.MAE, BacktestMetricName.RMSE) or self.worse_by is not None

    @property
    def tolerance(self) -> float:
        """`worseBy`, or accuracy's default (mae and rmse always set it)."""
        return self.worse_by if self.worse_by is not None else DEFAULT_BACKTEST_WORSE_BY


MAX_BACKTEST_SHARDS = 100
"""Shards of a backtest: each reports its tallies in its own termination message."""


class Backtest(ApiModel):
    """Score a labelled dataset with the candidate and the stable before the candidate gets any
    traffic; a candidate shown worse is rolled back before a user sees it (docs/batch.md)."""

    dataset: Dataset
    """The labelled history: the candidate's feature columns and `labelColumn`."""
    label_column: str = Field(min_length=1, max_length=256, pattern=r"^[^,\s][^,]*$")
    """The column holding each row's true label (a class, or a regressor's number)."""
    metrics: list[BacktestMetric] = Field(min_length=1, max_length=8, json_schema_extra=map_list("name"))
    """The comparisons; any shown worse rolls the candidate back."""
    confidence: float = Field(default=0.99, ge=0.5, le=0.9999)
    """How sure each comparison must be before it fails a candidate, as a live check's
    `compare.confidence`: a candidate no worse than `worseBy` fails one in at most `1 - confidence`
    of backtests. Default 0.99."""
    min_rows: int = Field(default=200, ge=1, le=1_000_000_000)
    """Labelled rows both models must have scored for a verdict; fewer is inconclusive. Default 200."""
    shards: int = Field(default=1, ge=1, le=MAX_BACKTEST_SHARDS)
    """Pieces the dataset is split into, one pod each (as a ModelBatchJob's). Default 1."""
    resources: Resources | None = None
    """CPU and memory for each shard's pod; unset leaves them to namespace defaults."""
    timeout_seconds: int = Field(default=1800, ge=30, le=24 * 3600)
    """Seconds the backtest may run; past it the backtest is inconclusive. Default 1800."""
    inconclusive_policy: InconclusivePolicy = InconclusivePolicy.FAIL
    """What a backtest without a verdict does (its Job failed, it timed out, too few rows, segments
    lost): fail (default) rolls back, pause waits for a human (promote skips the backtest, abort
    rolls back), proceed goes on to the first step. Never a silent pass."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Image providing `rollwise-batch`; unset: the operator's batch image."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64, json_schema_extra=map_list("name"))
    """Extra environment variables for the shards, e.g. S3 credentials from a Secret."""


class StrategyName(StrEnum):
    """The strategy block set in spec.rollout."""

    CANARY = "canary"
    BLUE_GREEN = "blueGreen"
    AB_TEST = "abTest"
    SHADOW = "shadow"


class Rollout(ApiModel):
    """How a new model or runtime rolls out: one strategy block, plus analysis, traffic and gates."""

    canary: Canary | None = None
    """Shift traffic in steps."""
    blue_green: BlueGreen | None = None
    """Full-size preview, then switch at once."""
    ab_test: AbTest | None = None
    """Route chosen requests or users to the candidate."""
    shadow: Shadow | None = None
    """Mirror traffic to the candidate; clients only see stable's answers."""
    backtest: Backtest | None = None
    """Score a labelled dataset with the candidate and the stable before the first step; a
    candidate shown worse is rolled back before it gets any traffic."""
    analysis: AnalysisSpec | None = None
    """Metrics the analysis steps measure."""
    traffic: Traffic = Field(default_factory=Traffic)
    """Traffic router; unset uses provider replicas."""
    webhooks: list[Webhook] = Field(default_factory=list, max_length=16, json_schema_extra=map_list("name"))
    """HTTP gates called during the rollout."""
    progress_deadline_seconds: int = Field(default=600, ge=30, le=24 * 3600)
    """Seconds a candidate may take to become ready (or a step to make progress) before it is rolled
    back. Default 600."""

    @rule(
        cel="(has(self.canary) ? 1 : 0) + (has(self.blueGreen) ? 1 : 0) + (has(self.abTest) ? 1 : 0)"
        " + (has(self.shadow) ? 1 : 0) == 1",
        field=None,
        message="set exactly one strategy block: canary, blueGreen, abTest or shadow",
    )
    def _one_strategy(self) -> bool:
        return count(*(b is not None for b in (self.canary, self.blue_green, self.ab_test, self.shadow))) == 1

    @rule(
        cel="has(self.analysis) || !((has(self.canary) && self.canary.steps.exists(s, has(s.analysis)))"
        " || (has(self.blueGreen) && has(self.blueGreen.prePromotionAnalysis))"
        " || (has(self.abTest) && has(self.abTest.analysis))"
        " || (has(self.shadow) && has(self.shadow.analysis)))",
        field="analysis",
        message="required when the strategy has an analysis step; add analysis.metrics or remove the step",
    )
    def _analysis_defined(self) -> bool:
        return self.analysis is not None or not self.uses_analysis

    @property
    def strategy(self) -> StrategyName:
        """The strategy block that is set (validation guarantees exactly one)."""
        if self.blue_green is not None:
            return StrategyName.BLUE_GREEN
        if self.ab_test is not None:
            return StrategyName.AB_TEST
        if self.shadow is not None:
            return StrategyName.SHADOW
        return StrategyName.CANARY

    @property
    def uses_analysis(self) -> bool:
        """Whether any step of the strategy runs an analysis."""
        return (
            (self.canary is not None and any(s.analysis is not None for s in self.canary.steps))
            or (self.blue_green is not None and self.blue_green.pre_promotion_analysis is not None)
            or (self.ab_test is not None and self.ab_test.analysis is not None)
            or (self.shadow is not None and self.shadow.analysis is not None)
        )


def _default_rollout() -> Rollout:
    return Rollout(canary=Canary(steps=[CanaryStep(set_weight=100)]))


class DegradedPolicy(StrEnum):
    """What happens when monitoring finds the stable model degraded."""

    ALERT = "alert"
    """Set `ModelHealthy=False`, send a Warning Event and the modelDegraded webhooks; keep serving."""
    ROLLBACK = "rollback"
    """The same, and return to the previous stable (kept since the last promotion) as a rollback
    with a history entry; the degraded version can be retried (`kubectl rollwise retry`)."""


MONITORED = frozenset(
    {
        BuiltinMetric.SUCCESS_RATE,
        BuiltinMetric.LATENCY_P99,
        BuiltinMetric.INPUT_DRIFT,
        BuiltinMetric.PREDICTION_DRIFT,
        BuiltinMetric.ACCURACY,
        BuiltinMetric.LOG_LOSS,
        BuiltinMetric.MEAN_ABSOLUTE_ERROR,
        BuiltinMetric.PARITY,
    }
)
"""The built-in checks monitoring can take on the stable track alone."""


class Monitoring(ApiModel):
    """Judge the stable model while no rollout runs: after promotion the model is watched on its
    own signals (input drift against its reference, accuracy from labels, success rate, latency)
    and, when it degrades, flagged or rolled back. docs/analysis.md has the rules' error rates."""

    metrics: list[MetricCheck] = Field(min_length=1, max_length=16, json_schema_extra=map_list("name"))
    """Checks taken every interval on the stable track's last `windowSeconds`: successRate,
    latencyP99, inputDrift and predictionDrift (against `spec.model.reference`; predictionDrift for a
    classifier's class shares), accuracy, logLoss, meanAbsoluteError, parity, or a custom query (its
    `{{track}}` is `stable`). Each is judged on its threshold alone: there is nothing to compare
    with."""
    interval_seconds: int = Field(default=300, ge=10, le=86_400)
    """Seconds between looks. Default 300."""
    window_seconds: int | None = Field(default=None, ge=10, le=7 * 86_400)
    """What each look counts: the last this many seconds. Unset: the interval, so looks never
    overlap and their errors are independent."""
    failure_limit: int = Field(default=1, ge=0, le=100)
    """Failing looks in a row tolerated; one more sets `ModelHealthy=False`. Default 1: two looks
    in a row must fail."""
    on_degraded: DegradedPolicy = DegradedPolicy.ALERT
    """What to do when degraded: alert (default) or rollback to the previous stable."""

    @rule(
        cel="self.metrics.all(m, !has(m.builtin) || m.builtin in ["
        + ", ".join(f"'{b}'" for b in sorted(MONITORED))
        + "])",
        field="metrics",
        message="monitoring takes successRate, latencyP99, inputDrift, predictionDrift, accuracy, "
        "logLoss, meanAbsoluteError, parity or a query (the shadow checks need a second track); "
        "remove the others",
    )
    def _monitored_builtins(self) -> bool:
        return all(m.builtin is None or m.builtin in MONITORED for m in self.metrics)

    @rule(
        cel="self.metrics.all(m, !has(m.compare))",
        field="metrics",
        message="monitoring has no second track to compare with; remove compare (set the threshold)",
    )
    def _nothing_to_compare(self) -> bool:
        return all(m.compare is None for m in self.metrics)

    @property
    def window(self) -> int:
        return self.window_seconds if self.window_seconds is not None else self.interval_seconds


class ModelDeploymentSpec(ApiModel):
    """Desired state: a model, how it runs, and how new versions roll out."""

    model: ModelSpec
    """The model to serve."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """How it runs; unset runs one pod of the default serving image."""
    rollout: Rollout = Field(default_factory=_default_rollout)
    """How a change of model or runtime rolls out; unset is a canary with one step (setWeight 100):
    the candidate replaces stable once ready, or is rolled back at the progress deadline."""
    monitoring: Monitoring | None = None
    """Keep judging the stable model after promotion; unset judges only during rollouts."""

    @rule(
        cel="has(self.runtime) && has(self.runtime.server) ? !has(self.model.uri) : has(self.model.uri)",
        field="model.uri",
        message="required with the bundled server (e.g. s3://bucket/iris.onnx with format onnx); with "
        "runtime.server your server loads its model, so remove it",
    )
    def _artifact_or_server(self) -> bool:
        return (self.runtime.server is None) == (self.model.uri is not None)

    @rule(
        cel="!(has(self.runtime) && has(self.runtime.server)) || !has(self.model.reference) || "
        "self.model.reference.uri.startsWith('pvc://')",
        field="model.reference.uri",
        message="with runtime.server the signals proxy reads the reference, and it cannot see your "
        "image's files; put it on a volume (pvc://claim/path)",
    )
    def _server_reference_on_volume(self) -> bool:
        if self.runtime.server is None or self.model.reference is None:
            return True
        return self.model.reference.uri.startswith("pvc://")

    @rule(
        cel="!has(self.rollout) || !has(self.rollout.backtest) || "
        "(has(self.model.uri) && has(self.model.sha256) && has(self.model.featureSchema))",
        field="rollout.backtest",
        message="scores the model's own artifact in a batch job; set model.uri, model.sha256 and "
        "model.featureSchema (a model served by runtime.server cannot be backtested)",
    )
    def _backtest_needs_an_artifact(self) -> bool:
        m = self.model
        return self.rollout.backtest is None or None not in (m.uri, m.sha256, m.feature_schema)


# ---------------------------------------------------------------------------------------------
# status


class Phase(StrEnum):
    """Where the ModelDeployment is in its life; `plan/machine.py` owns the transitions."""

    PENDING = "Pending"
    """No version has become ready yet."""
    HEALTHY = "Healthy"
    """The stable version serves all traffic; no rollout in progress."""
    PROGRESSING = "Progressing"
    """A candidate is being rolled out."""
    PAUSED = "Paused"
    """A rollout waits for a human (pause step, manual gate or inconclusive analysis)."""
    PROMOTING = "Promoting"
    """The candidate is becoming the new stable."""
    ROLLING_BACK = "RollingBack"
    """Traffic is returning to stable after a failure or abort."""
    ROLLED_BACK = "RolledBack"
    """The last candidate was rolled back; stable serves until the spec changes."""
    DEGRADED = "Degraded"
    """The stable version is not ready."""
    INVALID = "Invalid"
    """The spec cannot be acted on; the running version keeps serving."""


class ConditionType(StrEnum):
    """kstatus condition types, read as is by Argo CD and Flux."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    MODEL_HEALTHY = "ModelHealthy"
    """`spec.monitoring`'s verdict on the stable model: True, False (degraded, the message names the
    checks and values) or Unknown (no look yet). Absent without monitoring."""


class ConditionStatus(StrEnum):
    """Kubernetes condition status values."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """CamelCase reasons for conditions, Events and history entries."""

    AVAILABLE = "Available"
    WAITING_FOR_READY = "WaitingForReady"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ANALYSIS_RUNNING = "AnalysisRunning"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    WEBHOOK_FAILED = "WebhookFailed"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ABORTED = "Aborted"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    STABLE_UNAVAILABLE = "StableUnavailable"
    INVALID_SPEC = "InvalidSpec"
    MODEL_DEGRADED = "ModelDegraded"
    MODEL_HEALTHY = "ModelHealthy"
    MONITORING = "Monitoring"
    SCORING = "Scoring"
    """A ModelBatchJob's shards are running."""
    SUCCEEDED = "Succeeded"
    """A ModelBatchJob scored every shard."""
    SHARDS_FAILED = "ShardsFailed"
    """A ModelBatchJob's Job failed: some shards ran out of retries or failed permanently."""
    SHARD_FAILED = "ShardFailed"
    """One shard of a ModelBatchJob failed for good (its index is in the Event)."""
    SHARD_RETRIED = "ShardRetried"
    """One shard of a ModelBatchJob failed with a retryable error and runs again."""
    JOB_CREATED = "JobCreated"
    """A ModelBatchJob's Indexed Job was created."""
    """A ModelBatchJob's Job failed: some shards ran out of retries or failed permanently."""
    MODEL_NOT_RESOLVED = "ModelNotResolved"
    """A ModelBatchJob's `model.fromDeployment` names no ModelDeployment or no model on that track (yet)."""
    JOB_CONFLICT = "JobConflict"
    """A Job of the batch job's name exists and is not ours; it is never touched."""
    BACKTEST_RUNNING = "BacktestRunning"
    """The candidate and the stable score the labelled dataset; no traffic reaches the candidate."""
    BACKTEST_PASSED = "BacktestPassed"
    """The backtest showed the candidate no worse; the first step begins."""
    BACKTEST_FAILED = "BacktestFailed"
    """The backtest showed the candidate worse; rolled back before any traffic."""
    BACKTEST_INCONCLUSIVE = "BacktestInconclusive"
    """The backtest gave no verdict (its Job failed, it timed out, too few rows)."""


class Verdict(StrEnum):
    """Outcome of an analysis or of one metric in it."""

    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class Condition(StatusModel):
    """A kstatus condition (`Ready`, `Reconciling`, `Stalled`)."""

    type: ConditionType
    """Condition type."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Reason
    """CamelCase reason."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: AwareDatetime
    """When status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation this condition was computed from."""


class ComparisonResult(StatusModel):
    """The latest comparison of the candidate with stable: what a human needs to trust the verdict."""

    candidate: float
    """The candidate's value (successRate: percent of its requests answered; predictionDrift: the
    share, in percent, of the class whose share moved most)."""
    stable: float
    """Stable's value over the same time."""
    difference: float
    """Candidate worse than stable by this much: successRate, percentage points more failed;
    latencyP99, percentage points more requests slower (at the boundary the message names); drift,
    the PSI; a query, its value's difference."""
    lower: float | None = None
    """Lower bound of the difference at `confidence`, valid at every look (successRate, latencyP99)."""
    upper: float | None = None
    """Upper bound of the difference (successRate, latencyP99)."""
    evidence: float | None = None
    """Likelihood ratio that the shares differ (from stable's, or the reference's); 1 / (1 -
    confidence) or more is shown (predictionDrift, inputDrift)."""
    confidence: float
    """The confidence of the bounds."""
    candidate_samples: int = Field(ge=0)
    """Candidate requests (predictionDrift: predictions) since the analysis started."""
    stable_samples: int = Field(ge=0)
    """Stable requests (predictions) since the analysis started."""
    rule: str = Field(max_length=256)
    """The decision rule, e.g. `worse when lower > 0.5`."""


class MetricResult(StatusModel):
    """Running tally for one metric of the current analysis."""

    name: str = Field(max_length=63)
    """The metric's name from spec.rollout.analysis.metrics."""
    verdict: Verdict
    """Outcome so far."""
    successful: int = Field(default=0, ge=0)
    """Passing measurements."""
    failed: int = Field(default=0, ge=0)
    """Failed measurements (out of range or query error)."""
    inconclusive: int = Field(default=0, ge=0)
    """Measurements without enough data."""
    last_value: float | None = None
    """The latest measured value."""
    message: str = Field(default="", max_length=4096)
    """Why the last measurement failed or was inconclusive, or the comparison in one line."""
    comparison: ComparisonResult | None = None
    """The latest comparison with stable, when the check makes one."""
    not_worse: bool = False
    """The latest look showed the candidate no worse than stable by more than `worseBy`, at the
    comparison's confidence (successRate, latencyP99): what passes it when maxDurationSeconds is set."""

    @property
    def measurements(self) -> int:
        """Conclusive or inconclusive measurements taken (retaken thin looks not included)."""
        return self.successful + self.failed + self.inconclusive


class AnalysisStatus(StatusModel):
    """The analysis of the current (or last) step."""

    step: int | None = Field(default=None, ge=0)
    """Index of the step it belongs to, if any."""
    verdict: Verdict
    """Overall outcome so far."""
    started_at: AwareDatetime
    """When the first measurement was due."""
    metrics: list[MetricResult] = Field(default_factory=list, max_length=16)
    """Per-metric tallies."""
    deferred: int = Field(default=0, ge=0)
    """Looks retaken because the candidate had served fewer than minSampleCount requests (at most
    `count` of them; later thin looks are inconclusive): no data only delays a pass."""
    baked: int = Field(default=0, ge=0)
    """Looks taken during a bake that did not fail: shown in the tallies' messages, counted only
    once the bake is over."""


class MonitoringStatus(StatusModel):
    """Monitoring of the stable model (`spec.monitoring`)."""

    revision: str = Field(max_length=64)
    """The stable revision being watched; a new stable starts over."""
    started_at: AwareDatetime
    """When watching this revision began; the first look is one interval later."""
    looks: int = Field(default=0, ge=0)
    """Looks taken of this revision."""
    failing: int = Field(default=0, ge=0)
    """Failing looks in a row."""
    healthy: bool | None = None
    """The verdict: None until the first conclusive look."""
    last_look_at: AwareDatetime | None = None
    """When the latest look was taken."""
    message: str = Field(default="", max_length=4096)
    """The latest look in one line per failing (or, when healthy, every) check."""
    metrics: list[MetricResult] = Field(default_factory=list, max_length=16)
    """The latest look per check: verdict Successful, Failed or Inconclusive, value and message."""


class BacktestPhase(StrEnum):
    """Where a candidate's backtest is; `plan/backtest.py` derives it from its Job."""

    RUNNING = "Running"
    """The Job's shards are scoring."""
    PASSED = "Passed"
    """No metric showed the candidate worse: the first step may begin."""
    FAILED = "Failed"
    """A metric showed the candidate worse: rolled back before any traffic."""
    INCONCLUSIVE = "Inconclusive"
    """No verdict (the Job failed, timed out, too few rows): `inconclusivePolicy` applies."""


class BacktestResult(StatusModel):
    """One metric of a backtest, with the numbers behind its verdict."""

    name: BacktestMetricName
    """The metric."""
    verdict: Verdict
    """Successful, Failed or Inconclusive."""
    candidate: float | None = None
    """The candidate's value (accuracy and agreement in percent, errors in the label's unit)."""
    baseline: float | None = None
    """The stable's value (agreement has none)."""
    bound: float | None = None
    """The one-sided confidence bound the verdict compares with the tolerance: accuracy's upper
    bound of candidate minus stable (points), an error's lower bound of candidate minus stable,
    agreement's upper bound (percent)."""
    tolerance: float | None = None
    """`-worseBy` (accuracy), `worseBy` (errors) or `minimum` (agreement)."""
    segment: str | None = Field(default=None, max_length=256)
    """With bySegment: the segment value (`feature=value`) the numbers are of, the worst one."""
    message: str = Field(default="", max_length=1024)
    """The verdict in one line."""


class BacktestStatus(StatusModel):
    """The backtest of the current (or last) candidate."""

    revision: str = Field(max_length=64)
    """The candidate revision it scored."""
    phase: BacktestPhase
    """Running, Passed, Failed or Inconclusive."""
    job_name: str = Field(max_length=63)
    """The batch/v1 Indexed Job that scores it."""
    started_at: AwareDatetime
    """When the rollout asked for it; `timeoutSeconds` counts from here."""
    finished_at: AwareDatetime | None = None
    rows: int = Field(default=0, ge=0)
    """Labelled rows both models scored."""
    rows_rejected: int = Field(default=0, ge=0)
    """Rows a model's feature schema refused (never judged)."""
    rows_unlabelled: int = Field(default=0, ge=0)
    metrics: list[BacktestResult] = Field(default_factory=list, max_length=8)
    """One result per metric (per bySegment metric, the worst segment's)."""
    message: str = Field(default="", max_length=4096)
    """The outcome in one line."""


class HistoryEntry(StatusModel):
    """A finished rollout."""

    version: str = Field(max_length=63)
    """Model version of the candidate."""
    revision: str = Field(max_length=64)
    """Revision hash of the candidate."""
    outcome: Reason
    """Promoted, RolledBack, Aborted or Superseded."""
    message: str = Field(default="", max_length=4096)
    """Why it ended that way."""
    finished_at: AwareDatetime
    """When it ended."""
    backtest: str | None = Field(default=None, max_length=1024)
    """Its backtest's outcome, with the numbers, when it had one."""


class RevisionSpec(StatusModel):
    """What a track runs: enough to rebuild its pods exactly, even after an operator restart."""

    model: ModelSpec
    """The model the track serves."""
    runtime: RuntimeSpec
    """The runtime the track uses."""


class PassedGate(StatusModel):
    """A gate webhook that answered 2xx about the candidate. Kept in status so that an operator
    restarted mid-rollout does not ask again (a gate may have side effects: a ticket, a page)."""

    name: Name
    """The webhook's name from spec.rollout.webhooks."""
    type: WebhookType
    """preRollout, step or confirmPromotion."""
    revision: str = Field(max_length=64)
    """The candidate revision it answered about."""
    step: int | None = Field(default=None, ge=0, le=MAX_STEPS)
    """The step gate it opened (preRollout and step webhooks)."""


class ModelDeploymentStatus(StatusModel):
    """Observed state, rebuilt and written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation this status describes."""
    phase: Phase | None = None
    """Where the ModelDeployment is in its life."""
    strategy: StrategyName | None = None
    """The rollout strategy in effect (shown by kubectl get)."""
    message: str = Field(default="", max_length=32768)
    """A one-line summary for humans."""
    stable_version: str | None = Field(default=None, max_length=63)
    """Model version serving as stable."""
    stable_revision: str | None = Field(default=None, max_length=64)
    """Revision hash of the stable track."""
    stable: RevisionSpec | None = None
    """The model and runtime the stable track runs, kept so a rollout can rebuild it unchanged."""
    candidate_version: str | None = Field(default=None, max_length=63)
    """Model version being rolled out, if any."""
    candidate_revision: str | None = Field(default=None, max_length=64)
    """Revision hash of the candidate track."""
    current_step: int | None = Field(default=None, ge=0, le=MAX_STEPS)
    """Index of the rollout step in progress."""
    step_started_at: AwareDatetime | None = None
    """When the current step started; pauses and deadlines are measured from it."""
    weight: Percent = 0
    """Percent of traffic on the candidate."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, json_schema_extra=map_list("type")
    )
    """kstatus conditions: Ready, Reconciling, Stalled."""
    analysis: AnalysisStatus | None = None
    """The current (or last) analysis."""
    backtest: BacktestStatus | None = None
    """The current (or last) candidate's backtest, with `spec.rollout.backtest`."""
    history: list[HistoryEntry] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    """Finished rollouts, newest first, at most 10."""
    previous_stable: RevisionSpec | None = None
    """The stable before the last promotion: where `monitoring.onDegraded: rollback` returns to."""
    monitoring: MonitoringStatus | None = None
    """The stable model's monitoring, with `spec.monitoring`."""
    passed_gates: list[PassedGate] = Field(default_factory=list, max_length=64)
    """Gate webhooks that answered 2xx for the current candidate (see PassedGate)."""
    last_action: str | None = Field(default=None, max_length=256)
    """The `rollwise.dev/action` annotation value last applied (e.g. `promote:7`); an annotation
    equal to it is not applied again, so an action stays applied once however often we reconcile."""


# ---------------------------------------------------------------------------------------------
# the object


class OwnerReference(BaseModel):
    """An owner of this object (kept loose: only read, never written here)."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, extra="ignore"
    )

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads; others (managedFields, ...) are accepted and dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, extra="ignore", frozen=True
    )

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[OwnerReference] = Field(default_factory=list)


class ModelDeployment(ApiModel):
    """Serves a machine-learning model and rolls out new versions progressively, judged by metrics."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["rollwise.dev/v1alpha1"] = "rollwise.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)

    @rule(
        cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        field="metadata.name",
        message=f"must start with a letter, use only a-z, 0-9 and '-', and have at most {MAX_NAME_LENGTH} "
        "characters (children are named <name>-candidate); choose a shorter name",
    )
    def _name_fits_children(self) -> bool:
        name = self.metadata.name
        return (
            len(name) <= MAX_NAME_LENGTH and re.fullmatch(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name) is not None
        )

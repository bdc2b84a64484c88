"""What users see when a ModelDeployment is wrong: the exact lines, from pydantic and from CEL.

Each row breaks one thing in an otherwise valid manifest. `describe_errors` must give exactly the
expected lines; for cross-field rules the generated CRD's CEL rules (evaluated by cel-python) must
reject the same manifest with the same messages, so the API server and the operator agree.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rollwise.api.v1alpha1 import ModelDeployment, StrategyName
from rollwise_contract.base import describe_errors

from tests.unit.admission import cel_rejections
from tests.unit.manifests import SHA, base, edit

RULE = "the CEL rules reject it with the same messages"
SCHEMA = "the OpenAPI schema (type, bound, enum, pattern, required) rejects it before CEL runs"
NOT_CEL = "no CEL rule applies (the API server checks it natively)"

STEPS_MSG = (
    "spec.rollout.canary.steps: setWeight values must strictly increase within 1..100; "
    "reorder or fix the weights"
)
SHA_MSG = (
    "spec.model.sha256: required for format sklearn and python, whose loading runs code (unpickling, "
    "executing a .py file); add the artifact's digest (sha256sum <file>)"
)
URI_MSG = "spec.model.uri: unsupported location; use file:///path, pvc://claim/path, http(s)://host/path or s3://bucket/key"

B = base()
FORMAT_MSG = (
    "spec.model.format: set uri and format together: the bundled server needs both to load the "
    "artifact (e.g. format: sklearn); with runtime.server set neither"
)
ARTIFACT_MSG = (
    "spec.model.uri: required with the bundled server (e.g. s3://bucket/iris.onnx with format onnx); "
    "with runtime.server your server loads its model, so remove it"
)
SERVER = {"image": "registry.example.com/team/mlserver:1.7.1", "protocol": "oip-rest"}
NO_ARTIFACT = edit(B, spec__model__format=None, spec__model__uri=None, spec__model__sha256=None)
DIRECTORY_MSG = (
    "spec.model.sha256: required for a directory or archive artifact (a uri ending in /, .tar.gz, "
    ".tgz or .zip): pin the digest of its manifest (sha256sum SHA256SUMS)"
)

BACKTEST = {"dataset": {"uri": "s3://bucket/history/"}, "labelColumn": "y", "metrics": [{"name": "accuracy"}]}
SCHEMA_DOC = {"features": [{"name": "x"}]}
WITH_SCHEMA = edit(B, spec__model__featureSchema=SCHEMA_DOC)

BAD = [
    pytest.param(
        edit(B, spec__rollout__backtest=BACKTEST),
        [
            "spec.rollout.backtest: scores the model's own artifact in a batch job; set model.uri, "
            "model.sha256 and model.featureSchema (a model served by runtime.server cannot be backtested)"
        ],
        RULE,
        id="a backtest without the model's feature schema names the fields to set",
    ),
    pytest.param(
        edit(WITH_SCHEMA, spec__rollout__backtest={**BACKTEST, "metrics": [{"name": "agreement"}]}),
        [
            "spec.rollout.backtest.metrics[0].minimum: required for agreement; set the smallest share "
            "of rows both models must agree on, e.g. 95"
        ],
        RULE,
        id="agreement without a minimum says which value to set",
    ),
    pytest.param(
        edit(WITH_SCHEMA, spec__rollout__backtest={**BACKTEST, "metrics": [{"name": "mae"}]}),
        [
            "spec.rollout.backtest.metrics[0].worseBy: required for mae and rmse (in the label's unit, "
            "e.g. 0.1); there is no default"
        ],
        RULE,
        id="an error metric without worseBy has no default to fall back on",
    ),
    pytest.param(
        edit(
            WITH_SCHEMA,
            spec__rollout__backtest={**BACKTEST, "metrics": [{"name": "accuracy", "minimum": 90}]},
        ),
        [
            "spec.rollout.backtest.metrics[0].minimum: only agreement takes a minimum; use worseBy for "
            "accuracy, mae and rmse"
        ],
        RULE,
        id="a minimum on accuracy points to worseBy",
    ),
    pytest.param(
        edit(B, spec__rollout__canary__steps=[{"setWeight": 50}, {"setWeight": 20}]),
        [STEPS_MSG],
        RULE,
        id="canary weights that go down are rejected with the order fix",
    ),
    pytest.param(
        edit(B, spec__rollout__canary__steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 20}]),
        [STEPS_MSG],
        RULE,
        id="a repeated canary weight is rejected: weights must strictly increase",
    ),
    pytest.param(
        edit(B, spec__rollout__canary__steps__0__setWeight=120),
        ["spec.rollout.canary.steps[0].setWeight: 120 is invalid: Input should be less than or equal to 100"],
        SCHEMA,
        id="a weight above 100 names the step and the bound",
    ),
    pytest.param(
        edit(B, spec__model__sha256=None),
        [SHA_MSG],
        RULE,
        id="an sklearn model without a digest is rejected because pickle runs code",
    ),
    pytest.param(
        edit(B, spec__model__sha256=None, spec__model__format="python"),
        [SHA_MSG],
        RULE,
        id="a python model without a digest is rejected too",
    ),
    pytest.param(
        edit(B, spec__model__sha256="abc"),
        ["spec.model.sha256: 'abc' is invalid: String should have at least 64 characters"],
        SCHEMA,
        id="a short digest is rejected by its length",
    ),
    pytest.param(
        edit(B, spec__model__format="pytorch"),
        [
            "spec.model.format: 'pytorch' is invalid: "
            "Input should be 'sklearn', 'onnx', 'python', 'xgboost' or 'lightgbm'"
        ],
        SCHEMA,
        id="an unknown model format lists the accepted ones",
    ),
    pytest.param(
        edit(B, spec__model__uri="ftp://models/iris.joblib"),
        [URI_MSG],
        RULE,
        id="an unsupported artifact scheme lists the supported ones",
    ),
    pytest.param(
        edit(B, spec__model__reference={"uri": "https://x/ref.json"}),
        ["spec.model.reference.uri: must be a local file; use file:///path or pvc://claim/path"],
        RULE,
        id="a remote reference distribution is rejected: the server reads it from disk",
    ),
    pytest.param(
        edit(B, spec__model__format="onnx", spec__model__sha256=None, spec__model__uri="s3://models/iris/"),
        [DIRECTORY_MSG],
        RULE,
        id="a directory artifact without a digest is rejected",
    ),
    pytest.param(
        edit(B, spec__model__format="onnx", spec__model__sha256=None, spec__model__uri="https://h/m.tar.gz"),
        [DIRECTORY_MSG],
        RULE,
        id="an archive artifact without a digest is rejected",
    ),
    pytest.param(
        edit(B, spec__model__fallback={"uri": "file:///models/fallback.joblib"}),
        [
            "spec.model.fallback.sha256: required when loading the fallback runs code (format sklearn or "
            "python); add the fallback artifact's digest (sha256sum <file>)"
        ],
        RULE,
        id="a pickle fallback without a digest is rejected",
    ),
    pytest.param(
        edit(
            B,
            spec__model__format="xgboost",
            spec__model__sha256=None,
            spec__model__fallback={"uri": "file:///models/fallback.py", "format": "python"},
        ),
        [
            "spec.model.fallback.sha256: required when loading the fallback runs code (format sklearn or "
            "python); add the fallback artifact's digest (sha256sum <file>)"
        ],
        RULE,
        id="a python fallback of an xgboost model still needs a digest",
    ),
    pytest.param(
        edit(
            B,
            spec__model__sha256=None,
            spec__model__fallback={"uri": "s3://bucket/fallback.txt", "format": "lightgbm"},
        ),
        [SHA_MSG],
        RULE,
        id="an sklearn model with a lightgbm fallback still needs its own digest",
    ),
    pytest.param(
        edit(B, spec__model__featureSchema={"features": [{"name": "colour", "type": "category"}]}),
        [
            "spec.model.featureSchema.features[0].values: required for type category and not allowed "
            "otherwise; list the category's values or change the type"
        ],
        RULE,
        id="a category feature without values is rejected",
    ),
    pytest.param(
        edit(B, spec__model__featureSchema={"features": [{"name": "x", "min": 5, "max": 1}]}),
        ["spec.model.featureSchema.features[0].min: must not exceed max; swap or fix the bounds"],
        RULE,
        id="a feature range whose min exceeds its max is rejected",
    ),
    pytest.param(
        edit(B, spec__model__featureSchema={"features": [{"name": "b", "type": "bool", "max": 1}]}),
        [
            "spec.model.featureSchema.features[0].type: min and max apply to float and int features "
            "only; remove them or change the type"
        ],
        RULE,
        id="a range on a bool feature is rejected",
    ),
    pytest.param(
        edit(B, spec__model__featureSchema={"features": [{"name": "x"}, {"name": "x"}]}),
        ["spec.model.featureSchema.features: duplicate name 'x'; each name may appear once"],
        NOT_CEL,
        id="a repeated feature name is rejected",
    ),
    pytest.param(
        edit(B, spec__rollout={"analysis": B["spec"]["rollout"]["analysis"]}),
        ["spec.rollout: set exactly one strategy block: canary, blueGreen, abTest or shadow"],
        RULE,
        id="a rollout without a strategy block asks for exactly one",
    ),
    pytest.param(
        edit(B, spec__rollout__shadow={}),
        ["spec.rollout: set exactly one strategy block: canary, blueGreen, abTest or shadow"],
        RULE,
        id="two strategy blocks are rejected",
    ),
    pytest.param(
        edit(B, spec__runtime={"replicas": 2, "autoscaling": {"maxReplicas": 4, "cpuUtilization": 70}}),
        [
            "spec.runtime.replicas: set replicas or autoscaling, not both; "
            "remove replicas to let the HPA scale",
            "spec.runtime.resources.requests.cpu: required when autoscaling.cpuUtilization is set "
            "(utilization is measured against the request); add a CPU request",
        ],
        RULE,
        id="replicas with autoscaling is rejected, and a CPU target without a CPU request too",
    ),
    pytest.param(
        edit(B, spec__runtime={"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "metric": _m}})
        if (_m := {"name": "rps", "targetAverageValue": 10})
        else {},
        [
            "spec.runtime.autoscaling.minReplicas: must not exceed maxReplicas; "
            "lower minReplicas or raise maxReplicas"
        ],
        RULE,
        id="autoscaling with min above max is rejected",
    ),
    pytest.param(
        edit(B, spec__runtime={"autoscaling": {"maxReplicas": 3}}),
        ["spec.runtime.autoscaling: set cpuUtilization, metric, or both, so the HPA has a target"],
        RULE,
        id="autoscaling without a target is rejected",
    ),
    pytest.param(
        edit(B, spec__rollout__canary__steps=[{"setWeight": 10, "pause": {}}]),
        [
            "spec.rollout.canary.steps[0]: each step needs exactly one of setWeight, pause, analysis or "
            "bake; split it into separate steps"
        ],
        RULE,
        id="a canary step with two actions is rejected",
    ),
    pytest.param(
        edit(B, spec__rollout__analysis=None),
        [
            "spec.rollout.analysis: required when the strategy has an analysis step; "
            "add analysis.metrics or remove the step"
        ],
        RULE,
        id="an analysis step without analysis metrics is rejected",
    ),
    pytest.param(
        edit(B, spec__rollout__traffic={"provider": "gatewayAPI"}),
        [
            "spec.rollout.traffic.gatewayAPI: set it exactly when provider is gatewayAPI; add "
            "gatewayAPI.httpRoute or change the provider"
        ],
        RULE,
        id="the gatewayAPI provider without its HTTPRoute is rejected",
    ),
    pytest.param(
        edit(B, spec__rollout__traffic={"istio": {"virtualService": "iris"}}),
        [
            "spec.rollout.traffic.istio: set it exactly when provider is istio; add istio.virtualService "
            "or change the provider"
        ],
        RULE,
        id="an istio block with the default replicas provider is rejected",
    ),
    pytest.param(
        edit(B, spec__rollout__traffic={"provider": "linkerd"}),
        [
            "spec.rollout.traffic.provider: 'linkerd' is invalid: Input should be 'replicas', 'gatewayAPI', "
            "'istio' or 'nginx'"
        ],
        SCHEMA,
        id="an unknown traffic provider is an error, never a quiet fallback",
    ),
    pytest.param(
        edit(
            B,
            spec__runtime__env=[
                {"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ],
        ),
        ["spec.runtime.env[0]: set value or valueFrom, not both"],
        RULE,
        id="an env var with both value and valueFrom is rejected",
    ),
    pytest.param(
        edit(B, spec__runtime__env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        ["spec.runtime.env: duplicate name 'A'; each name may appear once"],
        NOT_CEL,
        id="a repeated env var name is rejected",
    ),
    pytest.param(
        edit(B, spec__runtime__resources={"requests": {"memory": "1Gx"}}),
        [
            "spec.runtime.resources.requests.memory: '1Gx' is invalid: Value error, not a Kubernetes "
            "quantity; write e.g. 500m, 2, 1Gi or 512Mi"
        ],
        SCHEMA,
        id="a malformed memory quantity shows accepted forms",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout__analysis__metrics=[
                {"name": "m", "builtin": "successRate", "query": "up", "threshold": {}, "feature": "x"}
            ],
        ),
        ["spec.rollout.analysis.metrics[0].threshold: set min, max, or both"],
        # pydantic runs a model's rules only once its fields are valid; the API server runs them all.
        [
            "spec.rollout.analysis.metrics[].threshold: set min, max, or both",
            "spec.rollout.analysis.metrics[]: set exactly one of builtin or query",
            "spec.rollout.analysis.metrics[].feature: applies to builtin inputDrift only; remove it",
        ],
        id="a metric with an empty threshold is rejected (pydantic stops there, CEL lists all three)",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout__analysis__metrics=[
                {
                    "name": "m",
                    "builtin": "successRate",
                    "query": "up",
                    "threshold": {"min": 1},
                    "feature": "x",
                }
            ],
        ),
        [
            "spec.rollout.analysis.metrics[0]: set exactly one of builtin or query",
            "spec.rollout.analysis.metrics[0].feature: applies to builtin inputDrift only; remove it",
        ],
        RULE,
        id="a metric with both builtin and query, and a stray feature, reports both problems",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout={
                "abTest": {"match": [{"header": {"name": "x-v", "value": "b", "regex": "b.*"}}]},
            },
        ),
        ["spec.rollout.abTest.match[0].header: set exactly one of value or regex"],
        RULE,
        id="a header match with both value and regex is rejected",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout={
                "abTest": {
                    "match": [{"cookie": {"name": "v", "value": "b"}}],
                    "userHash": {"header": "u", "weight": 5},
                }
            },
        ),
        ["spec.rollout.abTest: set exactly one of match or userHash"],
        RULE,
        id="an A/B test with both match and userHash is rejected",
    ),
    pytest.param(
        edit(
            B,
            spec__runtime="four pods on the GPU nodes, please, with plenty of memory "
            "and a fast local disk for caching",
        ),
        [
            "spec.runtime: 'four pods on the GPU nodes, please, with plenty of memory and a fast local d... "
            "is invalid: Input should be a valid dictionary or instance of RuntimeSpec"
        ],
        SCHEMA,
        id="a long wrong value is shortened in the message",
    ),
    pytest.param(
        edit(B, spec__model__formt="onnx"),
        ["spec.model.formt: unknown field; remove it or fix its spelling (see docs/reference.md)"],
        SCHEMA,
        id="a misspelt field is named as unknown",
    ),
    pytest.param(
        edit(B, spec__model__format=None, spec__model__sha256=SHA),
        [FORMAT_MSG],
        RULE,
        id="a uri without its format is named",
    ),
    pytest.param(
        edit(B, spec__model__format=None, spec__model__uri=None, spec__model__sha256=None),
        [ARTIFACT_MSG],
        RULE,
        id="the bundled server without an artifact is told to add one or bring a server",
    ),
    pytest.param(
        edit(B, spec__runtime={"server": SERVER}),
        [ARTIFACT_MSG],
        RULE,
        id="an artifact beside runtime.server is refused: that server loads its own model",
    ),
    pytest.param(
        edit(NO_ARTIFACT, spec__runtime={"server": {**SERVER, "protocol": "http-json"}}),
        [
            "spec.runtime.server.predictionPath: required with protocol http-json and only there; "
            "e.g. $.predictions"
        ],
        RULE,
        id="an http-json server without its prediction path",
    ),
    pytest.param(
        edit(NO_ARTIFACT, spec__runtime={"server": {**SERVER, "port": 8080, "grpcPort": 8081}}),
        [
            "spec.runtime.server.port: 8080 and 8081 are the signals proxy's; listen on another "
            "port, e.g. 9000",
            "spec.runtime.server.grpcPort: only with protocol oip-rest, on a port other than port, "
            "8080 and 8081 (e.g. 9001)",
        ],
        RULE,
        id="a server on the proxy's ports",
    ),
    pytest.param(
        edit(NO_ARTIFACT, spec__runtime={"server": {**SERVER, "protocol": "openai", "grpcPort": 9001}}),
        [
            "spec.runtime.server.grpcPort: only with protocol oip-rest, on a port other than port, "
            "8080 and 8081 (e.g. 9001)",
        ],
        RULE,
        id="a gRPC port on an openai server",
    ),
    pytest.param(
        edit(
            NO_ARTIFACT,
            spec__runtime={"server": SERVER},
            spec__model__reference={"uri": "file:///models/reference.json"},
        ),
        [
            "spec.model.reference.uri: with runtime.server the signals proxy reads the reference, "
            "and it cannot see your image's files; put it on a volume (pvc://claim/path)"
        ],
        RULE,
        id="a reference inside the user's image, which the proxy cannot read",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout__analysis__metrics=[
                {"name": "q", "query": "sum(x{track='{{track}}'})", "threshold": {"max": 1}, "compare": {}}
            ],
        ),
        [
            "spec.rollout.analysis.metrics[0].compare.worseBy: a query that compares needs the difference "
            "that matters, in the query's unit; set it"
        ],
        RULE,
        id="a query that compares without a tolerance is rejected asking for worseBy",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout__analysis={
                "metrics": [{"name": "s", "builtin": "successRate", "threshold": {"min": 99}}],
                "intervalSeconds": 60,
                "maxDurationSeconds": 30,
            },
        ),
        [
            "spec.rollout.analysis.maxDurationSeconds: must be at least intervalSeconds (one look); raise it "
            "or lower intervalSeconds"
        ],
        RULE,
        id="a maxDurationSeconds shorter than one look is rejected",
    ),
    pytest.param(
        edit(
            B,
            spec__rollout__analysis__metrics=[
                {
                    "name": "s",
                    "builtin": "successRate",
                    "threshold": {"min": 99},
                    "compare": {"confidence": 1.5},
                }
            ],
        ),
        [
            "spec.rollout.analysis.metrics[0].compare.confidence: 1.5 is invalid: "
            "Input should be less than or equal to 0.9999"
        ],
        SCHEMA,
        id="a confidence above 0.9999 names the field and the bound",
    ),
    pytest.param(
        edit(B, metadata__name="a-model-deployment-name-that-is-far-too-long-for-its-children"),
        [
            "metadata.name: must start with a letter, use only a-z, 0-9 and '-', and have at most 53 "
            "characters (children are named <name>-candidate); choose a shorter name"
        ],
        RULE,
        id="a name too long for the candidate Service is rejected",
    ),
]


@pytest.mark.parametrize(("manifest", "lines", "cel"), BAD)
def test_bad_manifest_is_rejected_with_these_lines(
    manifest: dict[str, Any], lines: list[str], cel: str | list[str]
) -> None:
    with pytest.raises(ValidationError) as err:
        ModelDeployment.model_validate(manifest)
    assert describe_errors(err.value) == lines
    if isinstance(cel, list):
        assert sorted(cel_rejections(manifest)) == sorted(cel)
    elif cel == RULE:
        assert sorted(cel_rejections(manifest)) == sorted(re.sub(r"\[\d+\]", "[]", line) for line in lines)
    elif cel == NOT_CEL:
        assert cel_rejections(manifest) == []


GOOD = [
    pytest.param(B, id="the base manifest"),
    pytest.param(
        edit(
            WITH_SCHEMA,
            spec__rollout__backtest={
                **BACKTEST,
                "metrics": [
                    {"name": "accuracy", "worseBy": 2, "bySegment": True},
                    {"name": "agreement", "minimum": 90},
                ],
            },
        ),
        id="a backtest with accuracy per segment and agreement",
    ),
    pytest.param(
        edit(B, spec__model__format="onnx", spec__model__sha256=None),
        id="an onnx model needs no digest (loading it runs no code)",
    ),
    pytest.param(
        edit(B, spec__model__fallback={"uri": "s3://bucket/fallback.onnx", "format": "onnx"}),
        id="an onnx fallback of an sklearn model needs no digest",
    ),
    pytest.param(
        edit(B, spec__model__format="xgboost", spec__model__sha256=None),
        id="an xgboost model needs no digest (JSON or UBJ: loading it runs no code)",
    ),
    pytest.param(
        edit(B, spec__model__format="lightgbm", spec__model__sha256=None),
        id="a lightgbm model needs no digest (a text model: loading it runs no code)",
    ),
    pytest.param(
        edit(
            B,
            spec__model__format="lightgbm",
            spec__model__sha256=None,
            spec__model__fallback={"uri": "s3://bucket/fallback.ubj", "format": "xgboost"},
        ),
        id="an xgboost fallback of a lightgbm model needs no digest either",
    ),
    pytest.param(
        edit(
            B,
            spec__model__format="xgboost",
            spec__model__sha256=None,
            spec__model__fallback={"uri": "s3://bucket/fallback.json"},
        ),
        id="a fallback inheriting the xgboost format needs no digest",
    ),
    pytest.param(
        edit(B, spec__rollout__canary__steps=[{"pause": {}}, {"setWeight": 1}, {"setWeight": 100}]),
        id="weights from 1 to 100 with a pause first",
    ),
    pytest.param(
        edit(
            B,
            spec__runtime={
                "autoscaling": {"maxReplicas": 3, "cpuUtilization": 60},
                "resources": {"requests": {"cpu": 1}},
            },
        ),
        id="autoscaling on CPU with a CPU request written as a YAML integer",
    ),
    pytest.param(
        edit(B, spec__rollout={"shadow": {}}),
        id="a shadow rollout that waits for a manual promote",
    ),
    pytest.param(
        edit(B, spec__rollout=None, spec__runtime=None),
        id="only a model: default runtime and rollout",
    ),
    pytest.param(
        edit(NO_ARTIFACT, spec__runtime={"server": {**SERVER, "grpcPort": 9001, "args": ["--x"]}}),
        id="an OIP server of the user's with its gRPC port, and no artifact",
    ),
    pytest.param(
        edit(
            NO_ARTIFACT,
            spec__runtime={
                "server": {
                    **SERVER,
                    "protocol": "http-json",
                    "predictionPath": "$.predictions",
                    "featuresPath": "$.instances",
                }
            },
            spec__model__reference={"uri": "pvc://refs/iris.json"},
        ),
        id="a JSON server of the user's with its paths, and a reference on a volume",
    ),
]


@pytest.mark.parametrize("manifest", GOOD)
def test_good_manifest_passes_pydantic_and_cel(manifest: dict[str, Any]) -> None:
    ModelDeployment.model_validate(manifest)
    assert cel_rejections(manifest) == []


def test_a_live_api_object_body_is_accepted() -> None:
    body = edit(
        B,
        metadata__uid="8d4b6c1e-0000-4000-8000-000000000001",
        metadata__resourceVersion="4242",
        metadata__generation=3,
        metadata__creationTimestamp="2026-11-25T12:00:00Z",
        metadata__managedFields=[{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}],
        metadata__finalizers=["kopf.zalando.org/KopfFinalizerMarker"],
        metadata__annotations={"kopf.zalando.org/last-handled-configuration": "{}"},
        status={"observedGeneration": 2, "phase": "Healthy", "weight": 0, "kopf": {"progress": {}}},
    )
    md = ModelDeployment.model_validate(body)
    assert (md.metadata.uid, md.metadata.generation, md.status.observed_generation) == (
        "8d4b6c1e-0000-4000-8000-000000000001",
        3,
        2,
    )


def test_defaults_fill_in_the_replacing_canary_and_the_replicas_router() -> None:
    md = ModelDeployment.model_validate(edit(B, spec__rollout=None))
    assert md.spec.rollout.strategy is StrategyName.CANARY
    assert [s.set_weight for s in md.spec.rollout.canary.steps] == [100]
    assert md.spec.rollout.traffic.provider == "replicas"
    assert md.spec.runtime.replica_count == 2


step = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(1, 100)),
    st.just({"pause": {}}),
    st.just({"analysis": {}}),
)


@settings(max_examples=60, deadline=None)  # cel-python interprets the rule: ~20 ms an example
@given(st.lists(step, min_size=1, max_size=32))
def test_the_weight_rule_agrees_between_cel_and_pydantic(steps: list[dict[str, Any]]) -> None:
    manifest = edit(B, spec__rollout__canary__steps=steps)
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    increasing = all(a < b for a, b in itertools.pairwise(weights))
    cel_ok = STEPS_MSG not in cel_rejections(manifest)
    try:
        ModelDeployment.model_validate(manifest)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    assert cel_ok == pydantic_ok == increasing

"""The children a ModelDeployment owns in the steady state: exact fields, and determinism."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from rollwise.api.v1alpha1 import ModelDeployment, RevisionSpec
from rollwise.plan import revision as revisions
from rollwise.plan.desired import desired_deployment, desired_services, hop_token
from rollwise.plan.manifest import Manifest
from rollwise.plan.names import Track
from rollwise.plan.revision import revision_from_spec, revision_of

from tests.unit.manifests import SHA, base, edit
from tests.unit.rollout_world import steady_children

UID = "0b5c1a7e-1111-4222-8333-444455556666"
IMAGE = "rollwise-serving:test"


def md_of(doc: dict[str, Any]) -> ModelDeployment:
    return ModelDeployment.model_validate(doc)


def children(doc: dict[str, Any]) -> dict[str, Manifest]:
    return {
        f"{m['kind']}/{m['metadata']['name']}": m
        for m in steady_children(md_of(doc), owner_uid=UID, serving_image=IMAGE)
    }


def pod_spec(doc: dict[str, Any]) -> Any:
    return children(doc)["Deployment/iris-stable"]["spec"]["template"]["spec"]


def container(doc: dict[str, Any]) -> Any:
    return pod_spec(doc)["containers"][0]


B = base()


def test_steady_state_is_one_stable_deployment_and_the_service_clients_call() -> None:
    """No track Services at rest: nothing routes to them until a candidate exists."""
    assert list(children(B)) == ["Deployment/iris-stable", "Service/iris"]


def test_every_child_is_owned_labelled_and_namespaced() -> None:
    for name, m in children(B).items():
        meta: Any = m["metadata"]
        assert meta["namespace"] == "ml", name
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "rollwise.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "iris",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], name
        assert {
            k: meta["labels"][k]
            for k in (
                "app.kubernetes.io/name",
                "app.kubernetes.io/managed-by",
                "rollwise.dev/model-deployment",
            )
        } == {
            "app.kubernetes.io/name": "iris",
            "app.kubernetes.io/managed-by": "rollwise",
            "rollwise.dev/model-deployment": "iris",
        }, name


def test_the_stable_deployment_selects_and_labels_its_track() -> None:
    d: Any = children(B)["Deployment/iris-stable"]
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {
        "matchLabels": {"rollwise.dev/model-deployment": "iris", "rollwise.dev/track": "stable"}
    }
    assert d["spec"]["template"]["metadata"]["labels"]["rollwise.dev/track"] == "stable"
    assert d["metadata"]["labels"]["rollwise.dev/track"] == "stable"


def test_the_container_runs_rollwise_serve_with_the_model_arguments() -> None:
    c = container(B)
    assert (c["image"], c["command"]) == (IMAGE, ["rollwise-serve"])
    assert c["args"] == [
        "--model-uri", "http://models.example/iris.joblib",
        "--sha256", SHA,
        "--format", "sklearn",
        "--name", "iris",
        "--version", "1.0.0",
        "--track", "stable",
        "--port", "8080",
        "--grpc-port", "8081",
    ]  # fmt: skip
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # the probes stay on HTTP: a gRPC port that fails to bind stops the server at start-up anyway
    probes = [c[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert {(probe["port"], probe["scheme"]) for probe in probes} == {("http", "HTTP")}


def test_the_image_from_the_spec_wins_over_the_operator_default() -> None:
    assert (
        container(edit(B, spec__runtime__image="registry.local/custom:1"))["image"]
        == "registry.local/custom:1"
    )


def test_optional_model_arguments_are_passed_when_set() -> None:
    doc = edit(
        B,
        spec__model__featureSchema={
            "features": [{"name": "x", "min": 0}, {"name": "c", "type": "category", "values": ["a", "b"]}]
        },
        spec__model__reference={"uri": "pvc://data/iris/reference.json"},
        spec__model__fallback={"uri": "s3://bucket/fallback.onnx", "format": "onnx"},
    )
    args = container(doc)["args"]
    assert args[args.index("--feature-schema") + 1] == (
        '{"features":[{"min":0.0,"name":"x","required":true,"type":"float"},'
        '{"name":"c","required":true,"type":"category","values":["a","b"]}]}'
    )
    assert args[args.index("--reference") + 1] == "/mnt/pvc/data/iris/reference.json"
    assert args[-4:] == ["--fallback-uri", "s3://bucket/fallback.onnx", "--fallback-format", "onnx"]


def test_explanations_are_passed_with_their_bounds_only_when_asked_for() -> None:
    assert "--explain" not in container(edit(B))["args"]
    args = container(edit(B, spec__model__explain={"maxRows": 4, "baseline": [5.8, 3.0, 4.35, 1.3]}))["args"]
    assert args[args.index("--explain") :] == [
        "--explain",
        "true",
        "--explain-max-rows",
        "4",
        "--explain-max-evaluations",
        "65536",
        "--explain-timeout-ms",
        "5000",
        "--explain-baseline",
        "[5.8, 3.0, 4.35, 1.3]",
    ]
    with pytest.raises(ValidationError, match=r"max_rows|maxRows"):
        md_of(edit(B, spec__model__explain={"maxRows": 0}))


def test_a_pvc_artifact_is_mounted_read_only_and_passed_as_a_file_uri() -> None:
    doc = edit(
        B,
        spec__model__uri="pvc://models/iris/1.0.0/model.joblib",
        spec__model__reference={"uri": "pvc://models/ref.json"},
    )
    spec = pod_spec(doc)
    assert spec["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
        {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "pvc-models", "mountPath": "/mnt/pvc/models", "readOnly": True},
    ]
    assert spec["containers"][0]["args"][1] == "file:///mnt/pvc/models/iris/1.0.0/model.joblib"


def test_pods_meet_the_restricted_pod_security_profile() -> None:
    spec = pod_spec(B)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_pods_opt_in_to_prometheus_scraping() -> None:
    annotations: Any = children(B)["Deployment/iris-stable"]["spec"]["template"]["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            {"requests": {"cpu": "250m", "memory": "256Mi"}},
            {"requests": {"cpu": "250m", "memory": "256Mi"}},
            id="requests as declared",
        ),
        pytest.param(
            {"limits": {"memory": "1Gi"}, "gpu": 1},
            {"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}},
            id="a GPU becomes the nvidia.com/gpu limit",
        ),
        pytest.param(
            {"requests": {"cpu": 2}},
            {"requests": {"cpu": "2"}},
            id="a YAML integer CPU is kept as a quantity string",
        ),
    ],
)
def test_resources_are_as_declared(resources: dict[str, Any], expected: dict[str, Any]) -> None:
    assert container(edit(B, spec__runtime__resources=resources))["resources"] == expected


def test_no_resources_declared_means_no_resources_field() -> None:
    assert "resources" not in container(B)


def test_runtime_placement_and_env_are_copied() -> None:
    doc = edit(
        B,
        spec__runtime__nodeSelector={"zone": "b", "gpu": "yes"},
        spec__runtime__tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        spec__runtime__env=[
            {"name": "A", "value": "1"},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
    )
    spec = pod_spec(doc)
    assert list(spec["nodeSelector"].items()) == [("gpu", "yes"), ("zone", "b")]
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "ROLLWISE_HOP_TOKEN", "value": hop_token(UID)},
    ]


def test_the_hop_token_differs_per_model_deployment_and_never_is_the_uid() -> None:
    assert hop_token("a") != hop_token("b")
    assert hop_token("a") == hop_token("a")
    assert "a" not in {hop_token("a")}
    assert len(hop_token("a")) == 64


def test_an_ephemeral_storage_limit_sizes_the_scratch_volume_and_is_requested() -> None:
    doc = edit(B, spec__runtime__resources={"limits": {"ephemeralStorage": "3Gi"}})
    spec = pod_spec(doc)
    assert spec["volumes"][0] == {"name": "tmp", "emptyDir": {"sizeLimit": "3Gi"}}
    assert spec["containers"][0]["resources"] == {"limits": {"ephemeral-storage": "3Gi"}}


@pytest.mark.parametrize("name", ["POD_NAMESPACE", "ROLLWISE_HOP_TOKEN"])
def test_env_the_operator_sets_is_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValidationError, match="is set by the operator"):
        ModelDeployment.model_validate(edit(B, spec__runtime__env=[{"name": name, "value": "x"}]))


AUTOSCALED = edit(
    B,
    spec__runtime={
        "resources": {"requests": {"cpu": "100m"}},
        "autoscaling": {
            "minReplicas": 2,
            "maxReplicas": 5,
            "cpuUtilization": 70,
            "metric": {"name": "rps", "targetAverageValue": "20"},
        },
    },
)


def test_with_autoscaling_the_deployment_omits_replicas_and_an_hpa_owns_them() -> None:
    kids = children(AUTOSCALED)
    assert "replicas" not in kids["Deployment/iris-stable"]["spec"]
    hpa: Any = kids["HorizontalPodAutoscaler/iris-stable"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-stable"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
            },
            {
                "type": "Pods",
                "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "20"}},
            },
        ],
    }


def test_without_autoscaling_there_is_no_hpa_and_one_replica_by_default() -> None:
    kids = children(edit(B, spec__runtime=None))
    assert [k for k in kids if k.startswith("HorizontalPodAutoscaler")] == []
    assert kids["Deployment/iris-stable"]["spec"]["replicas"] == 1


def test_services_select_both_tracks_or_one() -> None:
    md = md_of(B)
    main, stable, candidate = desired_services(md, owner_uid=UID)
    assert main["spec"]["selector"] == {"rollwise.dev/model-deployment": "iris"}
    assert stable["spec"]["selector"] == {
        "rollwise.dev/model-deployment": "iris",
        "rollwise.dev/track": "stable",
    }
    assert candidate["spec"]["selector"] == {
        "rollwise.dev/model-deployment": "iris",
        "rollwise.dev/track": "candidate",
    }
    for service in (main, stable, candidate):
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
            {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        ]
    narrowed = desired_services(md, owner_uid=UID, main_track=Track.CANDIDATE)[0]
    assert narrowed["spec"]["selector"] == {
        "rollwise.dev/model-deployment": "iris",
        "rollwise.dev/track": "candidate",
    }


def test_a_candidate_deployment_runs_its_own_revision_and_extra_args() -> None:
    md = md_of(B)
    newer = RevisionSpec(model=md.spec.model.model_copy(update={"version": "2.0.0"}), runtime=md.spec.runtime)
    d: Any = desired_deployment(
        md,
        track=Track.CANDIDATE,
        revision=newer,
        replicas=1,
        owner_uid=UID,
        serving_image=IMAGE,
        extra_args=["--hash-header", "x-user-id"],
    )
    args = d["spec"]["template"]["spec"]["containers"][0]["args"]
    assert d["metadata"]["name"] == "iris-candidate"
    assert args[args.index("--version") + 1] == "2.0.0" and args[args.index("--track") + 1] == "candidate"
    assert args[-2:] == ["--hash-header", "x-user-id"]
    assert (
        d["metadata"]["annotations"]["rollwise.dev/revision"]
        == revision_of(newer)
        != revision_of(revision_from_spec(md))
    )


@pytest.mark.parametrize(
    ("change", "rolls_out"),
    [
        pytest.param({"spec__model__version": "1.0.1"}, True, id="a new model version is a new revision"),
        pytest.param({"spec__model__sha256": "b" * 64}, True, id="a new digest is a new revision"),
        pytest.param(
            {"spec__runtime__resources": {"limits": {"memory": "1Gi"}}},
            True,
            id="new resources are a new revision",
        ),
        pytest.param({"spec__runtime__replicas": 7}, False, id="scaling is not a new revision"),
        pytest.param(
            {"spec__rollout__canary__steps": [{"setWeight": 100}]},
            False,
            id="a new rollout policy is not a new revision",
        ),
    ],
)
def test_revision_changes_only_with_what_shapes_the_pods(change: dict[str, Any], rolls_out: bool) -> None:
    before = revision_of(revision_from_spec(md_of(B)))
    after = revision_of(revision_from_spec(md_of(edit(B, **change))))
    assert (before != after) is rolls_out


sha = st.sampled_from(["a" * 64, "0123456789abcdef" * 4])
specs = st.fixed_dictionaries(
    {
        "model": st.fixed_dictionaries(
            {
                "name": st.from_regex(r"\A[a-z][a-z0-9]{0,20}\Z"),
                "version": st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\Z"),
                "uri": st.sampled_from(
                    ["file:///m/a.onnx", "pvc://claim/a/b.joblib", "https://h/x", "s3://bkt/k"]
                ),
                "format": st.just("onnx"),
            },
            optional={"sha256": sha},
        ),
        "runtime": st.one_of(
            st.fixed_dictionaries({"replicas": st.integers(1, 20)}),
            st.fixed_dictionaries(
                {
                    "autoscaling": st.fixed_dictionaries(
                        {
                            "maxReplicas": st.integers(5, 9),
                            "metric": st.just({"name": "rps", "targetAverageValue": 5}),
                        },
                        optional={"minReplicas": st.integers(1, 5)},
                    )
                }
            ),
            st.fixed_dictionaries(
                {},
                optional={
                    "env": st.lists(st.from_regex(r"\A[A-Z]{1,5}\Z"), unique=True, max_size=3).map(
                        lambda ns: [{"name": n, "value": n} for n in ns]
                    ),
                    "nodeSelector": st.dictionaries(
                        st.from_regex(r"\A[a-z]{1,5}\Z"), st.from_regex(r"\A[a-z]{1,5}\Z"), max_size=3
                    ),
                    "resources": st.fixed_dictionaries(
                        {}, optional={"gpu": st.integers(1, 2), "requests": st.just({"cpu": "1"})}
                    ),
                },
            ),
        ),
    }
)
names = st.from_regex(r"\A[a-z][a-z0-9-]{0,51}[a-z0-9]\Z")


@given(names, specs)
def test_planning_is_deterministic_and_survives_a_round_trip_through_the_api(
    name: str, spec: dict[str, Any]
) -> None:
    doc = {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }
    md = md_of(doc)
    first = steady_children(md, owner_uid=UID, serving_image=IMAGE)
    # What kube/ reads back: the object as JSON, as the API server returns it.
    again = steady_children(
        md_of(json.loads(md.model_dump_json(exclude_none=True))), owner_uid=UID, serving_image=IMAGE
    )
    assert json.dumps(first) == json.dumps(again)
    for m in first:
        assert len(m["metadata"]["name"]) <= 63
    deployment: Any = first[0]
    assert ("replicas" in deployment["spec"]) is ("autoscaling" not in spec["runtime"])
    assert any(m["kind"] == "HorizontalPodAutoscaler" for m in first) is ("autoscaling" in spec["runtime"])


def test_the_revision_memo_answers_what_hashing_would_for_every_value() -> None:
    """revision_of remembers by identity; equal values from other objects, a changed value, and
    values seen after the memo overflowed all get the hash computed from scratch."""

    md = md_of(B)
    versions = [
        md.spec.model.model_copy(update={"version": f"1.{i}"}) for i in range(revisions._REVISIONS_KEPT + 50)
    ]
    for model in [md.spec.model, *versions, md.spec.model]:
        revision = RevisionSpec(model=model, runtime=md.spec.runtime)
        assert revision_of(revision) == revisions._revision_hash(revision)
    twin = RevisionSpec(model=md.spec.model.model_copy(), runtime=md.spec.runtime.model_copy())
    assert revision_of(twin) == revision_of(revision_from_spec(md))


@pytest.mark.parametrize(
    ("traffic", "settle"),
    [
        ({}, 0),  # replicas: kube-proxy routes the Service, no proxy to wait for
        ({"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}}, 5),
        ({"provider": "istio", "istio": {"virtualService": "web"}}, 5),
        ({"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}, "endpointSettleSeconds": 12}, 12),
        ({"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}, "endpointSettleSeconds": 0}, 0),
    ],
)
def test_a_new_pod_is_available_only_once_the_proxy_in_front_had_time_to_route_it(
    traffic: dict[str, Any], settle: int
) -> None:
    doc = json.loads(json.dumps(B))
    if traffic:
        doc["spec"].setdefault("rollout", {})["traffic"] = traffic
    assert children(doc)["Deployment/iris-stable"]["spec"]["minReadySeconds"] == settle


def test_the_hpa_scales_in_after_the_stabilization_window_the_spec_sets() -> None:
    doc = edit(AUTOSCALED, spec__runtime__autoscaling__scaleDownStabilizationSeconds=30)
    hpa: Any = children(doc)["HorizontalPodAutoscaler/iris-stable"]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}
    assert "behavior" not in children(AUTOSCALED)["HorizontalPodAutoscaler/iris-stable"]["spec"]

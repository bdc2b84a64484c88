"""`runtime.server`: the user's own model server with the signals proxy beside it in every pod."""

from __future__ import annotations

from typing import Any

from rollwise.api.v1alpha1 import ModelDeployment, RevisionSpec
from rollwise.plan.desired import GRPC_PORT, SERVING_PORT, desired_deployment, hop_token
from rollwise.plan.guardrails import Guardrails, violations
from rollwise.plan.names import Track

from tests.unit.manifests import base, edit

UID = "0b5c1a7e-1111-4222-8333-444455556666"
IMAGE = "registry.local/rollwise/serving:0.1.0"
MLSERVER = "registry.local/team/mlserver:1.7.1"


def byo(**server: Any) -> ModelDeployment:
    spec_server = {"image": MLSERVER, "protocol": "oip-rest", **server}
    doc = edit(
        base(),
        spec__model__uri=None,
        spec__model__format=None,
        spec__model__sha256=None,
        spec__runtime={
            "server": spec_server,
            "env": [{"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"}],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        },
    )
    return ModelDeployment.model_validate(doc)


def pod(md: ModelDeployment, extra_args: tuple[str, ...] = ()) -> Any:
    d: Any = desired_deployment(
        md,
        track=Track.CANDIDATE,
        revision=RevisionSpec(model=md.spec.model, runtime=md.spec.runtime),
        replicas=1,
        owner_uid=UID,
        serving_image=IMAGE,
        extra_args=list(extra_args),
    )
    return d["spec"]["template"]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_proxy_takes_the_service_port_and_the_users_server_sits_behind_it_on_loopback() -> None:
    template = pod(byo(port=9000, grpcPort=9001, args=["--port", "9000"]))
    proxy, server = template["spec"]["containers"]
    assert (proxy["name"], server["name"]) == ("proxy", "server")
    assert proxy["image"] == IMAGE and proxy["command"] == ["rollwise-proxy"]
    assert server["image"] == MLSERVER and server["args"] == ["--port", "9000"]
    assert "command" not in server  # the image's own entrypoint
    args = proxy["args"]
    assert flag(args, "--upstream") == "http://127.0.0.1:9000"
    assert flag(args, "--protocol") == "oip-rest"
    assert flag(args, "--port") == str(SERVING_PORT)
    assert (flag(args, "--grpc-port"), flag(args, "--grpc-upstream")) == (str(GRPC_PORT), "127.0.0.1:9001")
    assert (flag(args, "--name"), flag(args, "--version"), flag(args, "--track")) == (
        "iris",
        "1.0.0",
        "candidate",
    )
    assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {
        "http": SERVING_PORT,
        "grpc": GRPC_PORT,
    }
    assert {p["name"] for p in server["ports"]} == {"model", "model-grpc"}
    # Prometheus scrapes the proxy, which exports the bundled server's metric contract.
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(SERVING_PORT)


def test_readiness_is_the_proxys_which_asks_the_users_server() -> None:
    proxy, server = pod(byo(readinessPath="/ready"))["spec"]["containers"]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/rollwise/ready"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/rollwise/live"
    assert flag(proxy["args"], "--upstream-ready-path") == "/ready"
    # The kubelet probes the pod IP; the user's server listens on loopback, so only the proxy asks it.
    assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(server)


def test_router_flags_go_to_the_proxy_which_the_routers_read_back_first() -> None:
    proxy, server = pod(byo(), ("--mirror-url", "http://iris-candidate"))["spec"]["containers"]
    assert proxy["args"][-2:] == ["--mirror-url", "http://iris-candidate"]
    assert "--mirror-url" not in server.get("args", [])


def test_http_json_paths_reach_the_proxy() -> None:
    md = byo(protocol="http-json", predictionPath="$.predictions", featuresPath="$.instances")
    proxy, _ = pod(md)["spec"]["containers"]
    assert flag(proxy["args"], "--prediction-path") == "$.predictions"
    assert flag(proxy["args"], "--features-path") == "$.instances"
    assert "--grpc-port" not in proxy["args"]
    assert [p["name"] for p in proxy["ports"]] == ["http"]


def test_resources_and_env_go_to_the_users_server_the_hop_token_only_to_the_proxy() -> None:
    proxy, server = pod(byo())["spec"]["containers"]
    assert server["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert proxy["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}
    server_env = {e["name"]: e for e in server["env"]}
    proxy_env = {e["name"]: e for e in proxy["env"]}
    assert server_env["MLSERVER_PARALLEL_WORKERS"]["value"] == "0"
    assert "ROLLWISE_HOP_TOKEN" not in server_env
    assert proxy_env["ROLLWISE_HOP_TOKEN"]["value"] == hop_token(UID)


def test_both_containers_meet_the_restricted_profile_and_drain_before_stopping() -> None:
    for c in pod(byo())["spec"]["containers"]:
        ctx = c["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"]
        assert ctx["capabilities"] == {"drop": ["ALL"]} and not ctx["allowPrivilegeEscalation"]
        assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_a_new_server_image_is_a_new_revision() -> None:
    first = pod(byo())["metadata"]["annotations"]["rollwise.dev/revision"]
    second = pod(byo(image=MLSERVER + "-2"))["metadata"]["annotations"]["rollwise.dev/revision"]
    assert first != second


def test_the_users_server_image_must_be_allowed_by_the_administrator() -> None:
    (problem,) = violations(byo(), Guardrails(), serving_image=IMAGE)
    assert problem.startswith(f"spec.runtime.server.image: {MLSERVER} is not an allowed image")
    assert "guardrails.allowedImages" in problem
    assert violations(byo(), Guardrails(allowed_images=["registry.local/*"]), serving_image=IMAGE) == []

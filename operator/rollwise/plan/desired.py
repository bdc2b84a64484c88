"""The Deployments, Services and HPAs a ModelDeployment owns, as JSON manifests for server-side apply.

Every function here is deterministic: the same inputs give equal manifests, field for field and in
the same order, so `kube/` can apply them under one field manager and an idle reconcile writes
nothing. A track's pods are built from a `RevisionSpec` (model + runtime), not from the live spec,
so that during a rollout the stable track keeps running exactly what it ran before.

`desired_objects` puts them together for a rollout's position (pods per track from
`split.pods_per_track`, HPA bounds narrowed to the step, the router's objects), and
`stale_children` is the deletion diff.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from rollwise_contract.features import FeatureSchema

from rollwise.api.v1alpha1 import (
    API_VERSION,
    KIND,
    Autoscaling,
    ExplainSpec,
    FallbackModel,
    ModelDeployment,
    ModelSpec,
    Phase,
    ResourceList,
    RevisionSpec,
    RuntimeSpec,
    ServerSpec,
    StrategyName,
)
from rollwise.plan.decision import ChildRef
from rollwise.plan.manifest import JsonValue, Manifest, name_of
from rollwise.plan.names import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_REVISION,
    Track,
    common_labels,
    serving_selector,
    track_labels,
    track_name,
    track_selector,
)
from rollwise.plan.revision import revision_from_spec, revision_of
from rollwise.plan.split import TrackReplicas, TrafficSplit, pods_per_track
from rollwise.plan.state import ENDED_PHASES, State, World, candidate_exists, current_step, routed_split
from rollwise.plan.steps import Preview

SERVING_PORT = 8080
"""The serving container's HTTP port: OIP v2 REST inference, health (the probes) and /metrics."""
SERVICE_PORT = 80
"""What clients call: `http://<name>.<namespace>/v2/models/<model>/infer`."""
GRPC_PORT = 8081
"""The serving container's OIP gRPC port (`rollwise-serve --grpc-port`), and the Services' port
named `grpc` for it: REST's port + 1, as KServe's servers do (`<name>.<namespace>:8081`)."""
RUN_AS = 65532
"""The conventional "nonroot" uid/gid of distroless images; the serving image owns nothing as it."""
PVC_ROOT = "/mnt/pvc"
"""`pvc://claim/path` is mounted read-only at `/mnt/pvc/claim` and passed as `file:///mnt/pvc/claim/path`."""
GPU_RESOURCE = "nvidia.com/gpu"
SERVE_COMMAND = "rollwise-serve"
PROXY_COMMAND = "rollwise-proxy"
DEFAULT_SCRATCH = "10Gi"
"""The scratch volume's size without an ephemeral-storage limit in the spec: room for the server's
default download cap (4 GiB) twice, the primary and the fallback artifact."""
PRESTOP_SLEEP_SECONDS = 5
"""How long a terminating serving pod keeps serving before SIGTERM reaches the server."""


def owner_reference(md: ModelDeployment, owner_uid: str) -> Manifest:
    """Controller owner reference: deleting the ModelDeployment garbage-collects its children."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.metadata.name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    md: ModelDeployment, name: str, labels: dict[str, JsonValue], owner_uid: str, **annotations: str
) -> Manifest:
    meta: Manifest = {"name": name}
    if md.metadata.namespace:
        meta["namespace"] = md.metadata.namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = dict(annotations)
    meta["ownerReferences"] = [owner_reference(md, owner_uid)]
    return meta


def _pvc_claim(uri: str) -> str | None:
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def container_uri(uri: str) -> str:
    """The URI as the serving container sees it: `pvc://claim/a/b` -> `file:///mnt/pvc/claim/a/b`."""
    claim = _pvc_claim(uri)
    if claim is None:
        return uri
    return f"file://{PVC_ROOT}/{uri.removeprefix('pvc://')}"


def container_path(uri: str) -> str:
    """A local URI as a plain path: `file:///a/b` -> `/a/b`, `pvc://claim/a` -> `/mnt/pvc/claim/a`."""
    return container_uri(uri).removeprefix("file://")


def _artifact_uris(model: ModelSpec) -> list[str]:
    uris = [] if model.uri is None else [model.uri]
    if model.reference is not None:
        uris.append(model.reference.uri)
    if model.fallback is not None:
        uris.append(model.fallback.uri)
    return uris


def serve_args(model: ModelSpec, track: Track) -> list[JsonValue]:
    """Arguments of `rollwise-serve`: the artifact, how to check and load it, and its metric labels."""
    uri, model_format = model.artifact
    args: list[JsonValue] = ["--model-uri", container_uri(uri)]
    if model.sha256 is not None:
        args += ["--sha256", model.sha256]
    args += [
        "--format",
        str(model_format),
        *_label_args(model, track),
        "--grpc-port",
        str(GRPC_PORT),
    ]
    args += _signal_args(model)
    if model.fallback is not None:
        args += _fallback_args(model.fallback)
    if model.explain is not None:
        args += _explain_args(model.explain)
    return args


def _label_args(model: ModelSpec, track: Track) -> list[JsonValue]:
    """The metric labels and the HTTP port, which `rollwise-serve` and `rollwise-proxy` take alike."""
    return [
        "--name",
        model.name,
        "--version",
        model.version,
        "--track",
        str(track),
        "--port",
        str(SERVING_PORT),
    ]


def _signal_args(model: ModelSpec) -> list[JsonValue]:
    """The feature schema and reference, which the bundled server and the proxy take alike."""
    args: list[JsonValue] = []
    if model.feature_schema is not None:
        args += ["--feature-schema", feature_schema_arg(model.feature_schema)]
    if model.reference is not None:
        args += ["--reference", container_path(model.reference.uri)]
    return args


def feature_schema_arg(feature_schema: FeatureSchema) -> str:
    """The `--feature-schema` value `rollwise-serve`, `rollwise-proxy` and `rollwise-batch` take."""
    schema = feature_schema.model_dump(mode="json", exclude_none=True)
    if not schema.get("segments"):
        # A schema without segments is passed exactly as before they existed: the same
        # arguments, so an operator upgrade restarts no serving pod.
        schema.pop("segments", None)
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def proxy_args(model: ModelSpec, server: ServerSpec, track: Track) -> list[JsonValue]:
    """Arguments of `rollwise-proxy`: where the user's server listens, what it speaks, and the same
    metric labels and signal files the bundled server takes (its flags share their names)."""
    args: list[JsonValue] = [
        "--upstream",
        f"http://127.0.0.1:{server.port}",
        "--protocol",
        str(server.protocol),
        *_label_args(model, track),
        "--upstream-timeout-seconds",
        str(server.timeout_seconds),
        "--max-connections",
        str(server.max_connections),
    ]
    if server.grpc_port is not None:
        args += ["--grpc-port", str(GRPC_PORT), "--grpc-upstream", f"127.0.0.1:{server.grpc_port}"]
    if server.prediction_path is not None:
        args += ["--prediction-path", server.prediction_path]
    if server.features_path is not None:
        args += ["--features-path", server.features_path]
    if server.readiness_path is not None:
        args += ["--upstream-ready-path", server.readiness_path]
    return args + _signal_args(model)


def _explain_args(explain: ExplainSpec) -> list[JsonValue]:
    args: list[JsonValue] = [
        "--explain",
        "true",
        "--explain-max-rows",
        str(explain.max_rows),
        "--explain-max-evaluations",
        str(explain.max_evaluations),
        "--explain-timeout-ms",
        str(explain.timeout_ms),
    ]
    if explain.baseline is not None:
        args += ["--explain-baseline", json.dumps(explain.baseline)]
    return args


def _fallback_args(fallback: FallbackModel) -> list[JsonValue]:
    args: list[JsonValue] = ["--fallback-uri", container_uri(fallback.uri)]
    if fallback.format is not None:
        args += ["--fallback-format", str(fallback.format)]
    if fallback.sha256 is not None:
        args += ["--fallback-sha256", fallback.sha256]
    return args


def _resource_list(rl: ResourceList | None) -> dict[str, JsonValue]:
    if rl is None:
        return {}
    out: dict[str, JsonValue] = {}
    if rl.cpu is not None:
        out["cpu"] = rl.cpu
    if rl.memory is not None:
        out["memory"] = rl.memory
    if rl.ephemeral_storage is not None:
        out["ephemeral-storage"] = rl.ephemeral_storage
    return out


def scratch_size(runtime: RuntimeSpec) -> str:
    """The `/tmp` emptyDir's sizeLimit: the ephemeral-storage limit when the spec sets one, else
    `DEFAULT_SCRATCH`. Past it the kubelet evicts the pod, so an endless artifact fills this volume,
    not the node's disk (the server stops a download at its own byte cap before that)."""
    limits = runtime.resources.limits if runtime.resources is not None else None
    if limits is not None and limits.ephemeral_storage is not None:
        return limits.ephemeral_storage
    return DEFAULT_SCRATCH


def container_resources(runtime: RuntimeSpec) -> Manifest:
    """Requests and limits as declared; a GPU count becomes the `nvidia.com/gpu` limit."""
    res = runtime.resources
    if res is None:
        return {}
    requests = _resource_list(res.requests)
    limits = _resource_list(res.limits)
    if res.gpu is not None:
        limits[GPU_RESOURCE] = str(res.gpu)
    out: Manifest = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _probe(path: str, *, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": failures,
    }


def hop_token(owner_uid: str) -> str:
    """The secret both tracks' servers share to tell their own mirrored and forwarded copies
    (`x-rollwise-hop`) from a client's forged header: derived from the ModelDeployment's UID, which
    clients never see, so it is stable across passes and different for every ModelDeployment."""
    return hashlib.sha256(f"rollwise-hop:{owner_uid}".encode()).hexdigest()


def _namespace_env() -> Manifest:
    """POD_NAMESPACE from the downward API: the server's and the proxy's cache keys start with it."""
    return {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}


def _env(runtime: RuntimeSpec, owner_uid: str) -> list[JsonValue]:
    """The user's env, then ours (the API refuses user env of these names: `RESERVED_ENV`).
    POD_NAMESPACE keys the server's shared cache by namespace."""
    ours: list[JsonValue] = [
        _namespace_env(),
        {"name": "ROLLWISE_HOP_TOKEN", "value": hop_token(owner_uid)},
    ]
    return [*(e.model_dump(mode="json", exclude_none=True) for e in runtime.env), *ours]


def serving_container(
    revision: RevisionSpec,
    track: Track,
    serving_image: str,
    extra_args: Sequence[str] = (),
    owner_uid: str = "",
) -> Manifest:
    """The `rollwise-serve` container, locked down to the restricted Pod Security profile.

    `extra_args` lets a router add serving-image flags (e.g. `--mirror-url`, `--hash-header`).
    """
    runtime, model = revision.runtime, revision.model
    container: Manifest = {
        "name": "server",
        "image": runtime.image or serving_image,
        "command": [SERVE_COMMAND],
        "args": [*serve_args(model, track), *extra_args],
        "ports": [
            {"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
    }
    container["env"] = _env(runtime, owner_uid)
    resources = container_resources(runtime)
    if resources:
        container["resources"] = resources
    # The startup probe gives a slow artifact download time before liveness can restart the pod.
    container["startupProbe"] = _probe("/v2/health/live", period=2, failures=150)
    container["readinessProbe"] = _probe("/v2/health/ready", period=2, failures=3)
    container["livenessProbe"] = _probe("/v2/health/live", period=10, failures=3)
    return _locked_down(container, model)


def container_security_context() -> Manifest:
    """The restricted Pod Security profile for one container: every pod we create runs so (serving
    pods and batch shards alike); a fresh dict per call, so manifests share no mutable part."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> Manifest:
    """The pod-level half: non-root, our uid and gid, volumes group-owned by it."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _locked_down(container: Manifest, model: ModelSpec) -> Manifest:
    """The restricted Pod Security profile, the drain pause and the volumes, for every container."""
    # Keep answering while the pod leaves the Service's endpoints: kube-proxy and ingress
    # controllers learn of a terminating pod a moment after it gets SIGTERM, and a rollout that
    # drops requests in that moment is a rollout users see.
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}
    container["securityContext"] = container_security_context()
    mounts: list[JsonValue] = [{"name": "tmp", "mountPath": "/tmp"}]
    for claim in _claims(model):
        mounts.append({"name": f"pvc-{claim}", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    container["volumeMounts"] = mounts
    return container


def _proxy_resources() -> Manifest:
    """The signals proxy's own bounds, beside the user's server: a request so an HPA's CPU target has
    every container's request to measure against, a memory cap for its bounded queues and stores.
    A new dict per pod: manifests are values, none may share a mutable part with another."""
    return {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def byo_containers(
    revision: RevisionSpec,
    server: ServerSpec,
    track: Track,
    serving_image: str,
    extra_args: Sequence[str] = (),
    *,
    owner_uid: str = "",
) -> list[JsonValue]:
    """`runtime.server`: the signals proxy, which takes the Service's ports and the router's flags
    (`--mirror-url`, `--hash-header`... mean the same to it), and the user's server behind it on
    loopback. Readiness is the proxy's, which asks the server's readiness path: a pod is ready only
    when both are, so a candidate that never loads is never routed to."""
    runtime, model = revision.runtime, revision.model
    ports: list[JsonValue] = [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}]
    if server.grpc_port is not None:
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    proxy: Manifest = {
        "name": "proxy",
        "image": runtime.image or serving_image,
        "command": [PROXY_COMMAND],
        "args": [*proxy_args(model, server, track), *extra_args],
        "ports": ports,
        "env": _env(runtime, owner_uid),
        "resources": _proxy_resources(),
        "startupProbe": _probe("/rollwise/live", period=2, failures=30),
        "readinessProbe": _probe("/rollwise/ready", period=2, failures=3),
        "livenessProbe": _probe("/rollwise/live", period=10, failures=3),
    }
    user_ports: list[JsonValue] = [{"name": "model", "containerPort": server.port, "protocol": "TCP"}]
    if server.grpc_port is not None:
        user_ports.append({"name": "model-grpc", "containerPort": server.grpc_port, "protocol": "TCP"})
    user: Manifest = {"name": "server", "image": server.image}
    if server.command is not None:
        user["command"] = list(server.command)
    if server.args is not None:
        user["args"] = list(server.args)
    user["ports"] = user_ports
    # The user's env and the namespace, but not the hop token: only the proxy signs and checks hops.
    user["env"] = [
        *(e.model_dump(mode="json", exclude_none=True) for e in runtime.env),
        _namespace_env(),
    ]
    resources = container_resources(runtime)
    if resources:
        user["resources"] = resources
    # No probe of its own: the kubelet probes the pod's IP, and the server listens on loopback (only
    # the proxy may reach it). Its readiness is the proxy's, which asks it on loopback; a server that
    # stops answering takes its pod out of traffic, and one that exits is restarted by the kubelet.
    return [_locked_down(proxy, model), _locked_down(user, model)]


def _claims(model: ModelSpec) -> list[str]:
    """PVCs the model's artifacts live on, in first-use order, each once."""
    claims: list[str] = []
    for uri in _artifact_uris(model):
        claim = _pvc_claim(uri)
        if claim is not None and claim not in claims:
            claims.append(claim)
    return claims


def _containers(
    revision: RevisionSpec, track: Track, serving_image: str, extra_args: Sequence[str], owner_uid: str
) -> list[JsonValue]:
    server = revision.runtime.server
    if server is None:
        return [serving_container(revision, track, serving_image, extra_args, owner_uid)]
    return byo_containers(revision, server, track, serving_image, extra_args, owner_uid=owner_uid)


def pod_template(
    md: ModelDeployment,
    revision: RevisionSpec,
    track: Track,
    serving_image: str,
    extra_args: Sequence[str] = (),
    *,
    owner_uid: str,
) -> Manifest:
    """The pod template of a track's Deployment."""
    name = md.metadata.name
    runtime = revision.runtime
    volumes: list[JsonValue] = [{"name": "tmp", "emptyDir": {"sizeLimit": scratch_size(runtime)}}]
    for claim in _claims(revision.model):
        volumes.append(
            {"name": f"pvc-{claim}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    spec: Manifest = {
        "automountServiceAccountToken": False,  # the server never calls the API server
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": _containers(revision, track, serving_image, extra_args, owner_uid),
        "volumes": volumes,
    }
    if runtime.node_selector:
        spec["nodeSelector"] = dict(sorted(runtime.node_selector.items()))
    if runtime.tolerations:
        spec["tolerations"] = [t.model_dump(mode="json", exclude_none=True) for t in runtime.tolerations]
    return {
        "metadata": {
            "labels": track_labels(name, track),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(SERVING_PORT),
                "prometheus.io/path": "/metrics",
                ANNOTATION_REVISION: revision_of(revision),
                ANNOTATION_MODEL_VERSION: revision.model.version,
            },
        },
        "spec": spec,
    }


def desired_deployment(
    md: ModelDeployment,
    *,
    track: Track,
    revision: RevisionSpec,
    replicas: int | None,
    owner_uid: str,
    serving_image: str,
    extra_args: Sequence[str] = (),
) -> Manifest:
    """A track's Deployment. `replicas=None` omits the field so an HPA alone owns the count and the
    operator's apply never fights it."""
    name = md.metadata.name
    spec: Manifest = {}
    if replicas is not None:
        spec["replicas"] = replicas
    spec |= {
        "selector": {"matchLabels": track_selector(name, track)},
        "revisionHistoryLimit": 2,
        # Never take a serving pod down before its replacement is ready.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": md.spec.rollout.progress_deadline_seconds,
        # A new pod counts as available (to the rollout and to the rolling update that removes
        # the pod it replaces) only once the proxy in front of the tracks has had time to route it.
        "minReadySeconds": md.spec.rollout.traffic.settle_seconds,
        "template": pod_template(md, revision, track, serving_image, extra_args, owner_uid=owner_uid),
    }
    annotations = {
        ANNOTATION_REVISION: revision_of(revision),
        ANNOTATION_MODEL_VERSION: revision.model.version,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            md, track_name(name, track), track_labels(name, track), owner_uid, **annotations
        ),
        "spec": spec,
    }


def _service(
    md: ModelDeployment,
    name: str,
    labels: dict[str, JsonValue],
    selector: JsonValue,
    uid: str,
    *,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, name, labels, uid, **dict(sorted((annotations or {}).items()))),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                # OIP over gRPC. No router weights it: it reaches the pods this Service selects
                # (kube-proxy balances connections, and HTTP/2 keeps one open for many calls).
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def desired_services(
    md: ModelDeployment,
    *,
    owner_uid: str,
    main_track: Track | None = None,
    main_annotations: Mapping[str, str] | None = None,
    track_services: bool = True,
) -> list[Manifest]:
    """The `<name>` Service clients call, then (with `track_services`) `<name>-stable` and
    `<name>-candidate`.

    The main Service selects both tracks by default (the `replicas` router weights by pod ratio);
    `main_track` narrows it to one track, e.g. for a blue/green switch without a mesh.
    `main_annotations` lets a router record its intent on the main Service (the replicas router's
    weight, which a replica ratio alone cannot tell). The track Services are wanted while a
    candidate exists (its preview, forwarding and mirroring target), and always behind a router
    whose route names them; a ModelDeployment at rest behind the `replicas` router needs none, which
    spares the cluster two Service IPs (and their endpoints) per model.
    """
    name = md.metadata.name
    main_selector = serving_selector(name) if main_track is None else track_selector(name, main_track)
    out = [_service(md, name, common_labels(name), main_selector, owner_uid, annotations=main_annotations)]
    for track in (Track.STABLE, Track.CANDIDATE) if track_services else ():
        out.append(
            _service(
                md, track_name(name, track), track_labels(name, track), track_selector(name, track), owner_uid
            )
        )
    return out


def desired_hpa(
    md: ModelDeployment,
    *,
    track: Track,
    autoscaling: Autoscaling,
    owner_uid: str,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> Manifest:
    """A track's HorizontalPodAutoscaler; a rollout may narrow min/max so the HPA respects the step."""
    name = md.metadata.name
    metrics: list[JsonValue] = []
    if autoscaling.cpu_utilization is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": autoscaling.cpu_utilization},
                },
            }
        )
    if autoscaling.metric is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": autoscaling.metric.name},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": autoscaling.metric.target_average_value,
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(md, track_name(name, track), track_labels(name, track), owner_uid),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": track_name(name, track),
            },
            "minReplicas": autoscaling.min_replicas if min_replicas is None else min_replicas,
            "maxReplicas": autoscaling.max_replicas if max_replicas is None else max_replicas,
            "metrics": metrics,
            **(
                {}
                if autoscaling.scale_down_stabilization_seconds is None
                else {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds
                        }
                    }
                }
            ),
        },
    }


def desired_objects(
    world: World, state: State, *, owner_uid: str, serving_image: str
) -> tuple[list[Manifest], list[ChildRef], TrafficSplit]:
    """Children for a state, the children to delete, and the split they route."""
    md, observed = world.md, world.observed
    split = routed_split(world, state)
    routing = world.router.render(md, split, observed.router_objects)
    runtime = md.spec.runtime
    auto = runtime.autoscaling
    candidate_runs = candidate_exists(state)
    fixed = _pods(world, state, split, runtime.replica_count)
    out: list[Manifest] = [
        desired_deployment(
            md,
            track=Track.STABLE,
            revision=state.stable,
            replicas=None if auto is not None and fixed.stable > 0 else fixed.stable,
            owner_uid=owner_uid,
            serving_image=serving_image,
            extra_args=routing.stable_args,
        )
    ]
    if candidate_runs:
        out.append(
            desired_deployment(
                md,
                track=Track.CANDIDATE,
                revision=revision_from_spec(md),
                replicas=None if auto is not None and fixed.candidate > 0 else fixed.candidate,
                owner_uid=owner_uid,
                serving_image=serving_image,
                extra_args=routing.candidate_args,
            )
        )
    out += desired_services(
        md,
        owner_uid=owner_uid,
        main_track=routing.main_track,
        main_annotations=dict(routing.main_annotations),
        track_services=candidate_runs or world.router.routes_to_tracks,
    )
    if auto is not None:
        out += _hpas(world, state, split, auto, owner_uid)
    out += list(routing.objects)
    return out, stale_children(md, observed.children, out, autoscaled=auto is not None), split


def _hpas(world: World, state: State, split: TrafficSplit, auto: Autoscaling, uid: str) -> list[Manifest]:
    """One HPA per track, bounds narrowed to the step so the HPA never fights the rollout."""
    low = _pods(world, state, split, auto.min_replicas)
    high = _pods(world, state, split, auto.max_replicas)
    bounds = [(Track.STABLE, low.stable, high.stable)]
    if candidate_exists(state):
        bounds.append((Track.CANDIDATE, low.candidate, high.candidate))
    return [
        desired_hpa(
            world.md,
            track=track,
            autoscaling=auto,
            owner_uid=uid,
            min_replicas=max(1, min(lo, hi)),
            max_replicas=max(1, hi),
        )
        for track, lo, hi in bounds
        if hi > 0
    ]


def stale_children(
    md: ModelDeployment, live: Sequence[Manifest], desired: Sequence[Manifest], *, autoscaled: bool
) -> list[ChildRef]:
    """The deletion diff: track children that exist but are no longer desired (the candidate after
    a promotion, a track Service no router needs, the stable HPA once autoscaling is switched off)."""
    wanted = {(m["kind"], name_of(m)) for m in desired}
    candidate, stable = (track_name(md.metadata.name, t) for t in (Track.CANDIDATE, Track.STABLE))
    gone: list[ChildRef] = []
    for kind, api_version, name in (
        ("Deployment", "apps/v1", candidate),
        ("HorizontalPodAutoscaler", "autoscaling/v2", candidate),
        ("Service", "v1", candidate),
        ("Service", "v1", stable),
    ):
        if (kind, name) not in wanted and any(c.get("kind") == kind and name_of(c) == name for c in live):
            gone.append(ChildRef(api_version, kind, name))
    if not autoscaled and any(
        c.get("kind") == "HorizontalPodAutoscaler" and name_of(c) == stable for c in live
    ):
        gone.append(ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", stable))
    return gone


def _pods(world: World, state: State, split: TrafficSplit, total: int) -> TrackReplicas:
    """`pods_per_track` for a rollout position."""
    rollout = world.md.spec.rollout
    preview: int | None = None
    if rollout.strategy is StrategyName.BLUE_GREEN:
        bg = rollout.blue_green
        preview = bg.preview_replicas if bg is not None and bg.preview_replicas is not None else total
    return pods_per_track(
        split,
        total,
        candidate_runs=state.phase not in ENDED_PHASES and state.candidate is not None,
        promoting=state.phase is Phase.PROMOTING,
        blue_green_preview=preview,
        preview_step=isinstance(current_step(world, state), Preview),
        by_weight=world.router.scales_by_weight,
    )

"""The Helm chart, rendered by the real `helm` binary: lint, RBAC, security, values validation, CRDs.

The chart is the operator's contract with a cluster admin, so these tests pin what it grants and
runs: the exact RBAC rule table, the restricted pod security settings, the environment the
operator reads, and that bad values fail at `helm install` time naming the value.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf._cogs.structs import references as kopf_references
from rollwise.plan.guardrails import Guardrails
from rollwise.settings import from_env

from e2e import paths

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "rollwise"
SYNC_CRDS = REPO / "charts" / "sync-crds.sh"
PEERING_CRDS = CHART / "crds" / "kopf-peerings.yaml"

Manifest = dict[str, Any]
# (apiGroup, resource) -> verbs: one row per resource, so a rule that lists two resources or a
# verb granted twice still compares as the permission it gives.
RuleTable = dict[tuple[str, str], frozenset[str]]

READ = frozenset({"get", "list", "watch"})
OWN = READ | {"create", "patch", "delete"}

# Exactly what the operator uses, in every namespace. Adding a verb here is a security decision.
NAMESPACED_RULES: RuleTable = {
    ("rollwise.dev", "modeldeployments"): READ | {"patch"},
    ("rollwise.dev", "modeldeployments/status"): frozenset({"get", "patch"}),
    ("apps", "deployments"): OWN,
    ("", "services"): OWN,
    ("autoscaling", "horizontalpodautoscalers"): OWN,
    ("rollwise.dev", "modelbatchjobs"): READ | {"patch"},
    ("rollwise.dev", "modelbatchjobs/status"): frozenset({"get", "patch"}),
    ("batch", "jobs"): OWN,  # a rollout's backtest Job is a child like the others
    ("", "pods"): frozenset({"list"}),
    ("", "events"): frozenset({"create"}),
    ("events.k8s.io", "events"): frozenset({"create"}),
}
KOPF_SCANS: RuleTable = {
    ("", "namespaces"): READ,
    ("apiextensions.k8s.io", "customresourcedefinitions"): READ,
}
PEERING_RULES: RuleTable = {
    ("kopf.dev", "clusterkopfpeerings"): READ | {"patch"},
    ("kopf.dev", "kopfpeerings"): READ | {"patch"},
}
# Each router's objects: the user's route is patched (server-side apply of the fields we own),
# never created or deleted; nginx also creates its canary Ingress, which the garbage collector
# deletes with the ModelDeployment. tests/integration/test_routers_upstream.py runs each router's
# canary under exactly this role on the local cluster, so a missing verb fails there.
ROUTER_RULES: dict[str, RuleTable] = {
    "gatewayAPI": {("gateway.networking.k8s.io", "httproutes"): READ | {"patch"}},
    "istio": {("networking.istio.io", "virtualservices"): READ | {"patch"}},
    "nginx": {("networking.k8s.io", "ingresses"): READ | {"create", "patch"}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    """The pinned helm binary; a missing one fails the test by name, it never skips."""
    if not paths.HELM.is_file():
        pytest.fail(
            f"helm not found at {paths.HELM}: build it with `bash e2e/build-binaries.sh helm` "
            "(or `make bootstrap`)",
            pytrace=False,
        )
    return paths.HELM


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=60)


def set_args(values: Mapping[str, str]) -> list[str]:
    """`--set key=value` pairs; `--set` parses types as a user's command line would."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def render(helm: Path, values: Mapping[str, str] | None = None, *extra: str) -> list[Manifest]:
    args = ["template", "rw", str(CHART), "--namespace", "rollwise-system", *set_args(values or {}), *extra]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def only(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def rule_table(rules: Sequence[Mapping[str, Any]]) -> RuleTable:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys: {rule}"
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], f"wildcard in {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in table.items()}


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module")
def default_render(helm: Path) -> list[Manifest]:
    return render(helm)


def test_lint_passes_with_strict(helm: Path) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_render_has_exactly_the_operator_objects(default_render: list[Manifest]) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in default_render)
    assert kinds == [
        ("ClusterKopfPeering", "rollwise"),
        ("ClusterRole", "rw-rollwise"),
        ("ClusterRoleBinding", "rw-rollwise"),
        ("Deployment", "rw-rollwise"),
        ("Service", "rw-rollwise-metrics"),
        ("ServiceAccount", "rw-rollwise"),
    ]


@pytest.mark.parametrize(
    "routers",
    [
        pytest.param((), id="no router beyond replicas adds no rule"),
        pytest.param(("gatewayAPI",), id="gatewayAPI adds httproutes"),
        pytest.param(("istio",), id="istio adds virtualservices"),
        pytest.param(("nginx",), id="nginx adds ingresses"),
        pytest.param(("gatewayAPI", "istio", "nginx"), id="all routers add all three"),
    ],
)
def test_cluster_role_grants_exactly_the_least_privilege_table(helm: Path, routers: tuple[str, ...]) -> None:
    manifests = render(helm, {f"routers.{r}.enabled": "true" for r in routers})
    expected = NAMESPACED_RULES | PEERING_RULES | KOPF_SCANS
    for router in routers:
        expected |= ROUTER_RULES[router]
    assert rule_table(only(manifests, "ClusterRole")["rules"]) == expected
    assert not [m for m in manifests if m["kind"] in {"Role", "RoleBinding"}]


def test_cluster_role_is_bound_to_the_operator_service_account(default_render: list[Manifest]) -> None:
    binding = only(default_render, "ClusterRoleBinding")
    account = only(default_render, "ServiceAccount")
    deployment = only(default_render, "Deployment")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": only(default_render, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "rollwise-system"}
    ]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_watch_namespace_confines_namespaced_rules_to_a_role_there(helm: Path) -> None:
    manifests = render(helm, {"watchNamespace": "models", "routers.istio.enabled": "true"})
    role = only(manifests, "Role")
    binding = only(manifests, "RoleBinding")
    assert role["metadata"]["namespace"] == "models"
    assert binding["metadata"]["namespace"] == "models"
    assert binding["roleRef"]["kind"] == "Role"
    assert rule_table(role["rules"]) == (
        NAMESPACED_RULES | ROUTER_RULES["istio"] | {("kopf.dev", "kopfpeerings"): READ | {"patch"}}
    )
    # Only Kopf's cluster-scoped scans stay cluster-wide.
    assert rule_table(only(manifests, "ClusterRole")["rules"]) == KOPF_SCANS
    peering = only(manifests, "KopfPeering")
    assert peering["metadata"] == peering["metadata"] | {"name": "rollwise", "namespace": "models"}
    assert not [m for m in manifests if m["kind"] == "ClusterKopfPeering"]
    container = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["ROLLWISE_WATCH_NAMESPACE"] == "models"


def test_rbac_create_false_renders_no_rbac(helm: Path) -> None:
    kinds = {m["kind"] for m in render(helm, {"rbac.create": "false"})}
    assert kinds.isdisjoint({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


def test_pod_runs_under_restricted_pod_security(default_render: list[Manifest]) -> None:
    pod = only(default_render, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # A read-only root needs a writable /tmp, backed by an emptyDir.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_operator_container_runs_the_operator_with_its_settings(default_render: list[Manifest]) -> None:
    deployment = only(default_render, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"] == "rollwise/operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["rollwise-operator"]
    env = env_of(container)
    assert env | {"POD_ID": None, "POD_NAMESPACE": None} == {
        "ROLLWISE_SERVING_IMAGE": "rollwise/serving:0.1.0",
        "ROLLWISE_BATCH_IMAGE": "rollwise/serving:0.1.0-batch",
        "ROLLWISE_PROMETHEUS_URL": "",
        "ROLLWISE_WATCH_NAMESPACE": "",
        "ROLLWISE_METRICS_PORT": "9100",
        "ROLLWISE_LOG_LEVEL": "info",
        "ROLLWISE_PEERING": "rollwise",
        "ROLLWISE_PEERING_LIFETIME_SECONDS": "60",
        "ROLLWISE_RESYNC_SECONDS": "300",
        "ROLLWISE_BATCH_RESYNC_SECONDS": "300",
        "ROLLWISE_ROUTERS": "replicas",
        "ROLLWISE_LIVENESS_ENDPOINT": "http://0.0.0.0:8080/healthz",
        "ROLLWISE_WEBHOOK_ALLOWED_HOSTS": "",
        "ROLLWISE_WEBHOOK_ALLOWED_CIDRS": "",
        "ROLLWISE_WEBHOOK_DENIED_CIDRS": "",
        "ROLLWISE_GUARDRAILS": env["ROLLWISE_GUARDRAILS"],
        "POD_ID": None,
        "POD_NAMESPACE": None,
    }
    # The chart's default guardrails are the operator's own defaults.
    assert from_env({"ROLLWISE_GUARDRAILS": str(env["ROLLWISE_GUARDRAILS"])}).guardrails == Guardrails()
    # Kopf identifies each replica in the peering object by POD_ID.
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9100"


def test_webhook_egress_and_guardrail_values_reach_the_operator_settings(helm: Path) -> None:
    webhooks = {
        "allowedHosts": ["gate.ops"],
        "allowedCIDRs": ["10.20.0.0/16"],
        "deniedCIDRs": ["10.96.0.0/12"],
    }
    rails = {"allowedImages": ["ghcr.io/acme/*"], "allowedPvcs": [], "customQueries": False}
    args = ["--set-json", f"webhooks={json.dumps(webhooks)}", "--set-json", f"guardrails={json.dumps(rails)}"]
    (container,) = only(render(helm, {}, *args), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {k: str(v) for k, v in env_of(container).items() if k.startswith("ROLLWISE_")}
    settings = from_env(env)
    assert settings.webhook_allowed_hosts == {"gate.ops"}
    assert [str(n) for n in settings.webhook_allowed_cidrs] == ["10.20.0.0/16"]
    assert [str(n) for n in settings.webhook_denied_cidrs] == ["10.96.0.0/12"]
    got = settings.guardrails
    assert (got.allowed_images, got.allowed_pvcs, got.custom_queries) == (["ghcr.io/acme/*"], [], False)
    assert got.allowed_env_secrets == ["*"]  # a value not set keeps its default


def test_a_guardrail_value_of_the_wrong_shape_fails_at_install_naming_it(helm: Path) -> None:
    proc = run_helm(helm, "template", "rw", str(CHART), "--set", "guardrails.customQueries=maybe")
    assert proc.returncode != 0
    assert "customQueries" in proc.stderr


def test_values_reach_the_operator_environment(helm: Path) -> None:
    manifests = render(
        helm,
        {
            "replicas": "2",
            "servingImage.repository": "example/server",
            "servingImage.tag": "1.2.3",
            "image.tag": "dev",
            "prometheus.url": "http://prometheus.monitoring.svc:9090",
            "logLevel": "debug",
            "peering.name": "rollwise-blue",
            "peering.lifetimeSeconds": "15",
            "resyncSeconds": "120",
            "batchResyncSeconds": "900",
            "metrics.port": "9200",
        },
    )
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "rollwise/operator:dev"
    env = env_of(container)
    assert env["ROLLWISE_SERVING_IMAGE"] == "example/server:1.2.3"
    assert env["ROLLWISE_BATCH_IMAGE"] == "example/server:1.2.3-batch", (
        "the batch image follows the serving one"
    )
    assert env["ROLLWISE_PROMETHEUS_URL"] == "http://prometheus.monitoring.svc:9090"
    assert env["ROLLWISE_LOG_LEVEL"] == "debug"
    assert env["ROLLWISE_PEERING"] == "rollwise-blue"
    assert env["ROLLWISE_PEERING_LIFETIME_SECONDS"] == "15"
    assert env["ROLLWISE_RESYNC_SECONDS"] == "120"
    assert env["ROLLWISE_BATCH_RESYNC_SECONDS"] == "900"
    assert env["ROLLWISE_METRICS_PORT"] == "9200"
    assert only(manifests, "ClusterKopfPeering")["metadata"]["name"] == "rollwise-blue"
    service = only(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9200, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9200"


def test_metrics_service_selects_the_operator_pods(default_render: list[Manifest]) -> None:
    service = only(default_render, "Service")
    pod_labels = only(default_render, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize(
    ("enabled", "count"),
    [
        pytest.param("false", 0, id="no ServiceMonitor by default"),
        pytest.param("true", 1, id="one ServiceMonitor when enabled"),
    ],
)
def test_service_monitor_only_when_enabled(helm: Path, enabled: str, count: int) -> None:
    manifests = render(helm, {"serviceMonitor.enabled": enabled, "serviceMonitor.labels.release": "kps"})
    monitors = [m for m in manifests if m["kind"] == "ServiceMonitor"]
    assert len(monitors) == count
    if monitors:
        (monitor,) = monitors
        service = only(manifests, "Service")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_digests_pin_both_images(helm: Path) -> None:
    """A build's digest makes the operator pod and every model pod run exactly that build."""
    op, srv = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    manifests = render(helm, {"image.tag": "dev", "image.digest": op, "servingImage.digest": srv})
    (container,) = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"rollwise/operator:dev@{op}"
    assert env_of(container)["ROLLWISE_SERVING_IMAGE"] == f"rollwise/serving:0.1.0@{srv}"
    assert env_of(container)["ROLLWISE_BATCH_IMAGE"] == "rollwise/serving:0.1.0-batch", (
        "not the serving digest"
    )


@pytest.mark.parametrize(
    ("values", "batch_image"),
    [
        pytest.param({}, "rollwise/serving:0.1.0-batch", id="the default: appVersion plus -batch"),
        pytest.param(
            {"batchImage.digest": "sha256:" + "c" * 64},
            "rollwise/serving:0.1.0-batch@sha256:" + "c" * 64,
            id="its own digest pins the batch build",
        ),
        pytest.param(
            {"batchImage.repository": "reg.io/scorer", "batchImage.tag": "7.1"},
            "reg.io/scorer:7.1",
            id="a repository and tag of its own",
        ),
        pytest.param(
            {"batchImage.tag": "0.1.0-batch-xgboost"}, "rollwise/serving:0.1.0-batch-xgboost", id="a tag"
        ),
    ],
)
def test_the_batch_image_reaches_the_operator(helm: Path, values: dict[str, str], batch_image: str) -> None:
    (container,) = only(render(helm, values), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {k: str(v) for k, v in env_of(container).items() if k.startswith("ROLLWISE_")}
    assert env["ROLLWISE_BATCH_IMAGE"] == batch_image
    assert from_env(env).batch_image == batch_image


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"image.digest": "a" * 64},
            "at '/image/digest'",
            id="a digest without its algorithm",
        ),
        pytest.param(
            {"servingImage.digest": "sha256:abc"},
            "at '/servingImage/digest'",
            id="a short digest",
        ),
        pytest.param(
            {"batchImage.repository": "Scorer"},
            "at '/batchImage/repository'",
            id="a batch repository with capitals",
        ),
        pytest.param(
            {"replicas": "two"}, "at '/replicas': got string, want integer", id="replicas as a word"
        ),
        pytest.param({"replicas": "0"}, "at '/replicas': minimum: got 0, want 1", id="zero replicas"),
        pytest.param(
            {"logLevel": "verbose"},
            "at '/logLevel': value must be one of 'debug', 'info', 'warning', 'error'",
            id="unknown log level",
        ),
        pytest.param(
            {"image.pullPolicy": "Sometimes"},
            "at '/image/pullPolicy': value must be one of 'IfNotPresent', 'Never', 'Always'",
            id="unknown pull policy",
        ),
        pytest.param({"replica": "2"}, "additional properties 'replica' not allowed", id="misspelt key"),
        pytest.param(
            {"peering.lifetimeSeconds": "1"},
            "at '/peering/lifetimeSeconds': minimum: got 1, want 5",
            id="a peering lifetime shorter than a keep-alive round trip",
        ),
        pytest.param(
            {"batchResyncSeconds": "1"},
            "at '/batchResyncSeconds': minimum: got 1, want 5",
            id="a batch resync shorter than the operator allows",
        ),
        pytest.param({"prometheus.url": "prometheus:9090"}, "at '/prometheus/url'", id="url without scheme"),
        pytest.param({"watchNamespace": "Models_NS"}, "at '/watchNamespace'", id="namespace not a DNS label"),
        pytest.param(
            {"metrics.port": "70000"}, "at '/metrics/port': maximum: got 70,000, want 65,535", id="port"
        ),
        pytest.param(
            {"serviceMonitor.enabled": "yes"},
            "at '/serviceMonitor/enabled': got string, want boolean",
            id="yes",
        ),
        pytest.param(
            {"serviceAccount.create": "false"},
            "serviceAccount.name: set it to an existing ServiceAccount when serviceAccount.create is false",
            id="no account to run as",
        ),
    ],
)
def test_bad_values_fail_naming_the_value(helm: Path, values: dict[str, str], message: str) -> None:
    proc = run_helm(helm, "template", "rw", str(CHART), *set_args(values))
    assert proc.returncode != 0, f"helm accepted {values}"
    assert message in proc.stderr, proc.stderr


def test_chart_refuses_clusters_older_than_1_30(helm: Path) -> None:
    proc = run_helm(helm, "template", "rw", str(CHART), "--kube-version", "1.29.4")
    assert proc.returncode != 0
    assert "kubeVersion: >=1.30.0-0" in proc.stderr, proc.stderr


def test_chart_crds_equal_the_generated_crds() -> None:
    """The chart ships the generated CRDs byte for byte; `charts/sync-crds.sh` copies them."""
    proc = subprocess.run(["bash", str(SYNC_CRDS), "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_rbac_names_the_generated_custom_resource(default_render: list[Manifest]) -> None:
    crds = [
        doc
        for f in sorted((REPO / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(f.read_text())
        if doc
    ]
    ours = [
        c
        for c in crds
        if c.get("kind") == "CustomResourceDefinition" and c["spec"]["names"]["kind"] == "ModelDeployment"
    ]
    assert len(ours) == 1, "crds/ has no ModelDeployment CRD: run `.venv/bin/python -m rollwise.api.crdgen`"
    group, plural = ours[0]["spec"]["group"], ours[0]["spec"]["names"]["plural"]
    table = rule_table(only(default_render, "ClusterRole")["rules"])
    assert (group, plural) in table and (group, f"{plural}/status") in table


def test_peering_crds_match_what_kopf_looks_for() -> None:
    crds = {
        doc["spec"]["names"]["plural"]: doc for doc in yaml.safe_load_all(PEERING_CRDS.read_text()) if doc
    }
    # Kopf's own selectors for the peering resources it reads and patches.
    for selector, scope in [
        (kopf_references.CLUSTER_PEERINGS_K, "Cluster"),
        (kopf_references.NAMESPACED_PEERINGS_K, "Namespaced"),
    ]:
        crd = crds.pop(selector.any_name)
        assert crd["metadata"]["name"] == f"{selector.any_name}.{selector.group}"
        assert crd["spec"]["group"] == selector.group
        assert crd["spec"]["scope"] == scope
        (version,) = crd["spec"]["versions"]
        assert version["name"] == selector.version and version["served"] and version["storage"]
        # Kopf writes peers into `status` of the main resource: a status subresource would drop it.
        assert "subresources" not in version
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert not crds, f"unexpected CRDs in {PEERING_CRDS.name}: {sorted(crds)}"

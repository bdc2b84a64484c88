"""The gatewayAPI, istio and nginx routers against the real API server and the providers' own CRDs
(issue 5): the Gateway API and Istio CRDs come from their release modules (`e2e/upstream_crds.py`,
installed by the `crds` fixture), so every HTTPRoute and VirtualService the operator writes is
judged by the upstream schemas and CEL rules; an Ingress by Kubernetes' own validation.

Each test applies a router example from `examples/` (the user's route object and a
ModelDeployment on simulated kwok nodes), starts a rollout by changing the model version, and at
every step asserts on the live objects: what the operator wrote (weights, matches, mirroring),
that the API server took it (it is stored, with our field manager, and no write of ours in the
namespace was refused), and that the operator read it back (a step past a setWeight is only
entered once the router reads that weight from the live object). Resume, promote and abort are
driven by the `rollwise.dev/action` annotation, as a user or the kubectl plugin would.

These tests prove that the objects are valid for their providers' APIs and round-trip through the
operator; that a proxy routes by them is proven for Gateway API with Traefik in
`test_gateway_traffic.py` (no mesh or ingress-nginx controller runs here).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import cluster as local_cluster
from e2e import paths
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import (
    OPERATOR_USER,
    Operator,
    audit_offset,
    audit_writes,
    kubectl,
    on_kwok,
    start_operator,
)
from tests.integration.test_operator import get_md

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]

EXAMPLES = paths.REPO / "examples"
CANARY_EXAMPLE = {
    "gatewayAPI": "canary-gateway-api.yaml",
    "istio": "canary-istio.yaml",
    "nginx": "canary-nginx.yaml",
}
ROUTERS = list(CANARY_EXAMPLE)
FIELD_MANAGER = "rollwise"
APPLIED_HASH = "rollwise.dev/applied-hash"
NGINX = "nginx.ingress.kubernetes.io/"
STEP_TIMEOUT = 60


# ---------------------------------------------------------------------------------------------
# Given: an example applied


@dataclass
class Example:
    md: dict[str, Any]
    user: dict[str, Any]
    """The user's own route object: HTTPRoute, VirtualService or Ingress."""

    @property
    def name(self) -> str:
        return str(self.md["metadata"]["name"])

    @property
    def router(self) -> str:
        return str(self.md["spec"]["rollout"]["traffic"]["provider"])


def example(file: str) -> Example:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / file).read_text()) if d]
    (md,) = [d for d in docs if d["kind"] == "ModelDeployment"]
    (user,) = [d for d in docs if d["kind"] != "ModelDeployment"]
    md["spec"]["runtime"] = on_kwok(md["spec"].get("runtime"))
    return Example(md, user)


def apply_doc(namespace: str, body: dict[str, Any]) -> None:
    proc = kubectl(
        "-n", namespace, "apply", "--server-side", "--field-manager=test-user", "-f", "-",
        stdin=json.dumps(body), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"kubectl apply {body['kind']} failed: {proc.stderr}"


def deploy(cluster: Cluster, namespace: str, ex: Example) -> None:
    """The user's route, then the ModelDeployment; wait until it is Healthy."""
    apply_doc(namespace, ex.user)
    apply_doc(namespace, ex.md)
    wait_status(cluster, namespace, ex.name, "Healthy", lambda s: s.get("phase") == "Healthy")


def set_version(namespace: str, ex: Example, version: str) -> None:
    ex.md["spec"]["model"]["version"] = version
    apply_doc(namespace, ex.md)


def act(namespace: str, name: str, verb: str) -> None:
    """What a user (or the kubectl plugin) does: the action annotation with a fresh nonce."""
    kubectl(
        "-n", namespace, "annotate", "modeldeployment", name, "--overwrite",
        f"rollwise.dev/action={verb}:{time.time_ns()}",
    )  # fmt: skip


def wait_status(
    cluster: Cluster, namespace: str, name: str, what: str, ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Wait for the ModelDeployment's status to satisfy `ok`; on timeout show status and events."""
    try:
        return wait_until(
            f"{name}: {what}",
            lambda: (s := get_md(cluster, namespace, name).get("status") or {}) and ok(s) and s,
            STEP_TIMEOUT,
        )
    except AssertionError as err:
        status = get_md(cluster, namespace, name).get("status")
        events = kubectl("-n", namespace, "get", "events", "-o", "json").stdout
        notes = [f"{e.get('reason')}: {e.get('message')}" for e in json.loads(events)["items"]]
        raise AssertionError(f"{err}\nstatus: {json.dumps(status)[:3000]}\nevents: {notes[-12:]}") from None


def at_step(step: int, phase: str, weight: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("currentStep") == step and s.get("phase") == phase and s.get("weight") == weight


def live(namespace: str, kind: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        kubectl("-n", namespace, "get", kind, name, "-o", "json", "--show-managed-fields").stdout
    )
    return obj


# ---------------------------------------------------------------------------------------------
# Then: what the live provider objects route, read here independently of the routers' own code


@dataclass(frozen=True)
class Traffic:
    """The routing the live objects express for one ModelDeployment."""

    weights: tuple[int, int]
    """(stable, candidate) as written on the object."""
    matches: frozenset[str]
    """Each request match sending traffic to the candidate, as `header <name> <how> <value>`."""
    mirror: bool
    """Live traffic is copied to the candidate."""
    objects: tuple[dict[str, Any], ...]
    """The objects read, for the API-server checks."""


def gateway_traffic(namespace: str, ex: Example) -> Traffic:
    route = live(namespace, "httproute", ex.user["metadata"]["name"])
    stable, candidate = f"{ex.name}-stable", f"{ex.name}-candidate"
    user_rule = ex.user["spec"]["rules"][0]
    rules = route["spec"]["rules"]
    weighted = [r for r in rules if {b["name"] for b in r["backendRefs"]} == {stable, candidate}]
    assert len(weighted) == 1, rules
    (main,) = weighted
    # Defaulted by the upstream schema: proof the API server processed our rule, not just stored it.
    assert [(b["group"], b["kind"], b["name"], b["port"]) for b in main["backendRefs"]] == [
        ("", "Service", stable, 80),
        ("", "Service", candidate, 80),
    ]
    assert main["matches"] == user_rule["matches"], "the user's path match must be kept"
    weights = (main["backendRefs"][0]["weight"], main["backendRefs"][1]["weight"])
    matches: set[str] = set()
    for rule in rules:
        if [b["name"] for b in rule["backendRefs"]] != [candidate]:
            continue
        assert rules.index(rule) < rules.index(main), "match rules must come before the weighted rule"
        for m in rule["matches"]:
            assert m["path"] == user_rule["matches"][0]["path"], "a match rule keeps the user's path"
            for h in m["headers"]:
                matches.add(f"header {h['name']} {h['type']} {h['value']}")
    mirrors = [
        f["requestMirror"]["backendRef"] for f in main.get("filters", []) if f["type"] == "RequestMirror"
    ]
    assert mirrors in ([], [{"group": "", "kind": "Service", "name": candidate, "port": 80}]), mirrors
    return Traffic(weights, frozenset(matches), bool(mirrors), (route,))


def istio_traffic(namespace: str, ex: Example) -> Traffic:
    vs = live(namespace, "virtualservice", ex.user["metadata"]["name"])
    fqdn = f"{ex.name}-{{}}.{namespace}.svc.cluster.local"
    stable, candidate = fqdn.format("stable"), fqdn.format("candidate")
    http = vs["spec"]["http"]
    (main,) = [r for r in http if r.get("name") == "infer"]
    assert [d["destination"]["host"] for d in main["route"]] == [stable, candidate]
    weights = (main["route"][0]["weight"], main["route"][1]["weight"])
    matches: set[str] = set()
    ours = [r for r in http if r.get("name", "").startswith(f"rollwise-{ex.name}-candidate-")]
    for r in ours:
        assert http.index(r) < http.index(main), "match routes must come before the weighted route"
        assert r["route"] == [{"destination": {"host": candidate}}]
        for m in r["match"]:
            for header, how in m["headers"].items():
                ((kind, value),) = how.items()
                matches.add(f"header {header} {kind} {value}")
    mirror = main.get("mirror")
    assert mirror in (None, {"host": candidate}), mirror
    if mirror:
        assert main["mirrorPercentage"] == {"value": 100}
    return Traffic(weights, frozenset(matches), mirror is not None, (vs,))


def nginx_traffic(namespace: str, ex: Example) -> Traffic:
    main = live(namespace, "ingress", ex.user["metadata"]["name"])
    canary = live(namespace, "ingress", f"{ex.name}-candidate")
    a = canary["metadata"]["annotations"]
    assert a[NGINX + "canary"] == "true" and a[NGINX + "canary-weight-total"] == "100"
    assert canary["spec"]["ingressClassName"] == ex.user["spec"]["ingressClassName"]
    user_rule, (rule,) = ex.user["spec"]["rules"][0], canary["spec"]["rules"]
    assert rule["host"] == user_rule["host"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == user_rule["http"]["paths"][0]["path"]
    assert path["backend"] == {"service": {"name": f"{ex.name}-candidate", "port": {"number": 80}}}
    assert canary["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    weight = int(a[NGINX + "canary-weight"])
    matches: set[str] = set()
    if NGINX + "canary-by-header" in a:
        value = a.get(NGINX + "canary-by-header-value") or a[NGINX + "canary-by-header-pattern"]
        kind = "value" if NGINX + "canary-by-header-value" in a else "pattern"
        matches.add(f"header {a[NGINX + 'canary-by-header']} {kind} {value}")
    if NGINX + "canary-by-cookie" in a:
        matches.add(f"cookie {a[NGINX + 'canary-by-cookie']}")
    target = (main["metadata"].get("annotations") or {}).get(NGINX + "mirror-target")
    expected = f"http://{ex.name}-candidate.{namespace}.svc.cluster.local$request_uri"
    assert target in (None, expected), target
    assert main["spec"]["rules"] == ex.user["spec"]["rules"], "the user's Ingress rules are not ours to edit"
    return Traffic((100 - weight, weight), frozenset(matches), target is not None, (canary, main))


TRAFFIC: dict[str, Callable[[str, Example], Traffic]] = {
    "gatewayAPI": gateway_traffic,
    "istio": istio_traffic,
    "nginx": nginx_traffic,
}


def traffic(namespace: str, ex: Example) -> Traffic:
    """What the live objects route; every one of them stored through our field manager."""
    seen = TRAFFIC[ex.router](namespace, ex)
    for obj in seen.objects:
        managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
        assert FIELD_MANAGER in managers, (obj["metadata"]["name"], managers)
        assert APPLIED_HASH in obj["metadata"]["annotations"]
    return seen


def wait_traffic(namespace: str, ex: Example, what: str, ok: Callable[[Traffic], bool]) -> Traffic:
    return wait_until(
        f"{ex.user['kind']} {what}", lambda: (t := traffic(namespace, ex)) and ok(t) and t, STEP_TIMEOUT
    )


def no_refused_writes(namespace: str, since: int) -> None:
    """The API server accepted every write the operator made in this namespace."""
    refused = [
        (w["verb"], w["objectRef"].get("resource"), w["responseStatus"].get("message", ""))
        for w in audit_writes(OPERATOR_USER, since, namespace)
        if w.get("responseStatus", {}).get("code", 200) >= 400
    ]
    assert refused == [], refused


def candidate_replicas(cluster: Cluster, namespace: str, ex: Example) -> int:
    dep = cluster.apps.read_namespaced_deployment(f"{ex.name}-candidate", namespace)
    return int(dep.spec.replicas or 0)


AT_REST = (100, 0)


# ---------------------------------------------------------------------------------------------
# Canary: weights at each step, resume, promotion, abort


@pytest.mark.parametrize("router", ROUTERS)
def test_a_canary_moves_the_weights_step_by_step_and_abort_returns_all_to_stable(
    cluster: Cluster, operator: Operator, namespace: str, router: str
) -> None:
    ex = example(CANARY_EXAMPLE[router])
    since = audit_offset()
    deploy(cluster, namespace, ex)
    # Between rollouts the route keeps its two-backend shape, all on stable.
    wait_traffic(namespace, ex, "at rest (100/0)", lambda t: t.weights == AT_REST and not t.mirror)

    set_version(namespace, ex, "2.0.0")
    wait_status(cluster, namespace, ex.name, "paused at 10 %", at_step(1, "Paused", 10))
    # The pause step is entered only once the router read 10 % back from the live object.
    assert traffic(namespace, ex).weights == (90, 10)

    act(namespace, ex.name, "resume")
    wait_status(cluster, namespace, ex.name, "paused at 50 %", at_step(3, "Paused", 50))
    assert traffic(namespace, ex).weights == (50, 50)
    # Paused, nothing changes: the operator writes nothing (its render of the live route is stable).
    time.sleep(2)
    quiet = audit_offset()
    time.sleep(11)  # resync is 5 s in tests: at least two passes over the live route
    writes = audit_writes(OPERATOR_USER, quiet, namespace)
    assert writes == [], [(w["verb"], w["objectRef"]) for w in writes]

    act(namespace, ex.name, "resume")  # past the last step: promotion
    md = wait_status(
        cluster, namespace, ex.name, "2.0.0 promoted",
        lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "2.0.0",
    )  # fmt: skip
    assert md["history"][0]["outcome"] == "Promoted"
    assert traffic(namespace, ex).weights == AT_REST

    set_version(namespace, ex, "3.0.0")
    wait_status(cluster, namespace, ex.name, "3.0.0 paused at 10 %", at_step(1, "Paused", 10))
    assert traffic(namespace, ex).weights == (90, 10)
    act(namespace, ex.name, "abort")
    md = wait_status(cluster, namespace, ex.name, "rolled back", lambda s: s.get("phase") == "RolledBack")
    assert md["weight"] == 0 and md["stableVersion"] == "2.0.0"
    assert traffic(namespace, ex).weights == AT_REST
    wait_until("the candidate at 0 replicas", lambda: candidate_replicas(cluster, namespace, ex) == 0, 30)
    no_refused_writes(namespace, since)


# ---------------------------------------------------------------------------------------------
# A/B by header and cookie: match rules, then promotion removes them


AB_MATCHES: dict[str, tuple[list[dict[str, Any]], frozenset[str]]] = {
    "gatewayAPI": (
        [{"header": {"name": "x-model-variant", "value": "b"}}, {"cookie": {"name": "beta", "value": "1"}}],
        frozenset(
            {
                "header x-model-variant Exact b",
                r"header Cookie RegularExpression (^|;\s*)beta=1(;|$)",
            }
        ),
    ),
    "istio": (
        [{"header": {"name": "X-Model-Variant", "regex": "b|c"}}, {"cookie": {"name": "beta", "value": "1"}}],
        frozenset({"header x-model-variant regex b|c", r"header cookie regex ^(.*?;)?(?:\s*)?beta=1(;.*)?$"}),
    ),
    "nginx": (
        [
            {"header": {"name": "x-model-variant", "value": "b"}},
            {"cookie": {"name": "beta", "value": "always"}},
        ],
        frozenset({"header x-model-variant value b", "cookie beta"}),
    ),
}


@pytest.mark.parametrize("router", ROUTERS)
def test_an_ab_test_routes_header_and_cookie_matches_to_the_candidate_until_promoted(
    cluster: Cluster, operator: Operator, namespace: str, router: str
) -> None:
    file = "ab-test-gateway-api.yaml" if router == "gatewayAPI" else CANARY_EXAMPLE[router]
    ex = example(file)
    match, expected = AB_MATCHES[router]
    traffic_block = ex.md["spec"]["rollout"]["traffic"]
    ex.md["spec"]["rollout"] = {"abTest": {"match": match}, "traffic": traffic_block}
    since = audit_offset()
    deploy(cluster, namespace, ex)
    wait_traffic(namespace, ex, "at rest", lambda t: t.weights == AT_REST and not t.matches)

    set_version(namespace, ex, "2.0.0")
    wait_status(cluster, namespace, ex.name, "A/B running (paused)", at_step(1, "Paused", 0))
    seen = traffic(namespace, ex)
    assert seen.matches == expected
    assert seen.weights == AT_REST and not seen.mirror  # everyone else stays on stable

    act(namespace, ex.name, "promote")
    wait_status(
        cluster, namespace, ex.name, "2.0.0 promoted",
        lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "2.0.0",
    )  # fmt: skip
    seen = traffic(namespace, ex)
    assert seen.matches == frozenset() and seen.weights == AT_REST
    no_refused_writes(namespace, since)


def stable_args(cluster: Cluster, namespace: str, ex: Example) -> list[str]:
    dep = cluster.apps.read_namespaced_deployment(f"{ex.name}-stable", namespace)
    return list(dep.spec.template.spec.containers[0].args or [])


@pytest.mark.parametrize("router", ROUTERS)
def test_a_user_hash_split_runs_behind_the_route_through_the_stable_pods(
    cluster: Cluster, operator: Operator, namespace: str, router: str
) -> None:
    """Sticky user-hash A/B is the serving image's own forwarding, the same behind every router: the
    route keeps all traffic on stable, whose pods forward 20 of 100 hash buckets to the candidate."""
    ex = example(CANARY_EXAMPLE[router])
    traffic_block = ex.md["spec"]["rollout"]["traffic"]
    user_hash = {"header": "x-user-id", "weight": 20}
    ex.md["spec"]["rollout"] = {"abTest": {"userHash": user_hash}, "traffic": traffic_block}
    since = audit_offset()
    deploy(cluster, namespace, ex)
    wait_traffic(namespace, ex, "at rest", lambda t: t.weights == AT_REST)

    set_version(namespace, ex, "2.0.0")
    wait_status(cluster, namespace, ex.name, "users split 80/20 (paused)", at_step(1, "Paused", 20))
    args = stable_args(cluster, namespace, ex)
    forward = f"http://{ex.name}-candidate.{namespace}.svc.cluster.local"
    assert args[args.index("--hash-header") :][:6] == [
        "--hash-header", "x-user-id", "--hash-range", "0-19", "--forward-url", forward,
    ]  # fmt: skip
    seen = traffic(namespace, ex)
    assert seen.weights == AT_REST and not seen.matches and not seen.mirror

    act(namespace, ex.name, "abort")
    wait_status(cluster, namespace, ex.name, "rolled back", lambda s: s.get("phase") == "RolledBack")
    assert "--hash-header" not in stable_args(cluster, namespace, ex)
    assert traffic(namespace, ex).weights == AT_REST
    no_refused_writes(namespace, since)


# ---------------------------------------------------------------------------------------------
# Shadow: mirroring on, then abort takes it off


@pytest.mark.parametrize("router", ROUTERS)
def test_a_shadow_mirrors_to_the_candidate_and_abort_stops_the_mirror(
    cluster: Cluster, operator: Operator, namespace: str, router: str
) -> None:
    ex = example("shadow-istio.yaml" if router == "istio" else CANARY_EXAMPLE[router])
    traffic_block = ex.md["spec"]["rollout"]["traffic"]
    ex.md["spec"]["rollout"] = {"shadow": {}, "traffic": traffic_block}
    since = audit_offset()
    deploy(cluster, namespace, ex)
    wait_traffic(namespace, ex, "at rest", lambda t: t.weights == AT_REST and not t.mirror)

    set_version(namespace, ex, "2.0.0")
    wait_status(cluster, namespace, ex.name, "shadow running (paused)", at_step(1, "Paused", 0))
    seen = traffic(namespace, ex)
    assert seen.mirror and seen.weights == AT_REST and not seen.matches  # clients only see stable

    act(namespace, ex.name, "abort")
    md = wait_status(cluster, namespace, ex.name, "rolled back", lambda s: s.get("phase") == "RolledBack")
    assert md["stableVersion"] == "1.0.0"
    seen = traffic(namespace, ex)
    assert not seen.mirror and seen.weights == AT_REST
    no_refused_writes(namespace, since)


# ---------------------------------------------------------------------------------------------
# gatewayAPI: a route its gateway rejects holds the step


def set_route_status(namespace: str, route: str, *, accepted: bool) -> None:
    """Write what a gateway controller would on the route's status (validated by the upstream
    schema's status subresource)."""
    condition = {
        "type": "Accepted",
        "status": "True" if accepted else "False",
        "reason": "Accepted" if accepted else "NotAllowedByListeners",
        "message": "" if accepted else "no listener of Gateway models accepts models.example.com",
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    parent = {
        "parentRef": {"name": "models"},
        "controllerName": "example.com/gateway",
        "conditions": [condition],
    }
    kubectl(
        "-n", namespace, "patch", "httproute", route, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"parents": [parent]}}),
    )  # fmt: skip


def test_a_canary_step_waits_while_the_gateway_rejects_the_route(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    ex = example(CANARY_EXAMPLE["gatewayAPI"])
    route = ex.user["metadata"]["name"]
    deploy(cluster, namespace, ex)
    wait_traffic(namespace, ex, "at rest", lambda t: t.weights == AT_REST)
    set_route_status(namespace, route, accepted=False)

    set_version(namespace, ex, "2.0.0")
    wait_traffic(namespace, ex, "at 10 %", lambda t: t.weights == (90, 10))
    time.sleep(11)  # two resyncs: the operator reads the rejection and does not move on
    status = get_md(cluster, namespace, ex.name)["status"]
    assert (status["phase"], status["currentStep"]) == ("Progressing", 0), status

    set_route_status(namespace, route, accepted=True)  # the gateway takes the route
    wait_status(cluster, namespace, ex.name, "paused at 10 %", at_step(1, "Paused", 10))


# ---------------------------------------------------------------------------------------------
# The chart's RBAC is enough for each router on its own


RBAC_USER = "rollwise-operator-rbac-test"


def chart_cluster_role(router: str) -> list[dict[str, Any]]:
    """The ClusterRole rules `helm template` renders with only this router enabled."""
    proc = subprocess.run(
        [
            str(paths.HELM), "template", "rw", str(paths.REPO / "charts" / "rollwise"),
            "--namespace", "rollwise-system", "--set", f"routers.{router}.enabled=true",
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (role,) = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "ClusterRole"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


@pytest.mark.parametrize("router", ROUTERS)
def test_the_charts_rbac_for_a_router_is_enough_to_walk_its_canary(
    cluster: Cluster, operator: Operator, namespace: str, router: str, tmp_path: Path
) -> None:
    role = f"{namespace}-rbac"
    kubectl(
        "apply", "--server-side", "-f", "-",
        stdin=json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": role}, "rules": chart_cluster_role(router)},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": role},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RBAC_USER}]},
            ],
        }),
    )  # fmt: skip
    try:
        kubeconfig = local_cluster.user_kubeconfig(RBAC_USER)  # no group: only the chart's role
        ex = example(CANARY_EXAMPLE[router])
        with operator.paused(tmp_path):
            limited = start_operator(tmp_path, kubeconfig, routers=f"replicas,{router}")
            try:
                deploy(cluster, namespace, ex)
                wait_traffic(namespace, ex, "at rest (100/0)", lambda t: t.weights == AT_REST)
                set_version(namespace, ex, "2.0.0")
                wait_status(cluster, namespace, ex.name, "paused at 10 %", at_step(1, "Paused", 10))
                assert traffic(namespace, ex).weights == (90, 10)
                act(namespace, ex.name, "abort")
                wait_status(
                    cluster, namespace, ex.name, "rolled back", lambda s: s.get("phase") == "RolledBack"
                )
                assert traffic(namespace, ex).weights == AT_REST
                denied = [
                    line
                    for line in limited.log.read_text(errors="replace").splitlines()
                    if f'User "{RBAC_USER}" cannot' in line
                ]
                assert denied == [], denied[:5]
                assert limited.alive(), limited.log_tail()
            finally:
                limited.stop()
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found", check=False)

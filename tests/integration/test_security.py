"""Safe on a shared cluster (issue 16), each attack on the real cluster: a ModelDeployment never
takes over an object it did not create, one tenant's webhooks cannot stall the others or read
inside the cluster, payloads carry no secret, and the administrator's guardrails hold."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from e2e import components
from tests.conftest import NAMESPACE_PREFIX, Cluster, create_test_namespace, wait_until
from tests.integration.conftest import WEBHOOK_HOST, Operator, kubectl
from tests.integration.test_operator import apply, get_md, manifest, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]


def test_a_model_deployment_named_like_an_existing_service_does_not_take_it_over(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    """Before: a ModelDeployment `checkout` force-applied its Service over the shop's Service
    `checkout` (selector replaced, Rollwise added as owner, so deleting the ModelDeployment would
    have garbage-collected the shop's Service). Now the spec is Invalid naming the Service and the
    fix, and nothing is written: the victim is unchanged and no child is created."""
    victim = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app": "shop"}},
        "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(victim))
    before = cluster.core.read_namespaced_service("checkout", namespace)
    assert apply(namespace, manifest("checkout")).returncode == 0

    def refused() -> bool:
        status = get_md(cluster, namespace, "checkout").get("status", {})
        return status.get("phase") == "Invalid"

    wait_until("the ModelDeployment refused as Invalid", refused, 60)
    status = get_md(cluster, namespace, "checkout")["status"]
    assert f"Service {namespace}/checkout already exists (no controller)" in status["message"], status
    assert "rename the ModelDeployment or remove that Service" in status["message"]
    after = cluster.core.read_namespaced_service("checkout", namespace)
    assert after.spec.selector == {"app": "shop"} and not after.metadata.owner_references
    assert after.metadata.resource_version == before.metadata.resource_version  # not even touched
    deployments = client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items
    assert [d.metadata.name for d in deployments] == []
    events = cluster.core.list_namespaced_event(namespace).items
    assert any(e.reason == "InvalidSpec" and "checkout already exists" in (e.message or "") for e in events)


# Outbound calls --------------------------------------------------------------------------------


class Hooks:
    """HTTP servers on WEBHOOK_HOST in threads: a tarpit, a 2 GB answer, a quick 200 that records
    what it was sent. Each counts its calls."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.payloads: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._servers: list[ThreadingHTTPServer] = []
        self.urls = {kind: self._start(kind) for kind in ("tarpit", "huge", "quick")}

    def _start(self, kind: str) -> str:
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                hooks.calls[kind] = hooks.calls.get(kind, 0) + 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if kind == "quick":
                        hooks.payloads.append(json.loads(body))
                        self.send_response(200)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif kind == "huge":
                        self.send_response(200)
                        self.send_header("Content-Length", str(2 * 1024**3))
                        self.end_headers()
                        chunk = b"x" * 65536
                        for _ in range(32768):
                            if hooks._stop.is_set():
                                return
                            self.wfile.write(chunk)
                    else:  # a byte a second, never a whole status line
                        for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                            if hooks._stop.wait(1.0):
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                except OSError:
                    return  # the operator hung up: what a bounded call does

        server = ThreadingHTTPServer((WEBHOOK_HOST, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers.append(server)
        return f"http://{WEBHOOK_HOST}:{server.server_address[1]}/hook"

    def close(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.close()


def rollout(webhooks: list[dict[str, Any]], steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "canary": {"steps": steps or [{"setWeight": 20}, {"pause": {"durationSeconds": 5}}]},
        "traffic": {"provider": "replicas"},
        "webhooks": webhooks,
    }


def canary_md(name: str, webhooks: list[dict[str, Any]], **rollout_kw: Any) -> dict[str, Any]:
    md = manifest(name, runtime={"replicas": 1})
    md["spec"]["rollout"] = rollout(webhooks, **rollout_kw)
    return md


def new_version(md: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(md))
    out["spec"]["model"]["version"] = "2.0.0"
    return out


def test_one_tenants_tarpit_and_2gb_webhooks_do_not_stall_anyone_elses_rollouts(
    cluster: Cluster, operator: Operator, namespace: str, request: pytest.FixtureRequest, hooks: Hooks
) -> None:
    """Before: webhooks ran on the 32 worker threads every write shares, read with a per-read
    timeout: 8 ModelDeployments with 4 step webhooks each at a tarpit (a byte a second) held all 32
    threads for as long as the tarpit lasted, and nothing reconciled anywhere; a 2 GB answer was
    read whole. Now webhooks run on the loop with one deadline, 4 at once per namespace, and the
    body is never read: 20 rollouts in another namespace step on time meanwhile."""
    noisy = namespace
    quiet = create_test_namespace(cluster, request, f"{NAMESPACE_PREFIX}-quiet-", 20)
    try:
        tarpit = [
            {"name": f"slow{i}", "type": "step", "url": hooks.urls["tarpit"], "timeoutSeconds": 300}
            for i in range(4)
        ]
        noisy_mds = [canary_md(f"noisy{i}", tarpit) for i in range(8)]
        hoarder = canary_md("hoarder", [{"name": "big", "type": "preRollout", "url": hooks.urls["huge"]}])
        quiet_mds = [canary_md(f"q{i}", []) for i in range(20)]
        for md in [*noisy_mds, hoarder]:
            assert apply(noisy, md).returncode == 0
        for md in quiet_mds:
            assert apply(quiet, md).returncode == 0
        for md in [*noisy_mds, hoarder]:
            wait_healthy(cluster, noisy, md["metadata"]["name"], 120)
        for md in quiet_mds:
            wait_healthy(cluster, quiet, md["metadata"]["name"], 120)
        # A 2 GB answer opens its gate at once: only the status line is read.
        assert apply(noisy, new_version(hoarder)).returncode == 0

        def past_the_gate() -> bool:
            status = get_md(cluster, noisy, "hoarder").get("status", {})
            return status.get("currentStep") is not None or status.get("stableVersion") == "2.0.0"

        wait_until("the 2 GB webhook's gate passed", past_the_gate, 60)
        assert operator.alive()
        # The noisy tenant's rollouts start and hang on their gates...
        for md in noisy_mds:
            assert apply(noisy, new_version(md)).returncode == 0
        wait_until("the tarpit holding calls", lambda: hooks.calls.get("tarpit", 0) >= 4, 60)
        # ...while the quiet namespace's 20 rollouts run.
        started = time.monotonic()
        for md in quiet_mds:
            assert apply(quiet, new_version(md)).returncode == 0

        def promoted() -> bool:
            return all(
                get_md(cluster, quiet, md["metadata"]["name"]).get("status", {}).get("stableVersion")
                == "2.0.0"
                for md in quiet_mds
            )

        wait_until("all 20 quiet rollouts promoted", promoted, 120)
        took = time.monotonic() - started
        print(f"\n20 rollouts (one 5 s pause each) promoted in {took:.1f} s beside the tarpit")
        assert operator.alive()
        # The noisy namespace never had more than its share in flight.
        assert hooks.calls.get("tarpit", 0) == 4, hooks.calls
        status = get_md(cluster, noisy, "noisy0")["status"]
        assert status.get("phase") in ("Progressing", "Paused", "RolledBack"), status
    finally:
        kubectl("-n", quiet, "delete", "modeldeployments", "--all", "--timeout=60s", check=False)
        cluster.core.delete_namespace(quiet)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1:{api}/api/v1/secrets", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "a link-local address"),
    ],
    ids=["the API server", "cloud metadata"],
)
def test_a_webhook_aimed_inside_is_refused_and_the_stable_serves_on(
    cluster: Cluster, operator: Operator, namespace: str, url: str, why: str
) -> None:
    """Before: any URL was called and 200 characters of its reply went into status and Events
    (a read-back SSRF). Now the address is refused before connecting; the preRollout gate fails,
    the candidate is rolled back and the stable keeps serving."""
    target = url.format(api=components.APISERVER_PORT)
    md = canary_md("iris", [{"name": "peek", "type": "preRollout", "url": target}])
    assert apply(namespace, md).returncode == 0
    wait_healthy(cluster, namespace, "iris", 120)
    assert apply(namespace, new_version(md)).returncode == 0

    def rolled_back() -> dict[str, Any] | None:
        status: dict[str, Any] = get_md(cluster, namespace, "iris").get("status", {})
        return status if status.get("phase") == "RolledBack" else None

    status = wait_until("the rollout refused and rolled back", rolled_back, 90)
    assert "webhook peek (preRollout) refused: refused: " in status["message"], status["message"]
    assert why in status["message"] and "webhooks.allowedCIDRs" in status["message"]
    assert status["stableVersion"] == "1.0.0"
    stable = client.AppsV1Api(cluster.api).read_namespaced_deployment("iris-stable", namespace)
    assert stable.status.ready_replicas == 1


def test_a_webhook_payload_carries_no_env_value_nor_uri_credentials(
    cluster: Cluster, operator: Operator, namespace: str, hooks: Hooks
) -> None:
    md = canary_md("iris", [{"name": "audit", "type": "preRollout", "url": hooks.urls["quick"]}])
    md["spec"]["runtime"]["env"] = [{"name": "API_KEY", "value": "s3cr3t-value"}]
    md["spec"]["model"]["uri"] = "https://reader:hunter2@models.rollwise-system.svc/iris-v1.joblib?sig=abc"
    assert apply(namespace, md).returncode == 0
    wait_healthy(cluster, namespace, "iris", 120)
    assert apply(namespace, new_version(md)).returncode == 0
    wait_until("the preRollout webhook called", lambda: hooks.payloads, 60)
    sent = json.dumps(hooks.payloads[0])
    assert "s3cr3t-value" not in sent and "hunter2" not in sent and "sig=abc" not in sent
    assert hooks.payloads[0]["spec"]["runtime"]["env"] == [{"name": "API_KEY", "value": "<redacted>"}]


# Guardrails ------------------------------------------------------------------------------------


def test_a_spec_outside_the_guardrails_is_invalid_and_the_stable_serves_on(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    """The default guardrails allow only the bundled serving image: a new version asking for
    another image is refused naming the field, and the stable Deployment is not touched."""
    md = manifest("iris", runtime={"replicas": 1})
    assert apply(namespace, md).returncode == 0
    wait_healthy(cluster, namespace, "iris", 120)
    apps = client.AppsV1Api(cluster.api)
    before = apps.read_namespaced_deployment("iris-stable", namespace)
    bad = new_version(md)
    bad["spec"]["runtime"]["image"] = "docker.io/evil/miner:latest"
    assert apply(namespace, bad).returncode == 0

    def invalid() -> dict[str, Any] | None:
        status: dict[str, Any] = get_md(cluster, namespace, "iris").get("status", {})
        return status if status.get("phase") == "Invalid" else None

    status = wait_until("the spec refused as Invalid", invalid, 60)
    assert "spec.runtime.image: docker.io/evil/miner:latest is not an allowed image" in status["message"]
    assert "guardrails.allowedImages" in status["message"]
    after = apps.read_namespaced_deployment("iris-stable", namespace)
    assert after.metadata.generation == before.metadata.generation  # not touched
    assert after.status.ready_replicas == 1
    assert not [
        d for d in apps.list_namespaced_deployment(namespace).items if d.metadata.name == "iris-candidate"
    ]


# Route objects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "consent", [None, "evil"], ids=["not opted in", "opted in, but its route is the shop's"]
)
def test_a_virtual_service_that_serves_someone_else_is_never_rewritten(
    cluster: Cluster, operator: Operator, namespace: str, consent: str | None
) -> None:
    """Before: a ModelDeployment naming VirtualService `shop` and its route `main` sent the shop's
    traffic 100 % to `evil-stable` on the first pass. Now Rollwise edits a route object only with
    its owner's consent (`rollwise.dev/traffic-for`) and only routes to its own Services: the shop's
    VirtualService is not written at all, and the status says why."""
    shop: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {"hosts": ["shop"], "http": [{"name": "main", "route": [{"destination": {"host": "shop"}}]}]},
    }
    if consent is not None:
        shop["metadata"]["annotations"] = {"rollwise.dev/traffic-for": consent}
    kubectl("apply", "--server-side", "--field-manager=shop-team", "-f", "-", stdin=json.dumps(shop))
    before = json.loads(kubectl("-n", namespace, "get", "virtualservice", "shop", "-o", "json").stdout)
    md = manifest("evil", runtime={"replicas": 1})
    md["spec"]["rollout"] = {
        "canary": {"steps": [{"setWeight": 100}]},
        "traffic": {"provider": "istio", "istio": {"virtualService": "shop", "route": "main"}},
    }
    assert apply(namespace, md).returncode == 0
    # Serving first, then a rollout: applied back to back, the operator may see only 2.0.0 and
    # start it as the first stable, with no rollout to route.
    wait_healthy(cluster, namespace, "evil", 120)
    md["spec"]["model"]["version"] = "2.0.0"
    assert apply(namespace, md).returncode == 0

    def explained() -> str | None:
        message = str(get_md(cluster, namespace, "evil").get("status", {}).get("message", ""))
        return message if "VirtualService" in message and "shop" in message else None

    message = wait_until("the refusal explained in status", explained, 90)
    if consent is None:
        assert "annotate VirtualService" in message and "rollwise.dev/traffic-for=evil" in message, message
    after = json.loads(
        kubectl(
            "-n", namespace, "get", "virtualservice", "shop", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "rollwise" not in {m.get("manager") for m in after["metadata"].get("managedFields", [])}

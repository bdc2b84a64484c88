"""The operator running for real: CRDs applied to the local cluster, `rollwise-operator` started as
a process with its own identity (so the audit log tells its writes apart), stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e import cluster as local_cluster
from e2e import modelstore, paths, upstream_crds
from tests.conftest import NAMESPACE_PREFIX, Cluster, wait_until

OPERATOR_USER = "rollwise-operator-test"
SERVING_IMAGE = "rollwise/serving:0.1.0"
BATCH_IMAGE = "rollwise/serving:0.1.0-batch"
"""What ModelBatchJobs without spec.image run: `serving-image/build-image.sh --variant batch`."""
ROUTERS = "replicas,gatewayAPI,istio,nginx"
WEBHOOK_HOST = "127.0.0.2"
"""Where the tests' webhook servers listen (the operator runs on this host)."""
"""Every router on, as a chart with all `routers.<name>.enabled` runs it (the `crds` fixture
installs the Gateway API and Istio CRDs their watches need)."""


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The harness's kubectl (admin kubeconfig); with check, a failure raises with its stderr."""
    return local_cluster.kubectl(*args, stdin=stdin, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    log: Path
    kubeconfig: Path
    metrics_port: int

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    @contextlib.contextmanager
    def paused(self, tmp: Path) -> Iterator[None]:
        """Stop this operator for a while (e.g. so an in-cluster one alone acts), then restart it."""
        self.stop()
        try:
            yield
        finally:
            again = start_operator(tmp, self.kubeconfig)
            self.proc, self.log, self.metrics_port = again.proc, again.log, again.metrics_port

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_operator(
    tmp: Path,
    kubeconfig: Path,
    *,
    routers: str = ROUTERS,
    watch: str = f"{NAMESPACE_PREFIX}-*",
    resync_seconds: int = 5,
    batch_resync_seconds: int = 3600,
    name: str = "operator",
    **settings: str,
) -> Operator:
    """`rollwise-operator` as a process of its own; `settings` are more ROLLWISE_* variables.

    The short default resync makes idle tests see many passes (reads only). Batch jobs get an
    hour, longer than any test: only their Jobs' events can move them on, so a test of a batch
    job or a backtest fails if those wake-ups break."""
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "ROLLWISE_SERVING_IMAGE": SERVING_IMAGE,
        "ROLLWISE_BATCH_IMAGE": BATCH_IMAGE,
        "ROLLWISE_PROMETHEUS_URL": local_cluster.PROMETHEUS_URL,
        "ROLLWISE_METRICS_PORT": str(port),
        "ROLLWISE_PEERING": "",
        "ROLLWISE_WATCH_NAMESPACE": watch,
        "ROLLWISE_RESYNC_SECONDS": str(resync_seconds),
        "ROLLWISE_BATCH_RESYNC_SECONDS": str(batch_resync_seconds),
        "ROLLWISE_ROUTERS": routers,
        "ROLLWISE_LOG_LEVEL": os.environ.get("ROLLWISE_TEST_OPERATOR_LOG_LEVEL", "info"),
        # Test webhooks listen on 127.0.0.2, as an administrator would allow a gate's range; the
        # rest of loopback (the API server's 127.0.0.1 among it) stays refused.
        "ROLLWISE_WEBHOOK_ALLOWED_CIDRS": f"{WEBHOOK_HOST}/32",
        **{f"ROLLWISE_{key.upper()}": value for key, value in settings.items()},
    }
    log = tmp / f"{name}-{time.time_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollwise.main"], stdout=out, stderr=out, env=env, start_new_session=True
        )
    op = Operator(proc, log, kubeconfig, port)
    try:
        wait_until(f"{name}'s metrics endpoint", lambda: _metrics_up(port) or _died(op), 60)
    except AssertionError as err:
        op.stop()
        raise AssertionError(f"{err}\noperator log:\n{op.log_tail()}") from None
    if not op.alive():
        raise AssertionError(f"{name} exited at start:\n{op.log_tail()}")
    return op


def _died(op: Operator) -> bool:
    return not op.alive()


def _metrics_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    for crd in sorted((paths.REPO / "charts" / "rollwise" / "crds").glob("*.yaml")):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    # On a fresh API server the new CRD can have no conditions yet, which `kubectl wait` reports as
    # an error rather than waiting: ask again until it is Established.
    wait_until(
        "the ModelDeployment CRD to be Established",
        lambda: (
            kubectl(
                "wait",
                "--for=condition=Established",
                "crd/modeldeployments.rollwise.dev",
                "--timeout=5s",
                check=False,
            ).returncode
            == 0
        ),
        60,
    )
    # The routers' providers: Gateway API and Istio CRDs from their release modules, and the nginx
    # IngressClass (quick when already installed: one read, no write).
    upstream_crds.install()


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    kubeconfig = local_cluster.user_kubeconfig(OPERATOR_USER, ("system:masters",))
    op = start_operator(tmp_path_factory.mktemp("operator"), kubeconfig)
    yield op
    # The last tests' namespaces are still terminating: their ModelDeployments carry Kopf's
    # finalizer, which only a running operator removes. Stop only once they are gone, or every
    # session would leave a namespace stuck in Terminating behind.
    with contextlib.suppress(AssertionError):
        wait_until("this session's namespaces to be deleted", lambda: not _session_namespaces(cluster), 30)
    op.stop()


def _session_namespaces(cluster: Cluster) -> list[str]:
    names = [n.metadata.name for n in cluster.core.list_namespace().items]
    return [n for n in names if n.startswith(f"{NAMESPACE_PREFIX}-")]


def build(script: str, *args: str) -> str:
    """Run an image build script with `args` and --import; returns the image's reference by digest."""
    proc = subprocess.run(
        ["bash", str(paths.REPO / script), *args, "--import"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ref = proc.stdout.strip().splitlines()[-1]
    assert "@sha256:" in ref, f"{script} --import printed no reference by digest: {proc.stdout[-500:]}"
    return ref


@pytest.fixture(scope="session")
def serving_image(cluster: Cluster) -> str:
    """rollwise/serving built once per session and imported into the real node; its digest ref."""
    return build("serving-image/build-image.sh")


@pytest.fixture(scope="session")
def batch_image(cluster: Cluster) -> str:
    """The batch variant (rollwise-batch with pyarrow and pandas) built once per session and imported
    into the real node, tagged BATCH_IMAGE, which the operator runs for a ModelBatchJob that names
    no image; its digest ref."""
    ref = build("serving-image/build-image.sh", "--variant", "batch")
    assert ref.startswith(f"{BATCH_IMAGE}@sha256:"), f"the batch variant is not tagged {BATCH_IMAGE}: {ref}"
    return ref


@pytest.fixture(scope="session")
def model_store(cluster: Cluster) -> None:
    """The example model artifacts served in-cluster at http://models.rollwise-system.svc/."""
    modelstore.deploy()


def audit_writes(user: str, since_offset: int, namespace: str) -> list[dict[str, Any]]:
    """Write requests by `user` in `namespace` in the audit log after byte offset `since_offset`.

    Scoped to the test's namespace: other tests' namespaces are being torn down meanwhile, and the
    operator rightly reacts to their children disappearing."""
    writes = []
    with local_cluster.audit_path().open("rb") as f:
        f.seek(since_offset)
        for line in f:
            if not line.endswith(b"\n"):
                break  # the API server is still writing this event; it happened after the check
            event = json.loads(line)
            if (
                event.get("user", {}).get("username") == user
                and event.get("stage") == "ResponseComplete"
                and event.get("objectRef", {}).get("namespace") == namespace
            ):
                writes.append(event)
    return writes


def audit_offset() -> int:
    return local_cluster.audit_path().stat().st_size


def on_kwok(spec_runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runtime fields that put the serving pods on simulated nodes (fast; no containers run)."""
    runtime = dict(spec_runtime or {})
    runtime["nodeSelector"] = {"rollwise.dev/node-kind": "simulated"}
    runtime["tolerations"] = [{"key": "rollwise.dev/simulated", "operator": "Exists", "effect": "NoSchedule"}]
    return runtime


@pytest.fixture
def reference_claim(namespace: str) -> Iterator[str]:
    """A read-only claim `reference` on a hostPath volume with the example models (and their reference)."""
    models = modelstore.make_models()
    assert (models / "iris-reference.json").is_file()
    volume = f"{namespace}-reference"
    manifest = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(models), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": "reference"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "reference", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    ]
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifest}))
    try:
        kubectl(
            "-n", namespace, "wait", "pvc/reference", "--for=jsonpath={.status.phase}=Bound", "--timeout=60s"
        )
        yield "reference"
    finally:
        # Cluster-scoped, so the namespace's deletion would leave it; it goes once the claim is gone.
        kubectl("delete", "pv", volume, "--wait=false", check=False)

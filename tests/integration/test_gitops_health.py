"""GitOps health on live objects (issue 6): ModelDeployments driven by the real operator through each
phase on kwok nodes, each read back from the API server and judged by

- the Argo CD health check we ship (charts/rollwise/files/argocd-health.lua), run in an emulation
  of Argo CD's Lua sandbox (tests/unit/test_gitops_health.py), and
- kstatus, the Go library Flux uses (sigs.k8s.io/cli-utils/pkg/kstatus/status, built from the Go
  module proxy by e2e/kstatus/build.sh), on the very same JSON.

Each test prints what both tools said at each point, so the table in docs/gitops.md is measured.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import paths
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, kubectl, on_kwok
from tests.integration.test_operator import EXAMPLE, apply, get_md, wait_healthy
from tests.unit.test_gitops_health import ArgoHealth, Health

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]

# Pods that no node can take: kwok nodes carry node-kind=simulated, none carries this label.
NOWHERE = {"rollwise.dev/node-kind": "simulated", "rollwise.dev/no-such-node": "true"}


@pytest.fixture(scope="session")
def kstatus_binary() -> Path:
    """e2e/kstatus built (or reused from ~/.cache/rollwise/kstatus-<version>/); a failed build fails."""
    proc = subprocess.run(
        ["bash", str(paths.REPO / "e2e" / "kstatus" / "build.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"e2e/kstatus/build.sh failed:\n{proc.stderr[-3000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def argo() -> ArgoHealth:
    return ArgoHealth()


class Judge:
    """Reads a ModelDeployment from the API and asks both tools about the same JSON."""

    def __init__(self, cluster: Cluster, namespace: str, kstatus: Path, argo: ArgoHealth) -> None:
        self.cluster, self.namespace, self.kstatus, self.argo = cluster, namespace, kstatus, argo
        self.seen: list[tuple[str, str, Health, dict[str, str]]] = []

    def kstatus_of(self, obj: dict[str, Any]) -> dict[str, str]:
        proc = subprocess.run(
            [str(self.kstatus)], input=json.dumps(obj), capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        (line,) = proc.stdout.splitlines()
        result: dict[str, str] = json.loads(line)
        return result

    def __call__(self, name: str, what: str) -> tuple[dict[str, Any], Health, dict[str, str]]:
        obj = get_md(self.cluster, self.namespace, name)
        health, kstatus = self.argo(obj), self.kstatus_of(obj)
        phase = obj.get("status", {}).get("phase", "(no status)")
        self.seen.append((what, phase, health, kstatus))
        return obj, health, kstatus

    def until(
        self, name: str, what: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 90
    ) -> tuple[dict[str, Any], Health, dict[str, str]]:
        """Wait until the live object satisfies `ready`, then judge that object."""
        wait_until(what, lambda: ready(get_md(self.cluster, self.namespace, name)), timeout)
        return self(name, what)

    def report(self) -> None:
        print()
        for what, phase, health, kstatus in self.seen:
            print(f"{what:<44} phase={phase:<12} argo={health.status:<12} kstatus={kstatus['status']}")
            print(f"    argo: {health.message}\n    kstatus: {kstatus['message']}")


@pytest.fixture
def judge(cluster: Cluster, namespace: str, kstatus_binary: Path, argo: ArgoHealth) -> Iterator[Judge]:
    j = Judge(cluster, namespace, kstatus_binary, argo)
    yield j
    j.report()


def md(
    name: str, *, version: str = "1.0.0", rollout: dict[str, Any] | None = None, **runtime: Any
) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["metadata"] = {"name": name}
    body["spec"]["model"]["version"] = version
    body["spec"]["runtime"] = on_kwok({"replicas": 2})
    body["spec"]["runtime"].update(runtime)
    if rollout is not None:
        body["spec"]["rollout"] = rollout
    return body


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        status = obj.get("status", {})
        return (
            status.get("phase") in phases
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    return check


def annotate(namespace: str, name: str, action: str) -> None:
    kubectl(
        "-n", namespace, "annotate", "modeldeployment", name, "--overwrite", f"rollwise.dev/action={action}"
    )


def test_before_the_operator_acts_argo_waits_and_kstatus_sees_the_new_generation(
    cluster: Cluster, operator: Operator, namespace: str, judge: Judge, tmp_path: Path
) -> None:
    assert apply(namespace, md("iris")).returncode == 0
    wait_healthy(cluster, namespace, "iris")
    _, health, kstatus = judge("iris", "healthy")
    assert health.status == "Healthy", health
    assert kstatus["status"] == "Current", kstatus

    with operator.paused(tmp_path):  # nobody reconciles: the objects show what the user just applied
        assert apply(namespace, md("fresh")).returncode == 0
        assert apply(namespace, md("iris", version="2.0.0")).returncode == 0
        _, health, kstatus = judge("iris", "spec changed, not yet observed")
        assert health == Health(
            "Progressing",
            "Waiting for the Rollwise operator to observe generation 2 (status describes generation 1)",
        )
        assert kstatus["status"] == "InProgress", kstatus
        assert "generation is 2, but latest observed generation is 1" in kstatus["message"], kstatus

        obj, health, kstatus = judge("fresh", "created, no status yet")
        assert "status" not in obj
        assert health == Health("Progressing", "Waiting for the Rollwise operator to report status")
        # kstatus's rule for a resource with no conditions and no observedGeneration is "Current"
        # (cli-utils status.go: "the absence of any known conditions means the resource is
        # current"); nothing in the object can say otherwise until the operator writes a status.
        assert kstatus["status"] == "Current", kstatus

    # Back on: the operator acts, and both tools follow.
    _, health, kstatus = judge.until("fresh", "fresh healthy", phase_is("Healthy"))
    assert (health.status, kstatus["status"]) == ("Healthy", "Current")


def test_a_stable_that_never_gets_ready_is_progressing_then_degraded(
    operator: Operator, namespace: str, judge: Judge
) -> None:
    rollout = {"canary": {"steps": [{"setWeight": 50}]}, "progressDeadlineSeconds": 30}
    body = md("stuck", nodeSelector=NOWHERE, rollout=rollout)
    assert apply(namespace, body).returncode == 0
    _, health, kstatus = judge.until("stuck", "pods unschedulable", phase_is("Pending"), 30)
    assert health.status == "Progressing", health
    assert health.message.startswith("Pending: waiting for the stable Deployment"), health
    assert kstatus["status"] == "InProgress", kstatus

    _, health, kstatus = judge.until("stuck", "past progressDeadlineSeconds", phase_is("Degraded"), 120)
    assert health.status == "Degraded", health
    assert "ProgressDeadlineExceeded" in health.message, health
    assert kstatus["status"] == "Failed", kstatus
    assert "did not become ready in time" in kstatus["message"], kstatus


CANARY = {
    "canary": {
        "steps": [
            {"setWeight": 25},
            {"pause": {"durationSeconds": 3600}},
            {"setWeight": 50},
            {"pause": {}},
        ]
    }
}


def test_a_canary_walks_pauses_is_aborted_and_reverted(
    operator: Operator, namespace: str, judge: Judge
) -> None:
    assert apply(namespace, md("iris", rollout=CANARY)).returncode == 0
    judge.until("iris", "v1 healthy", phase_is("Healthy"))

    assert apply(namespace, md("iris", version="2.0.0", rollout=CANARY)).returncode == 0

    def timed_pause(obj: dict[str, Any]) -> bool:
        return phase_is("Progressing")(obj) and obj["status"].get("currentStep") == 1

    obj, health, kstatus = judge.until("iris", "canary at 25%, timed pause", timed_pause)
    assert obj["status"]["weight"] == 25
    assert health.status == "Progressing", health
    assert "candidate 2.0.0 at 25%" in health.message, health
    assert kstatus["status"] == "InProgress", kstatus

    annotate(namespace, "iris", "promote")  # skip the timed pause: 50 %, then the open-ended pause
    obj, health, kstatus = judge.until("iris", "canary at 50%, pause: {}", phase_is("Paused"))
    assert obj["status"]["weight"] == 50
    assert health.status == "Suspended", health
    assert health.message.startswith("Paused: candidate 2.0.0 at 50%: step 4/4"), health
    assert kstatus["status"] == "InProgress", kstatus  # kstatus has no "suspended": a pause is in progress

    annotate(namespace, "iris", "abort")
    obj, health, kstatus = judge.until("iris", "aborted", phase_is("RolledBack"))
    assert obj["status"]["weight"] == 0
    assert health.status == "Degraded", health
    assert health.message == (
        "RolledBack: candidate 2.0.0 rolled back: Aborted: aborted by rollwise.dev/action; "
        "stable 1.0.0 serves all traffic"
    ), health
    assert kstatus["status"] == "Failed", kstatus
    assert "aborted" in kstatus["message"], kstatus

    # The GitOps way out: revert the spec in Git; the stable never stopped, so it is Healthy again.
    assert apply(namespace, md("iris", rollout=CANARY)).returncode == 0
    _, health, kstatus = judge.until("iris", "spec reverted to v1", phase_is("Healthy"))
    assert (health.status, kstatus["status"]) == ("Healthy", "Current")


def test_a_candidate_that_never_gets_ready_is_rolled_back_and_degraded(
    operator: Operator, namespace: str, judge: Judge
) -> None:
    rollout = {"canary": {"steps": [{"setWeight": 50}]}, "progressDeadlineSeconds": 30}
    assert apply(namespace, md("iris", rollout=rollout)).returncode == 0
    judge.until("iris", "v1 healthy", phase_is("Healthy"))

    never_ready = md("iris", version="2.0.0", rollout=rollout, nodeSelector=NOWHERE)
    assert apply(namespace, never_ready).returncode == 0
    _, health, kstatus = judge.until("iris", "candidate pods unschedulable", phase_is("Progressing"))
    assert health.status == "Progressing", health
    assert kstatus["status"] == "InProgress", kstatus

    obj, health, kstatus = judge.until("iris", "candidate past its deadline", phase_is("RolledBack"), 120)
    assert obj["status"]["stableVersion"] == "1.0.0"
    assert health.status == "Degraded", health
    assert health.message.startswith(
        "RolledBack: candidate 2.0.0 rolled back: "
        "the candidate was not ready within progressDeadlineSeconds 30"
    ), health
    assert kstatus["status"] == "Failed", kstatus


def test_a_spec_only_the_operator_can_reject_is_degraded(
    operator: Operator, namespace: str, judge: Judge
) -> None:
    assert apply(namespace, md("iris")).returncode == 0
    judge.until("iris", "v1 healthy", phase_is("Healthy"))
    # Valid for the API server (CEL), but ingress-nginx routes one header per canary.
    invalid = md(
        "iris",
        version="2.0.0",
        rollout={
            "abTest": {
                "match": [
                    {"header": {"name": "x-a", "value": "1"}},
                    {"header": {"name": "x-b", "value": "1"}},
                ]
            },
            "traffic": {"provider": "nginx", "nginx": {"ingress": "web"}},
        },
    )
    assert apply(namespace, invalid).returncode == 0, "the API server should accept this spec"
    obj, health, kstatus = judge.until("iris", "invalid spec", phase_is("Invalid"))
    assert health.status == "Degraded", health
    assert health.message.startswith("Invalid: InvalidSpec: spec.rollout.abTest.match[1]"), health
    assert kstatus["status"] == "Failed", kstatus
    assert kstatus["message"].startswith("spec.rollout.abTest.match[1]"), kstatus
    # The stable keeps serving through it all.
    assert obj["status"]["stableVersion"] == "1.0.0"

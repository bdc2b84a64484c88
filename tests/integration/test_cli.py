"""`kubectl rollwise` against the real operator on the local cluster: each command changes the
ModelDeployment as documented, and `--wait` / `wait` exit 0 on promotion and 1 on rollback.

The plugin runs as users run it: the installed `kubectl-rollwise` console script in a subprocess
with KUBECONFIG set, and once through `kubectl rollwise` itself (kubectl finds it on PATH).
Serving pods sit on kwok nodes: no container runs, so a rollout moves as fast as the operator.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from typing import Any

import pytest

from e2e import paths
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, on_kwok
from tests.integration.test_operator import EXAMPLE, apply, get_md, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]

PLUGIN = paths.REPO / ".venv" / "bin" / "kubectl-rollwise"
STEPS = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {"durationSeconds": 300}},
]


def manifest(version: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    md = copy.deepcopy(EXAMPLE)
    md["metadata"] = {"name": "iris"}
    md["spec"]["model"]["version"] = version
    md["spec"]["runtime"] = on_kwok({"replicas": 2})
    md["spec"]["rollout"] = {"canary": {"steps": steps or STEPS}}
    return md


def plugin(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the installed plugin; a missing console script fails by name."""
    if not PLUGIN.is_file():
        pytest.fail(f"{PLUGIN} is missing: install the package (`.venv/bin/pip install -e .`)", pytrace=False)
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "COLUMNS": "220"}
    return subprocess.run(
        [str(PLUGIN), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def status_of(cluster: Cluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get_md(cluster, namespace, "iris").get("status", {})
    return status


def wait_phase(cluster: Cluster, namespace: str, phase: str, step: int | None = None) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        s = status_of(cluster, namespace)
        return s if s.get("phase") == phase and (step is None or s.get("currentStep") == step) else None

    return wait_until(f"iris {phase} at step {step}", there, 60)


def row(text: str, label: str) -> str:
    """The steps-table row whose step is `label`."""
    pattern = re.compile(r"^[✓▶✗ ]\s+\d*\s+" + re.escape(label) + r"(\s|$)")
    rows = [line for line in text.splitlines() if pattern.match(line)]
    assert len(rows) == 1, (label, text)
    return rows[0]


def start_rollout(cluster: Cluster, namespace: str, steps: list[dict[str, Any]] | None = None) -> None:
    assert apply(namespace, manifest("1.0.0", steps)).returncode == 0
    wait_healthy(cluster, namespace, "iris")
    assert apply(namespace, manifest("2.0.0", steps)).returncode == 0


def test_the_plugin_walks_a_canary_to_promotion(cluster: Cluster, operator: Operator, namespace: str) -> None:
    start_rollout(cluster, namespace)
    wait_phase(cluster, namespace, "Paused", step=1)

    out = ok(plugin(cluster, "list", "-n", namespace))
    assert out.splitlines()[1].split()[:7] == ["iris", "canary", "Paused", "1.0.0", "2.0.0", "2/4", "20%"]

    out = ok(plugin(cluster, "status", "iris", "-n", namespace))
    assert f"ModelDeployment {namespace}/iris  Paused (Paused)" in out
    assert "candidate 2.0.0   step 2/4 for" in out
    assert "✓" in row(out, "setWeight 20")
    assert "▶" in row(out, "pause until resumed") and "waiting for resume or promote" in out
    assert "▶" not in row(out, "setWeight 60")
    assert "stable 1.0.0 80%" in out and "20% candidate 2.0.0" in out
    assert "rolling out 2.0.0 as candidate" in out  # an Event the operator posted
    assert "step 2/4: pause until resumed" in out

    # An indefinite pause never ends by itself: a bounded wait gives up with exit 3.
    out = ok(plugin(cluster, "wait", "iris", "-n", namespace, "--timeout", "3"), code=3)
    assert "iris: still Paused after --timeout 3s" in out

    out = ok(plugin(cluster, "resume", "iris", "-n", namespace))
    assert "requested resume (rollwise.dev/action=resume:" in out
    # What the operator made of it: past the pause, at setWeight 60 (or already past it).
    assert "iris: Progressing" in out and ("step 3/4 setWeight 60" in out or "step 4/4 pause 5m00s" in out)
    s = wait_phase(cluster, namespace, "Progressing", step=3)
    assert s["weight"] == 60

    out = ok(plugin(cluster, "status", "iris", "-n", namespace))
    assert "▶" in row(out, "pause 5m00s") and "of 5m00s" in row(out, "pause 5m00s")
    assert "stable 1.0.0 40%" in out and "60% candidate 2.0.0" in out

    out = ok(plugin(cluster, "promote", "iris", "--full", "--wait", "--timeout", "120", "-n", namespace))
    assert out.rstrip().splitlines()[-1].startswith("iris: Promoted 2.0.0")
    s = status_of(cluster, namespace)
    assert (s["phase"], s["stableVersion"], s.get("candidateVersion"), s["weight"]) == (
        "Healthy",
        "2.0.0",
        None,
        0,
    )
    assert s["history"][0]["outcome"] == "Promoted" and s["history"][0]["version"] == "2.0.0"
    assert s["lastAction"].startswith("promote-full:")

    out = ok(plugin(cluster, "history", "iris", "-n", namespace))
    (line,) = [x for x in out.splitlines() if " 2.0.0 " in x]
    assert "Promoted" in line and "2.0.0 is the new stable" in line

    # Nothing left to promote: refused at once, naming what to do instead, and nothing written.
    before = get_md(cluster, namespace, "iris")["metadata"]["resourceVersion"]
    result = plugin(cluster, "promote", "iris", "-n", namespace)
    assert result.returncode == 2
    assert result.stderr.startswith("error: iris is Healthy") and "to start one" in result.stderr
    assert get_md(cluster, namespace, "iris")["metadata"]["resourceVersion"] == before


def test_pause_resume_abort_wait_and_retry(cluster: Cluster, operator: Operator, namespace: str) -> None:
    timed = [{"setWeight": 20}, {"pause": {"durationSeconds": 600}}, {"setWeight": 60}]
    start_rollout(cluster, namespace, timed)
    wait_phase(cluster, namespace, "Progressing", step=1)

    out = ok(plugin(cluster, "pause", "iris", "-n", namespace))
    assert "iris: Paused | step 2/3 pause 10m00s | candidate 2.0.0 at 20%" in out
    s = wait_phase(cluster, namespace, "Paused", step=1)
    assert s["message"] == "paused by rollwise.dev/action at step 1"

    result = plugin(cluster, "pause", "iris", "-n", namespace)
    assert (
        result.returncode == 2
        and "already paused; resume it with `kubectl rollwise resume iris`" in result.stderr
    )

    out = ok(plugin(cluster, "resume", "iris", "-n", namespace))
    assert "iris: Progressing | step 2/3 pause 10m00s" in out
    wait_phase(cluster, namespace, "Progressing", step=1)

    out = ok(plugin(cluster, "abort", "iris", "-n", namespace))
    assert "requested abort" in out
    out = ok(plugin(cluster, "wait", "iris", "-n", namespace, "--timeout", "60"), code=1)
    assert out.rstrip().splitlines()[-1].startswith("iris: RolledBack 2.0.0 (Aborted)")
    s = status_of(cluster, namespace)
    assert (s["phase"], s["weight"], s["stableVersion"]) == ("RolledBack", 0, "1.0.0")
    assert {c["type"]: c["reason"] for c in s["conditions"]}["Stalled"] == "Aborted"
    assert s["history"][0]["outcome"] == "Aborted"
    assert cluster.apps.read_namespaced_deployment("iris-candidate", namespace).spec.replicas == 0

    # A second wait on the same ended rollout answers at once, the same way.
    assert plugin(cluster, "wait", "iris", "-n", namespace, "-q").returncode == 1
    out = ok(plugin(cluster, "status", "iris", "-n", namespace))
    assert "RolledBack (Aborted)" in out and "rolled back here" in row(out, "pause 10m00s")
    assert "Warning" in out and "aborted by rollwise.dev/action" in out

    result = plugin(cluster, "resume", "iris", "-n", namespace)
    assert result.returncode == 2 and "kubectl rollwise retry iris" in result.stderr

    out = ok(plugin(cluster, "retry", "iris", "-n", namespace))
    assert "iris: Progressing" in out and "candidate 2.0.0" in out
    wait_phase(cluster, namespace, "Progressing", step=1)
    out = ok(plugin(cluster, "history", "iris", "-n", namespace))
    assert "Aborted" in out and "aborted by rollwise.dev/action" in out


def test_list_and_kubectl_finds_the_plugin(cluster: Cluster, operator: Operator, namespace: str) -> None:
    assert apply(namespace, manifest("1.0.0")).returncode == 0
    wait_healthy(cluster, namespace, "iris")
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{PLUGIN.parent}:{paths.KUBE_BIN}:{os.environ.get('PATH', '')}",
        "COLUMNS": "220",
    }
    result = subprocess.run(
        [str(paths.KUBECTL), "rollwise", "list", "-A"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0][:3] == ["NAMESPACE", "NAME", "STRATEGY"]
    assert [namespace, "iris", "canary", "Healthy", "1.0.0", "-", "-", "0%"] in [line[:8] for line in lines]

    result = plugin(cluster, "status", "absent", "-n", namespace)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f'error: modeldeployment "absent" in namespace {namespace}: not found; '
        "list them with `kubectl rollwise list -A`"
    )

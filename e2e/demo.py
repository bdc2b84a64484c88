"""The local demo (`make demo`): from nothing to a model answering predictions through Rollwise.

Steps, each timed: the local cluster; the serving, operator and model-store images; the operator
installed with Helm (in a pod on the real node); the example ModelDeployment; a prediction through
its Service; and what Prometheus scraped from it. Idempotent: run it again and it reuses what runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console

from e2e import cluster, modelstore, paths

T = TypeVar("T")
NAMESPACE = "rollwise-demo"
RELEASE = "rollwise"
console = Console()


def step(title: str, action: Callable[[], T]) -> T:
    started = time.monotonic()
    with console.status(f"[bold]{title}[/] …"):
        result = action()
    console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - started:.0f}s)[/]")
    return result


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def helm_install() -> None:
    run(
        str(paths.HELM), f"--kubeconfig={paths.KUBECONFIG}", "upgrade", "--install", RELEASE,
        str(paths.REPO / "charts" / "rollwise"), "-n", "rollwise-system", "--create-namespace",
        "--set", "prometheus.url=http://prometheus.monitoring:9090", "--wait", "--timeout", "180s",
    )  # fmt: skip


def deploy_model() -> None:
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(paths.REPO / "examples" / "iris-sklearn.yaml"))
    cluster.kubectl("-n", NAMESPACE, "wait", "md/iris", "--for=condition=Ready", "--timeout=180s")


def predict() -> dict[str, object]:
    svc = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "svc", "iris", "-o", "json").stdout)
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/v2/models/iris/infer"
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                        "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}  # fmt: skip
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, object] = json.load(resp)
    return answer


def scraped() -> str:
    query = f'sum by (track, outcome) (rollwise_requests_total{{namespace="{NAMESPACE}"}})'
    for _ in range(20):
        url = f"{cluster.PROMETHEUS_URL}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.load(resp)["data"]["result"]
        if any(r["value"][1] != "0" for r in result):
            return ", ".join(
                f"{r['metric']['track']}/{r['metric']['outcome']}={r['value'][1]}" for r in result
            )
        time.sleep(1)
    return "(not scraped yet)"


def main() -> int:
    step("local cluster (first run builds Kubernetes: ~15 min)", lambda: cluster.up(kwok_nodes=3))
    step(
        "serving image", lambda: run("bash", str(paths.REPO / "serving-image" / "build-image.sh"), "--import")
    )
    step("operator image", lambda: run("bash", str(paths.REPO / "operator" / "build-image.sh"), "--import"))
    step("example model store", modelstore.deploy)
    step("operator installed with Helm", helm_install)
    step("ModelDeployment iris Ready", deploy_model)
    answer = step("a prediction through the iris Service", predict)
    console.print_json(json.dumps(answer))
    console.print(f"Prometheus saw: {step('metrics scraped', scraped)}")
    console.print(cluster.kubectl("-n", NAMESPACE, "get", "md,deploy,pods").stdout)
    console.print("Next: " + "; ".join(cluster.env_lines()) + f"; kubectl -n {NAMESPACE} describe md iris")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The local demo (`make demo`, `rollwise demo`): from nothing to two rollouts judged by Rollwise.

Steps, each timed and showing progress while it runs: the local cluster; the serving, operator
and model-store images; the operator installed with Helm (in a pod on the real node, watching
only the demo's namespace, so test sessions sharing the cluster are left alone); the iris model
1.0.0 Ready and answering; then, under steady traffic, a good candidate (2.0.0) that is promoted
and a bad one (its predictions fail) that is rolled back, each followed in the plugin's live view
(`kubectl rollwise status --watch`), and a table of both outcomes.

Idempotent: run it again and it reuses what runs; the demo's ModelDeployment starts over.
Exit code 0 when the good candidate was promoted and the bad one rolled back, 1 otherwise.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rollwise.cli.client import Client, Target
from rollwise.cli.live import Snapshot, follow
from rollwise.cli.outcome import Ended, Outcome, ended
from rollwise.cli.view import progress_line

from e2e import cluster, modelstore, paths
from e2e.traffic import Load

T = TypeVar("T")
NAMESPACE = "rollwise-demo"
RELEASE = "rollwise"
OPERATOR_NAMESPACE = "rollwise-system"
NAME = "iris"
ROLLOUT_TIMEOUT_SECONDS = 300
"""A rollout here takes 10-40 s; five minutes means something is broken, and the demo says what."""
HEARTBEAT_SECONDS = 20
"""Outside a terminal (CI logs) a long step prints that it is still running this often."""
console = Console()

# One row of each Iris class, cycled, so class shares mean something to the drift checks.
ROLLOUT: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
    "analysis": {
        "intervalSeconds": 5,
        "count": 3,
        "failureLimit": 0,
        # A busy 2-core machine may leave an interval thin; two may be inconclusive before a human is asked.
        "inconclusiveLimit": 2,
        "minSampleCount": 5,
        "metrics": [
            {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
            {"name": "latency", "builtin": "latencyP99", "threshold": {"max": 0.25}},
        ],
    },
    "progressDeadlineSeconds": 120,
}


@dataclass(frozen=True)
class Candidate:
    """A model version to roll out, and the outcome the demo expects for it."""

    title: str
    version: str
    artifact: str
    format: str
    expect: Outcome


STABLE = Candidate("the first model", "1.0.0", "iris-v1.joblib", "sklearn", Outcome.PROMOTED)
GOOD = Candidate("a good candidate", "2.0.0", "iris-v2.joblib", "sklearn", Outcome.PROMOTED)
BAD = Candidate(
    "a bad candidate, every prediction fails", "3.0.0-broken", "iris-broken.py", "python", Outcome.ROLLED_BACK
)


# ---------------------------------------------------------------------------------------------
# Steps with visible progress


class Step:
    """A long step: a spinner with the elapsed time and the latest output line on a terminal,
    a start line and a heartbeat elsewhere; then ✓ or ✗ with the time it took."""

    def __init__(self, title: str, out: Console) -> None:
        self.title = title
        self.out = out
        self.detail = ""
        self.started = time.monotonic()
        self._stop = threading.Event()

    def note(self, detail: str) -> None:
        self.detail = detail.strip()[:100]

    def _text(self) -> str:
        elapsed = f"{time.monotonic() - self.started:.0f}s"
        return f"[bold]{self.title}[/] … {elapsed}" + (
            f" [dim]{_escape(self.detail)}[/]" if self.detail else ""
        )

    @contextmanager
    def running(self) -> Iterator[Step]:
        if self.out.is_terminal:
            with self.out.status(self._text()) as status:
                ticker = threading.Thread(target=self._tick, args=(lambda: status.update(self._text()), 0.5))
                ticker.start()
                try:
                    yield self
                finally:
                    self._stop.set()
                    ticker.join()
        else:
            self.out.print(f"… {self.title}", highlight=False)
            ticker = threading.Thread(target=self._tick, args=(self._heartbeat, HEARTBEAT_SECONDS))
            ticker.start()
            try:
                yield self
            finally:
                self._stop.set()
                ticker.join()

    def _tick(self, show: Callable[[], None], every: float) -> None:
        while not self._stop.wait(every):
            show()

    def _heartbeat(self) -> None:
        self.out.print(Text(f"  still running ({time.monotonic() - self.started:.0f}s) {self.detail}"))


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def step(title: str, action: Callable[[Step], T], out: Console | None = None) -> T:
    where = out or console
    current = Step(title, where)
    try:
        with current.running():
            result = action(current)
    except BaseException:
        where.print(f"[red]✗[/] {title} [dim]({time.monotonic() - current.started:.0f}s)[/]")
        raise
    where.print(f"[green]✓[/] {title} [dim]({time.monotonic() - current.started:.0f}s)[/]")
    return result


def run(*argv: str, progress: Step | None = None) -> str:
    """Run a command; its output lines feed the step's progress, its tail explains a failure."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: deque[str] = deque(maxlen=40)
    out: list[str] = []
    for line in proc.stdout:
        out.append(line)
        tail.append(line)
        if progress is not None and line.strip():
            progress.note(line)
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{''.join(tail)}")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Set-up


def build(script: str) -> Callable[[Step], str]:
    """Build and import an image; the step's result is its reference by digest (the last line)."""
    return lambda s: run("bash", str(paths.REPO / script), "--import", progress=s).strip().splitlines()[-1]


def helm_install(s: Step, operator_ref: str, serving_ref: str) -> None:
    """The chart in rollwise-system, watching only the demo's namespace: an operator watching every
    namespace would also reconcile other sessions' test objects on a shared cluster. Both images by
    digest, so the pods run exactly the builds just made."""
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    run(
        str(paths.HELM), f"--kubeconfig={paths.KUBECONFIG}", "upgrade", "--install", RELEASE,
        str(paths.REPO / "charts" / "rollwise"), "-n", OPERATOR_NAMESPACE, "--create-namespace",
        "--set", "prometheus.url=http://prometheus.monitoring:9090", "--set", f"watchNamespace={NAMESPACE}",
        "--set", f"image.digest={operator_ref.split('@')[1]}",
        "--set", f"servingImage.digest={serving_ref.split('@')[1]}",
        "--wait", "--timeout", "180s",
        progress=s,
    )  # fmt: skip


def manifest(candidate: Candidate) -> dict[str, Any]:
    """The iris example (examples/iris-sklearn.yaml) with two replicas, a canary with analysis,
    and the candidate's model."""
    md: dict[str, Any] = yaml.safe_load((paths.REPO / "examples" / "iris-sklearn.yaml").read_text())
    md["metadata"] = {"name": NAME}
    md["spec"]["model"] = {
        "name": "iris",
        "version": candidate.version,
        "uri": modelstore.uri_of(candidate.artifact),
        "sha256": modelstore.sha256_of(candidate.artifact),
        "format": candidate.format,
    }
    md["spec"]["runtime"] = {"replicas": 2}
    md["spec"]["rollout"] = copy.deepcopy(ROLLOUT)
    return md


def apply(namespace: str, candidate: Candidate) -> None:
    body = json.dumps(manifest(candidate))
    cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=body)


def deploy_model(namespace: str, s: Step | None = None) -> None:
    """iris 1.0.0 from scratch (a rerun deletes the previous demo's object first), Ready."""
    if s is not None:
        s.note(f"deleting any previous {NAME} in {namespace}")
    cluster.kubectl("-n", namespace, "delete", "md", NAME, "--ignore-not-found", "--wait", "--timeout=120s")
    apply(namespace, STABLE)
    if s is not None:
        s.note("waiting for condition Ready (pods on the real node load the model)")
    cluster.kubectl("-n", namespace, "wait", f"md/{NAME}", "--for=condition=Ready", "--timeout=180s")


def service_url(namespace: str) -> str:
    svc = json.loads(cluster.kubectl("-n", namespace, "get", "svc", NAME, "-o", "json").stdout)
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/v2/models/iris/infer"


def predict(namespace: str) -> dict[str, object]:
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                        "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}  # fmt: skip
    req = urllib.request.Request(
        service_url(namespace), json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, object] = json.load(resp)
    return answer


def scraped(namespace: str) -> str:
    query = f'sum by (track, outcome) (rollwise_requests_total{{namespace="{namespace}"}})'
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


# ---------------------------------------------------------------------------------------------
# Traffic and rollouts


@dataclass
class Traffic(Load):
    """The demo's steady load (20 requests/s, until the demo stops it), shown under the live view."""

    rate_per_second: float = 20.0
    limit_seconds: float = 24 * 3600.0

    def footer(self, window_seconds: float = 5) -> Text:
        """What the last few seconds of traffic looked like, under the live view."""
        recent = self.since(time.monotonic() - window_seconds)
        ok = Counter(version for _, code, version in recent if code == 200)
        failed = sum(1 for _, code, _ in recent if code != 200)
        text = Text(
            f"Traffic  {len(recent) / window_seconds:.0f} req/s over the last {window_seconds:.0f}s: "
        )
        text.append(", ".join(f"{v or '?'} answered {n}" for v, n in sorted(ok.items())) or "no answer")
        text.append(f", {failed} failed", style="bold red" if failed else "green")
        total_failed = sum(1 for _, code, _ in list(self.results) if code != 200)
        text.append(f"   (total {len(self.results)} requests, {total_failed} failed)", style="dim")
        return text


@dataclass(frozen=True)
class RolloutResult:
    candidate: Candidate
    ended: Ended
    seconds: float
    requests: int
    failed: int
    answered_by: dict[str, int]
    stable_after: str

    @property
    def as_expected(self) -> bool:
        return self.ended.outcome is self.candidate.expect


def roll_out(
    api: Client, namespace: str, candidate: Candidate, traffic: Traffic, out: Console
) -> RolloutResult:
    """Apply the candidate and follow the rollout in the plugin's live view until it ends."""
    out.rule(f"Rolling out {candidate.version}: {candidate.title}")
    started = time.monotonic()
    apply(namespace, candidate)

    def fetch() -> Snapshot:
        md = api.get(NAME, namespace)
        return md, api.events(md)

    followed = follow(
        fetch,
        out,
        until=lambda md: ended(md) is not None,
        timeout_seconds=ROLLOUT_TIMEOUT_SECONDS,
        events_limit=6,
        footer=traffic.footer,
    )
    result = ended(followed.md)
    if result is None:
        raise SystemExit(
            f"the rollout of {candidate.version} did not end within {ROLLOUT_TIMEOUT_SECONDS}s: "
            f"{progress_line(followed.md, datetime.now(UTC))}; "
            f"see `kubectl -n {namespace} describe md {NAME}`"
        )
    window = traffic.since(started)
    return RolloutResult(
        candidate=candidate,
        ended=result,
        seconds=time.monotonic() - started,
        requests=len(window),
        failed=sum(1 for _, code, _ in window if code != 200),
        answered_by=dict(Counter(v for _, code, v in window if code == 200)),
        stable_after=followed.md.status.stable_version or "?",
    )


def rollouts(namespace: str, out: Console | None = None) -> list[RolloutResult]:
    """The demo's second half, on a ModelDeployment already Ready at 1.0.0: steady traffic, the
    good candidate, then the bad one."""
    where = out or console
    api = Client.connect(Target(kubeconfig=str(paths.KUBECONFIG), namespace=namespace))
    traffic = Traffic(service_url(namespace))
    try:
        with traffic.running():
            step(
                "steady traffic to the iris Service (20 requests/s)",
                lambda s: _wait_for_traffic(traffic, s),
                where,
            )
            return [roll_out(api, namespace, c, traffic, where) for c in (GOOD, BAD)]
    finally:
        api.close()


def _wait_for_traffic(traffic: Traffic, s: Step, count: int = 20, timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        answered = sum(1 for _, code, _ in list(traffic.results) if code == 200)
        s.note(f"{answered} answered")
        if answered >= count:
            return
        time.sleep(0.5)
    raise SystemExit(f"the iris Service answered fewer than {count} requests in {timeout_seconds:.0f}s")


def outcomes_table(results: list[RolloutResult]) -> Table:
    table = Table(title="Rollouts", title_justify="left")
    for column in (
        "candidate",
        "outcome",
        "reason",
        "took",
        "requests",
        "failed",
        "answered by",
        "stable after",
    ):
        table.add_column(column)
    for r in results:
        style = "green" if r.as_expected else "bold red"
        table.add_row(
            f"{r.candidate.version}: {r.candidate.title}",
            Text(r.ended.outcome.value, style=style),
            r.ended.reason,
            f"{r.seconds:.0f}s",
            str(r.requests),
            str(r.failed),
            ", ".join(f"{v or '?'}: {n}" for v, n in sorted(r.answered_by.items())),
            r.stable_after,
        )
    return table


def report(results: list[RolloutResult], out: Console | None = None) -> bool:
    """Print both outcomes; True when each ended as expected."""
    where = out or console
    where.print(outcomes_table(results))
    for r in results:
        mark = "[green]✓[/]" if r.as_expected else "[red]✗[/]"
        expected = "" if r.as_expected else f" (expected {r.candidate.expect.value})"
        where.print(
            f"{mark} {r.candidate.version}: {r.ended.outcome.value} ({r.ended.reason}){expected}",
            highlight=False,
        )
    return all(r.as_expected for r in results)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    step("local cluster (first run builds Kubernetes: ~15 min)", lambda s: cluster.up(kwok_nodes=3))
    serving_ref = step("serving image", build("serving-image/build-image.sh"))
    operator_ref = step("operator image", build("operator/build-image.sh"))
    step("example model store", lambda s: modelstore.deploy())
    step(
        f"operator installed with Helm (watching namespace {NAMESPACE}, images by digest)",
        lambda s: helm_install(s, operator_ref, serving_ref),
    )
    step(f"ModelDeployment {NAME} 1.0.0 Ready", lambda s: deploy_model(NAMESPACE, s))
    answer = step("a prediction through the iris Service", lambda s: predict(NAMESPACE))
    console.print_json(json.dumps(answer))
    console.print(f"Prometheus saw: {step('metrics scraped', lambda s: scraped(NAMESPACE))}", highlight=False)
    results = rollouts(NAMESPACE)
    console.rule("Outcome")
    good = report(results)
    console.print(cluster.kubectl("-n", NAMESPACE, "get", "md,deploy,pods").stdout, highlight=False)
    console.print(
        "Next: " + "; ".join(cluster.env_lines()) + f"; export PATH={paths.REPO / '.venv' / 'bin'}:$PATH; "
        f"kubectl rollwise status {NAME} -n {NAMESPACE} --watch",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"Clean up: kubectl delete ns {NAMESPACE} (while the operator runs: it removes its finalizers), "
        f"then helm -n {OPERATOR_NAMESPACE} uninstall {RELEASE}",
        highlight=False,
        soft_wrap=True,
    )
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())

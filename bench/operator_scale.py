"""The operator at scale, side by side with Argo Rollouts, on the local cluster (issue 7).

    .venv/bin/python bench/operator_scale.py                 # everything (30-60 min on 2 cores)
    .venv/bin/python bench/operator_scale.py --sizes 20 --argo-size 20 --canaries 5 --ha 3 --idle 30

One command on a fresh machine: it brings the local cluster up with enough kwok nodes
(`e2e.cluster.up`), applies the CRDs, builds Argo Rollouts' controller from its Go module
(`bench/argo/build.sh`, cached under ~/.cache/rollwise/argo-rollouts-<ver>/), then measures:

1. Waves of 100, 300 and 1 000 ModelDeployments (2 replicas each, pods on kwok nodes) and one of
   1 000 equivalent Argo Rollouts (canary, 2 replicas, same pod template and placement). Each
   controller runs out of cluster as a process of its own, started fresh for each wave, with its
   own client certificate: every figure about API writes is read from the API server's audit log
   (`e2e.cluster.audit_path()`), per user, with microsecond timestamps.
   - apply -> children created: an object's create completing -> the controller's last write
     creating one of its children (Rollwise: Deployment `<m>-stable` and Service `<m>`, all a model
     has at rest; Argo: the ReplicaSet).
   - apply -> Ready: the create -> the controller's last status write of that object (the wave ends
     with every object Ready, so its last status write is the one that said so).
   - Ready lag: the workload's own last status update by kube-controller-manager (Deployment or
     ReplicaSet Ready) -> the controller's Ready status write: how quickly the controller notices.
   - API writes per object during the wave, then writes per minute over an idle window (nothing
     changes; every object is resynced at least once in it: both controllers get the same resync
     period, `--resync`).
   - RSS (peak during the wave, and idle) and CPU seconds per minute (wave and idle), from
     /proc/<pid>.
   - restart: SIGTERM, start again; the time until it has reconciled every object (its own
     reconcile counter), and the writes it made doing so (goal: none).
2. 50 canary rollouts at once (4 replicas each: setWeight 25, pause 10 s, setWeight 50, analysis,
   setWeight 75, pause 10 s), for Rollwise and for Argo: step latency = a timed step's due time
   (the controller's own stored start + duration) -> the controller's first write applying the
   next step (audit log); Prometheus analysis queries per second (Rollwise's own counter
   `rollwise_operator_provider_queries_total`, and Prometheus' `prometheus_http_requests_total`
   for both). Asserted: every step entered exactly once, in order, and every rollout promoted.
3. HA: two Rollwise replicas (Kopf peering, distinct priorities, each its own identity); the
   leader is SIGKILLed mid-step; measured: the time until the other has reconciled every rollout,
   and the delay that step suffered. Asserted: no step repeated or skipped, the interrupted step
   keeps its start time, the follower wrote nothing before the kill.

Only correctness is asserted; timings are printed next to the goals (bench/README.md keeps the
last results). Every namespace this run creates starts with `rwb<pid>-`; Rollwise watches only
`rwb<pid>-md-*`, so other sessions' test namespaces are never touched.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client, config, watch  # noqa: E402 - after the repo is on sys.path

from e2e import cluster as local_cluster  # noqa: E402
from e2e import components  # noqa: E402

ARGO_VERSION = "v1.10.1"
CACHE = Path(os.environ.get("ROLLWISE_CACHE", Path.home() / ".cache" / "rollwise"))
WORK = CACHE / "bench-work"
PREFIX = f"rwb{os.getpid() % 100000}"
MD_GLOB = f"{PREFIX}-md-*"
SERVING_IMAGE = "rollwise/serving:0.1.0"
PODS_PER_KWOK_NODE = 250  # e2e/components.py kwok_node_manifest: allocatable pods
BENCH_USER = "rollwise-bench-client"
ROLLWISE_USER = "rollwise-operator-bench"
ARGO_USER = "argo-rollouts-bench"
MD = ("rollwise.dev", "v1alpha1", "modeldeployments")
RO = ("argoproj.io", "v1alpha1", "rollouts")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAUSE_SECONDS = 10
ANALYSIS_INTERVAL, ANALYSIS_COUNT = 5, 3
ANALYSIS_QUERY = "vector(1)"  # a real query with one answer, whatever is scraped; kwok pods serve nothing
PY_SPY = os.environ.get("PY_SPY", str(CACHE / "py-spy-0.4.3" / "bin" / "py-spy"))
"""`--profile`: py-spy (PyPI `py-spy`, e.g. `pip install --target ~/.cache/rollwise/py-spy-0.4.3`)."""
GOALS = {
    "ready_p99": "apply -> children p99 <= 1 s at 1000",
    "idle_writes": "0 idle writes",
    "rss": "RSS <= 200 MB at 1000",
    "cpu": "CPU within 2x of Argo Rollouts'",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --- statistics --------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Controller:
    """A controller process we started (stopped by its PID only), with /proc readings."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    started: float = field(default_factory=time.time)
    peak_rss: float = 0.0
    _sampler: threading.Thread | None = None
    _stop_sampling: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all its threads) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mib(self) -> float:
        return local_cluster.rss_mib(self.pid)

    def sample(self) -> None:
        """Track peak RSS every 0.5 s in a thread until stopped."""

        def run() -> None:
            while not self._stop_sampling.wait(0.5) and self.alive():
                self.peak_rss = max(self.peak_rss, self.rss_mib())

        self.peak_rss = self.rss_mib()
        self._stop_sampling.clear()
        self._sampler = threading.Thread(target=run, daemon=True)
        self._sampler.start()

    def reset_peak(self) -> None:
        self.peak_rss = self.rss_mib()

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        self._stop_sampling.set()
        if not self.alive():
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` (exactly that name, any labels) matching `labels`."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def start_process(name: str, argv: list[str], env: dict[str, str], port: int, ready: str) -> Controller:
    """Start a controller and wait until its metrics endpoint answers with `ready` in it."""
    WORK.mkdir(parents=True, exist_ok=True)
    log_path = WORK / f"{PREFIX}-{name}-{time.time_ns()}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, env=env, start_new_session=True, stdin=subprocess.DEVNULL
        )
    ctl = Controller(name, proc, log_path, port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not ctl.alive():
            raise RuntimeError(f"{name} exited at start (log {log_path}):\n{ctl.tail()}")
        with contextlib.suppress(OSError):
            if any(k.startswith(ready) for k in ctl.scrape()):
                ctl.sample()
                return ctl
        time.sleep(0.2)
    ctl.stop(signal.SIGKILL)
    raise RuntimeError(f"{name}: no metrics on :{port} within 120 s (log {log_path}):\n{ctl.tail()}")


def start_rollwise(
    watch_ns: str,
    *,
    resync: int,
    user: str = ROLLWISE_USER,
    peering: str = "",
    priority: int = 0,
    lifetime: int = 60,
    name: str = "rollwise",
) -> Controller:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(local_cluster.user_kubeconfig(user, ("system:masters",))),
        "ROLLWISE_SERVING_IMAGE": SERVING_IMAGE,
        "ROLLWISE_PROMETHEUS_URL": local_cluster.PROMETHEUS_URL,
        "ROLLWISE_METRICS_PORT": str(port),
        "ROLLWISE_WATCH_NAMESPACE": watch_ns,
        "ROLLWISE_RESYNC_SECONDS": str(resync),
        "ROLLWISE_PEERING": peering,
        "ROLLWISE_PEERING_LIFETIME_SECONDS": str(lifetime),
        "ROLLWISE_LOG_LEVEL": "info",
    }
    if priority:
        env["ROLLWISE_PEERING_PRIORITY"] = str(priority)
    # ROLLWISE_BENCH_OPERATOR: another entry point to A/B (e.g. a script patching a dependency).
    script = os.environ.get("ROLLWISE_BENCH_OPERATOR")
    argv = [sys.executable, script] if script else [sys.executable, "-m", "rollwise.main"]
    return start_process(name, argv, env, port, "rollwise_operator_reconcile_duration_seconds_count")


def argo_binary() -> Path:
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "argo" / "build.sh")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ARGO_VERSION": ARGO_VERSION},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench/argo/build.sh failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def start_argo(binary: Path, namespace: str, *, resync: int) -> Controller:
    port = free_port()
    argv = [
        str(binary / "rollouts-controller"),
        f"--kubeconfig={local_cluster.user_kubeconfig(ARGO_USER, ('system:masters',))}",
        "--namespaced",
        f"--namespace={namespace}",
        f"--metricsPort={port}",
        f"--healthzPort={free_port()}",
        "--leader-elect=false",
        f"--rollout-resync={resync}",
    ]
    # Argo's analysis Jobs and notifications look for their own namespace; point them at ours.
    env = {**os.environ, "POD_NAMESPACE": namespace}
    return start_process("argo-rollouts", argv, env, port, "argo_rollouts_controller_info")


# --- the audit log -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One completed write request from the audit log."""

    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    at: float  # stageTimestamp (ResponseComplete), epoch seconds
    received: float  # requestReceivedTimestamp: `at - received` is the API server's own time

    @property
    def kind(self) -> str:
        return f"{self.verb} {self.resource}{'/' + self.subresource if self.subresource else ''}"


def _epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def audit_writes(since: float, until: float | None = None, *, namespace_prefix: str = PREFIX) -> list[Write]:
    """Writes in namespaces starting with `namespace_prefix` completed in [since, until].

    Reads the live log and its rotated backups (kube-apiserver rotates at 200 MB) that were still
    written after `since`; lines are filtered by a substring before they are parsed."""
    time.sleep(0.5)  # the log backend writes synchronously, but let the last responses land
    live = local_cluster.audit_path()
    files = sorted(live.parent.glob("audit*.log"), key=lambda p: p.stat().st_mtime)
    needle = f'"namespace":"{namespace_prefix}'.encode()
    out: list[Write] = []
    for path in files:
        if path.stat().st_mtime < since:
            continue
        with path.open("rb") as f:
            for line in f:
                if needle not in line:
                    continue
                event = json.loads(line)
                if event.get("stage") != "ResponseComplete":
                    continue
                at = _epoch(event["stageTimestamp"])
                if at < since or (until is not None and at > until):
                    continue
                ref = event.get("objectRef") or {}
                out.append(
                    Write(
                        user=event.get("user", {}).get("username", ""),
                        verb=event.get("verb", ""),
                        resource=ref.get("resource", ""),
                        subresource=ref.get("subresource", ""),
                        namespace=ref.get("namespace", ""),
                        name=ref.get("name", ""),
                        code=int((event.get("responseStatus") or {}).get("code", 0)),
                        at=at,
                        received=_epoch(event["requestReceivedTimestamp"]),
                    )
                )
    out.sort(key=lambda w: w.at)
    return out


def owner_of(write: Write) -> str:
    """The benchmark object a write belongs to: names are `<m|r><4 digits>` plus a suffix."""
    match = re.match(r"^([mr]\d{4})", write.name)
    return match.group(1) if match else ""


# --- manifests ---------------------------------------------------------------------------------

KWOK_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {components.NODE_KIND_LABEL: "simulated"},
    "tolerations": [{"key": components.SIMULATED_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
}
STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"durationSeconds": PAUSE_SECONDS}},
    {"setWeight": 50},
    {"analysis": {}},
    {"setWeight": 75},
    {"pause": {"durationSeconds": PAUSE_SECONDS}},
]
TIMED_STEPS = {1: "pause", 3: "analysis", 5: "pause"}


def model_deployment(name: str, version: str, replicas: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "iris",
                "version": version,
                "uri": "http://models.rollwise-system.svc/iris-v1.joblib",
                "sha256": "0f0a20f65cbf4da94225d9b38bfeb5560e49441f44f9a8126a7f0015374a49f8",
                "format": "sklearn",
            },
            "runtime": {"replicas": replicas, **KWOK_PLACEMENT},
            "rollout": {
                "canary": {"steps": steps},
                "analysis": {
                    "intervalSeconds": ANALYSIS_INTERVAL,
                    "count": ANALYSIS_COUNT,
                    "minSampleCount": 0,
                    "metrics": [{"name": "up", "query": ANALYSIS_QUERY, "threshold": {"min": 0}}],
                },
            },
        },
    }


def argo_steps() -> list[dict[str, Any]]:
    """STEPS in Argo's words (its analysis step names an AnalysisTemplate)."""
    out: list[dict[str, Any]] = []
    for step in STEPS:
        if "setWeight" in step:
            out.append({"setWeight": step["setWeight"]})
        elif "pause" in step:
            out.append({"pause": {"duration": f"{step['pause']['durationSeconds']}s"}})
        else:
            out.append({"analysis": {"templates": [{"templateName": "bench-up"}]}})
    return out


def analysis_template() -> dict[str, Any]:
    """Argo's twin of Rollwise's analysis: the same query, interval and count against Prometheus."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "bench-up"},
        "spec": {
            "metrics": [
                {
                    "name": "up",
                    "interval": f"{ANALYSIS_INTERVAL}s",
                    "count": ANALYSIS_COUNT,
                    "successCondition": "result[0] >= 0",
                    "provider": {
                        "prometheus": {"address": local_cluster.PROMETHEUS_URL, "query": ANALYSIS_QUERY}
                    },
                }
            ]
        },
    }


def rollout(name: str, version: str, replicas: int) -> dict[str, Any]:
    """An Argo Rollout running the same pod as a ModelDeployment's stable track would."""
    labels = {"app": name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **KWOK_PLACEMENT,
                    "containers": [
                        {
                            "name": "server",
                            "image": SERVING_IMAGE,
                            "args": ["--model-uri", "http://models.rollwise-system.svc/iris-v1.joblib"],
                            "env": [{"name": "MODEL_VERSION", "value": version}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ],
                },
            },
            "strategy": {"canary": {"steps": argo_steps()}},
        },
    }


# --- the cluster -------------------------------------------------------------------------------


class Kube:
    """The bench's own client (its own identity, so its writes never count as a controller's)."""

    def __init__(self) -> None:
        self.api = config.new_client_from_config(
            config_file=str(local_cluster.user_kubeconfig(BENCH_USER, ("system:masters",)))
        )
        self.api.configuration.connection_pool_maxsize = 16
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.events = client.EventsV1Api(self.api)

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        wait("default ServiceAccount", lambda: self.core.read_namespaced_service_account("default", name), 60)

    def delete_namespace(self, name: str, timeout: float = 900) -> None:
        """Delete our objects first, then the namespace.

        Kopf (1.45) stops watching a namespace matched by a glob as soon as it is marked for
        deletion and its status shows no blocker yet, which comes before the namespace controller
        reports the objects still held by finalizers: Kopf's finalizers on the ModelDeployments
        would then never be removed (nolar/kopf#1088 describes the same race). So the objects go
        first, while the controller still watches them."""
        started = time.monotonic()
        for what in (MD, RO):
            with contextlib.suppress(client.ApiException):
                self.custom.delete_collection_namespaced_custom_object(*what[:2], name, what[2])
        with contextlib.suppress(AssertionError):
            wait(
                f"objects in {name} deleted",
                lambda: not self.list(MD, name) and not self.list(RO, name),
                timeout,
                every=2,
            )
        with contextlib.suppress(client.ApiException):
            self.core.delete_namespace(name)

        def gone() -> bool:
            try:
                self.core.read_namespace(name)
            except client.ApiException as err:
                return err.status == 404
            return False

        try:
            wait(f"namespace {name} deleted", gone, timeout, every=2)
            log(f"namespace {name} deleted in {time.monotonic() - started:.0f}s")
            return
        except AssertionError:
            pass
        # No operator left to release Kopf's finalizers (it died or failed to start): drop them.
        log(f"namespace {name} still terminating after {timeout:.0f}s; removing finalizers")
        for md in self.list(MD, name):
            with contextlib.suppress(client.ApiException):
                self.custom.patch_namespaced_custom_object(
                    *MD[:2], name, MD[2], md["metadata"]["name"], {"metadata": {"finalizers": None}}
                )
        with contextlib.suppress(AssertionError):
            wait(f"namespace {name} deleted", gone, 120, every=2)

    def list(self, what: tuple[str, str, str], namespace: str) -> list[dict[str, Any]]:
        group, version, plural = what
        try:
            resp = self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, _preload_content=False
            )
        except client.ApiException as err:
            if err.status == 404:  # the kind is not installed (e.g. a run without Argo)
                return []
            raise
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def create_all(
        self, what: tuple[str, str, str], namespace: str, bodies: Sequence[dict[str, Any]]
    ) -> None:
        group, version, plural = what

        def one(body: dict[str, Any]) -> None:
            self.custom.create_namespaced_custom_object(
                group, version, namespace, plural, body, _preload_content=False
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, bodies))

    def patch_all(
        self, what: tuple[str, str, str], namespace: str, patches: dict[str, dict[str, Any]]
    ) -> None:
        group, version, plural = what

        def one(item: tuple[str, dict[str, Any]]) -> None:
            self.custom.patch_namespaced_custom_object(
                group, version, namespace, plural, item[0], item[1], _preload_content=False
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, patches.items()))


def wait(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as err:  # keep polling; report the last error at the deadline
            last = err
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last!r}")


def apply_file(path: Path) -> None:
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


def wait_established(crd: str) -> None:
    """A CRD just applied has no status yet (kubectl wait fails on that): poll for Established."""
    path = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait(
        f"CRD {crd} Established",
        lambda: local_cluster.kubectl("get", "crd", crd, "-o", path, check=False).stdout.strip() == "True",
        60,
    )


def kwok_nodes_for(pods: int) -> int:
    return max(3, math.ceil(pods * 1.3 / PODS_PER_KWOK_NODE))


class StatusLog:
    """Every distinct status the bench's watch saw, per object, with the time it arrived."""

    def __init__(self, kube: Kube, what: tuple[str, str, str], namespace: str) -> None:
        self.kube, self.what, self.namespace = kube, what, namespace
        self.seen: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusLog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        group, version, plural = self.what
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.kube.custom.list_namespaced_custom_object,
                    group,
                    version,
                    self.namespace,
                    plural,
                    timeout_seconds=5,
                ):
                    obj = event["object"]
                    name, status = obj["metadata"]["name"], obj.get("status") or {}
                    history = self.seen[name]
                    if not history or history[-1][1] != status:
                        history.append((time.time(), status))
                    if self._stop.is_set():
                        break
            except Exception as err:  # a dropped watch is re-opened; the next list catches up
                log(f"status watch: {err!r}; re-opening")
                time.sleep(0.5)
            finally:
                w.stop()


# --- one wave ----------------------------------------------------------------------------------


@dataclass
class Subject:
    """What differs between Rollwise and Argo Rollouts in a wave."""

    label: str
    user: str
    what: tuple[str, str, str]
    prefix: str  # object names: m0000 / r0000
    manifest: Callable[[str], dict[str, Any]]
    ready: Callable[[dict[str, Any]], bool]
    start: Callable[[str], Controller]
    reconciled: Callable[[Controller], float]
    child_resources: frozenset[str]
    workload: tuple[str, str]  # (resource, controller user) whose status update means pods Ready
    check: Callable[[Kube, str, list[dict[str, Any]]], None]
    prepare: Callable[[Kube, str], None] = lambda kube, namespace: None


@dataclass
class WaveResult:
    label: str
    size: int
    apply_seconds: float
    children_p50: float
    children_p99: float
    children_total: float
    ready_p50: float
    ready_p99: float
    ready_total: float
    lag_p50: float
    lag_p99: float
    writes_per_object: float
    idle_writes_per_min: float
    idle_writes: dict[str, int]
    rss_peak: float
    rss_idle: float
    cpu_wave_per_min: float
    cpu_wave_total: float
    cpu_idle_per_min: float
    restart_settle: float
    restart_writes: int
    restart_cpu: float
    load: str
    restart_kinds: dict[str, int] = field(default_factory=dict)
    write_costs: dict[str, tuple[int, float]] = field(default_factory=dict)
    """The controller's writes in the wave by kind: count, and the API server's p50 time (ms)."""
    reconciles_per_object: float = 0.0
    """Passes in the wave (its own counter: Rollwise's ok reconciles, Argo's rollout_reconcile_count)."""


def md_ready(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    return bool(
        status.get("phase") == "Healthy"
        and ready.get("status") == "True"
        and status.get("observedGeneration") == md["metadata"]["generation"]
    )


def rollout_ready(ro: dict[str, Any]) -> bool:
    status = ro.get("status") or {}
    return bool(
        status.get("phase") == "Healthy"
        and status.get("availableReplicas") == ro["spec"]["replicas"]
        and status.get("observedGeneration")
        in (str(ro["metadata"]["generation"]), ro["metadata"]["generation"])
    )


def check_rollwise_children(kube: Kube, namespace: str, objects: list[dict[str, Any]]) -> None:
    """Every ModelDeployment has exactly its children, owned by it, and its pods are Ready."""
    deps = {d.metadata.name: d for d in kube.apps.list_namespaced_deployment(namespace).items}
    svcs = {s.metadata.name: s for s in kube.core.list_namespaced_service(namespace).items}
    problems: list[str] = []
    for md in objects:
        name, uid = md["metadata"]["name"], md["metadata"]["uid"]
        want = md["spec"]["runtime"]["replicas"]
        dep = deps.get(f"{name}-stable")
        if dep is None or (dep.status.ready_replicas or 0) != want or dep.spec.replicas != want:
            problems.append(f"{name}: Deployment {name}-stable missing or not {want}/{want} ready")
        elif [o.uid for o in dep.metadata.owner_references or []] != [uid]:
            problems.append(f"{name}: Deployment {name}-stable not owned by it")
        if name not in svcs:
            problems.append(f"{name}: Service {name} missing")
        # At rest behind the replicas router only the Service clients call exists.
        problems += [
            f"{name}: Service {t} at rest" for t in (f"{name}-stable", f"{name}-candidate") if t in svcs
        ]
    extra = set(deps) - {f"{m['metadata']['name']}-stable" for m in objects}
    if extra:
        problems.append(f"unexpected Deployments: {sorted(extra)[:10]}")
    assert not problems, f"{len(problems)} children problems, first: {problems[:10]}"


def check_argo_children(kube: Kube, namespace: str, objects: list[dict[str, Any]]) -> None:
    """Every Rollout has one ReplicaSet, owned by it, with all its pods Ready."""
    by_owner: dict[str, list[Any]] = defaultdict(list)
    for rs in kube.apps.list_namespaced_replica_set(namespace).items:
        for ref in rs.metadata.owner_references or []:
            by_owner[ref.uid].append(rs)
    problems = []
    for ro in objects:
        sets = by_owner.get(ro["metadata"]["uid"], [])
        want = ro["spec"]["replicas"]
        if len(sets) != 1 or (sets[0].status.ready_replicas or 0) != want:
            problems.append(f"{ro['metadata']['name']}: {len(sets)} ReplicaSets, want 1 with {want} ready")
    assert not problems, f"{len(problems)} children problems, first: {problems[:10]}"


@contextlib.contextmanager
def profiled(ctl: Controller, enabled: bool, what: str) -> Iterator[None]:
    """Sample the controller's Python stacks with py-spy while the block runs (collapsed stacks)."""
    if not enabled:
        yield
        return
    out = WORK / f"{PREFIX}-{what}.txt"
    spy = subprocess.Popen(
        [PY_SPY, "record", "--pid", str(ctl.pid), "--format", "raw", "--rate", "50", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        log(f"profile of {what}: {out}")


def run_wave(
    kube: Kube, subject: Subject, size: int, namespace: str, *, idle: float, profile: bool = False
) -> WaveResult:
    log(f"{subject.label} x{size}: namespace {namespace}; load {load()}")
    kube.create_namespace(namespace)
    subject.prepare(kube, namespace)
    ctl = subject.start(namespace)
    try:
        time.sleep(3)  # let it list and settle on an empty namespace
        names = [f"{subject.prefix}{i:04d}" for i in range(size)]
        cpu0, t0 = ctl.cpu_seconds(), time.time()
        ctl.reset_peak()
        with profiled(ctl, profile and subject.label == "rollwise", f"{subject.label}-{size}-wave"):
            kube.create_all(subject.what, namespace, [subject.manifest(n) for n in names])
            applied = time.time()
            log(f"{subject.label} x{size}: applied in {applied - t0:.1f}s; waiting for Ready")
            wait(
                f"{size} {subject.label} objects Ready",
                lambda: sum(map(subject.ready, kube.list(subject.what, namespace))) == size,
                max(600, size * 1.5),
                every=3,
            )
            quiet = wait_quiet(subject.user, namespace, since=t0)
        cpu1, t1 = ctl.cpu_seconds(), time.time()
        reconciles = subject.reconciled(ctl)
        rss_peak = ctl.peak_rss
        objects = kube.list(subject.what, namespace)
        subject.check(kube, namespace, objects)
        wave = [w for w in audit_writes(t0 - 1, quiet) if w.namespace == namespace]
        latency = wave_latencies(subject, wave, names)
        log(
            f"{subject.label} x{size}: Ready; children p99 {latency['children_p99']:.2f}s, "
            f"Ready p99 {latency['ready_p99']:.2f}s, total {latency['ready_total']:.1f}s"
        )

        log(f"{subject.label} x{size}: idle for {idle:.0f}s")
        i0, cpu_i0 = time.time(), ctl.cpu_seconds()
        time.sleep(idle)
        i1, cpu_i1 = time.time(), ctl.cpu_seconds()
        rss_idle = ctl.rss_mib()
        idle_writes = [w for w in audit_writes(i0, i1) if w.namespace == namespace and w.user == subject.user]

        log(f"{subject.label} x{size}: restart")
        ctl.stop()
        r0 = time.time()
        ctl = subject.start(namespace)
        with profiled(ctl, profile and subject.label == "rollwise", f"{subject.label}-{size}-restart"):
            wait(
                f"restarted {subject.label} to reconcile all {size}",
                lambda: subject.reconciled(ctl) >= size,
                max(300, size),
                every=0.2,
            )
        r1 = time.time()
        restart_cpu = ctl.cpu_seconds()
        time.sleep(10)
        restart_writes = [
            w for w in audit_writes(r0, time.time()) if w.namespace == namespace and w.user == subject.user
        ]
    finally:
        # Deleted while the controller runs: Kopf's finalizer on each object needs it to go away.
        kube.delete_namespace(namespace)
        ctl.stop()
    kinds: dict[str, int] = defaultdict(int)
    for w in idle_writes:
        kinds[w.kind] += 1
    mine = [w for w in wave if w.user == subject.user]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for w in mine:
        by_kind[w.kind].append((w.at - w.received) * 1000)
    result = WaveResult(
        label=subject.label,
        size=size,
        apply_seconds=applied - t0,
        **latency,
        writes_per_object=len(mine) / size,
        idle_writes_per_min=len(idle_writes) / ((i1 - i0) / 60),
        idle_writes=dict(kinds),
        rss_peak=rss_peak,
        rss_idle=rss_idle,
        cpu_wave_per_min=(cpu1 - cpu0) / ((t1 - t0) / 60),
        cpu_wave_total=cpu1 - cpu0,
        cpu_idle_per_min=(cpu_i1 - cpu_i0) / ((i1 - i0) / 60),
        restart_settle=r1 - r0,
        restart_writes=len(restart_writes),
        restart_cpu=restart_cpu,
        load=load(),
        reconciles_per_object=reconciles / size,
        restart_kinds=dict(Counter(w.kind for w in restart_writes)),
        write_costs={k: (len(v), pct(v, 50)) for k, v in sorted(by_kind.items())},
    )
    log(f"{subject.label} x{size}: {result}")
    return result


def wait_quiet(user: str, namespace: str, *, since: float, quiet_for: float = 5, limit: float = 120) -> float:
    """Wait until `user` has written nothing in `namespace` for `quiet_for` s; return its last write."""
    deadline = time.time() + limit
    last = since
    while time.time() < deadline:
        mine = [w for w in audit_writes(last) if w.namespace == namespace and w.user == user]
        if mine:
            last = mine[-1].at
        if time.time() - last >= quiet_for:
            return last + 0.001
        time.sleep(quiet_for / 2)
    return last + 0.001


def wave_latencies(subject: Subject, wave: list[Write], names: list[str]) -> dict[str, float]:
    created: dict[str, float] = {}
    children: dict[str, float] = {}
    ready: dict[str, float] = {}
    workload_ready: dict[str, float] = {}
    plural = subject.what[2]
    workload, workload_user = subject.workload
    for w in wave:
        owner = owner_of(w)
        if not owner:
            continue
        if w.user == BENCH_USER and w.resource == plural and w.verb == "create" and w.code == 201:
            created[owner] = w.at
        elif w.user == subject.user and w.resource in subject.child_resources and w.code == 201:
            children[owner] = max(children.get(owner, 0.0), w.at)
        elif w.user == subject.user and w.resource == plural and w.subresource == "status":
            ready[owner] = w.at
        elif w.resource == workload and w.subresource == "status" and w.user == workload_user:
            workload_ready[owner] = w.at
    missing = [n for n in names if n not in created or n not in children or n not in ready]
    assert not missing, f"{len(missing)} objects lack a create, child or status write: {missing[:10]}"
    to_children = [children[n] - created[n] for n in names]
    to_ready = [ready[n] - created[n] for n in names]
    lag = [ready[n] - workload_ready[n] for n in names if n in workload_ready]
    first = min(created.values())
    return {
        "children_p50": pct(to_children, 50),
        "children_p99": pct(to_children, 99),
        "children_total": max(children.values()) - first,
        "ready_p50": pct(to_ready, 50),
        "ready_p99": pct(to_ready, 99),
        "ready_total": max(ready.values()) - first,
        "lag_p50": pct(lag, 50),
        "lag_p99": pct(lag, 99),
    }


def rollwise_subject(resync: int) -> Subject:
    return Subject(
        label="rollwise",
        user=ROLLWISE_USER,
        what=MD,
        prefix="m",
        manifest=lambda name: model_deployment(name, "1.0.0", 2, STEPS),
        ready=md_ready,
        start=lambda ns: start_rollwise(MD_GLOB, resync=resync),
        reconciled=lambda ctl: metric_sum(ctl.scrape(), "rollwise_operator_reconciles_total", result="ok"),
        child_resources=frozenset({"deployments", "services"}),
        workload=("deployments", "system:serviceaccount:kube-system:deployment-controller"),
        check=check_rollwise_children,
    )


def argo_subject(binary: Path, resync: int) -> Subject:
    return Subject(
        label="argo-rollouts",
        user=ARGO_USER,
        what=RO,
        prefix="r",
        manifest=lambda name: rollout(name, "1.0.0", 2),
        ready=rollout_ready,
        start=lambda ns: start_argo(binary, ns, resync=resync),
        reconciled=lambda ctl: metric_sum(ctl.scrape(), "rollout_reconcile_count"),
        child_resources=frozenset({"replicasets"}),
        workload=("replicasets", "system:serviceaccount:kube-system:replicaset-controller"),
        check=check_argo_children,
        prepare=create_analysis_template,
    )


def create_analysis_template(kube: Kube, namespace: str) -> None:
    """Argo rejects a Rollout whose analysis step names a template that does not exist."""
    kube.custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "analysistemplates", analysis_template()
    )


# --- canary rollouts ---------------------------------------------------------------------------


@dataclass
class CanaryResult:
    label: str
    size: int
    step_p50: float
    step_p99: float
    step_max: float
    pause_p99: float
    samples: int
    total_seconds: float
    queries: float
    queries_per_second: float
    prometheus_queries: float
    cpu_per_min: float
    rss_peak: float
    load: str


def prometheus_query_count() -> float:
    with urllib.request.urlopen(f"{local_cluster.PROMETHEUS_URL}/metrics", timeout=5) as resp:
        samples = parse_metrics(resp.read().decode())
    return metric_sum(samples, "prometheus_http_requests_total", handler="/api/v1/query")


def rollwise_step_entries(kube: Kube, namespace: str) -> dict[str, list[int]]:
    """Per ModelDeployment, the step numbers its Events say were entered, in time order."""
    # Raw JSON: the typed events.k8s.io model rejects controllers' Events that lack eventTime.
    resp = kube.core.list_namespaced_event(namespace, _preload_content=False)
    entries: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for event in json.loads(resp.data)["items"]:
        match = re.match(r"step (\d+)/\d+:", event.get("message") or "")
        regarding = event.get("involvedObject") or {}
        if match and regarding.get("kind") == "ModelDeployment":
            entries[regarding["name"]].append((event.get("eventTime") or "", int(match.group(1))))
    return {name: [k for _, k in sorted(seen)] for name, seen in entries.items()}


def check_steps(entries: dict[str, list[int]], names: Sequence[str], steps: int) -> None:
    """Every step entered exactly once, in order (no step repeated or skipped)."""
    bad = {n: entries.get(n, []) for n in names if entries.get(n, []) != list(range(1, steps + 1))}
    assert not bad, f"{len(bad)} rollouts entered steps out of order or twice: {dict(list(bad.items())[:5])}"


def check_step_starts(seen: dict[str, list[tuple[float, dict[str, Any]]]], names: Sequence[str]) -> None:
    """In the watched statuses, each step has one start time and steps never go back."""
    problems = []
    for name in names:
        starts: dict[int, set[str]] = defaultdict(set)
        order: list[int] = []
        for _, status in seen.get(name, []):
            step = status.get("currentStep")
            if step is None or status.get("phase") not in ("Progressing", "Paused"):
                continue
            starts[step].add(str(status.get("stepStartedAt")))
            if not order or order[-1] != step:
                order.append(step)
        if order != sorted(set(order)) or any(len(s) > 1 for s in starts.values()):
            problems.append(f"{name}: steps {order}, starts {dict(starts)}")
    assert not problems, f"{len(problems)} rollouts repeated a step: {problems[:5]}"


def rollwise_due_times(history: list[tuple[float, dict[str, Any]]]) -> dict[int, float]:
    """Step index -> when the controller's own timer for that step fell due."""
    due: dict[int, float] = {}
    for _, status in history:
        step, started = status.get("currentStep"), status.get("stepStartedAt")
        if step not in TIMED_STEPS or started is None or status.get("phase") != "Progressing":
            continue
        begun = _epoch(started)
        if TIMED_STEPS[step] == "pause":
            due[step] = begun + PAUSE_SECONDS
        else:
            analysis = status.get("analysis") or {}
            if analysis.get("step") == step and analysis.get("startedAt"):
                due[step] = _epoch(analysis["startedAt"]) + ANALYSIS_COUNT * ANALYSIS_INTERVAL
    return due


def argo_due_times(history: list[tuple[float, dict[str, Any]]]) -> dict[int, float]:
    """Pause steps only: Argo's own pause deadline is its stored startTime + duration."""
    due: dict[int, float] = {}
    for _, status in history:
        step = status.get("currentStepIndex")
        for cond in status.get("pauseConditions") or []:
            if cond.get("reason") == "CanaryPauseStep" and step in TIMED_STEPS:
                due[step] = _epoch(cond["startTime"]) + PAUSE_SECONDS
    return due


def step_latencies(
    writes: list[Write], user: str, due: dict[str, dict[int, float]], child_resources: frozenset[str]
) -> tuple[list[float], list[float]]:
    """For each due time, the first write by `user` to the object's children at or after it."""
    by_owner: dict[str, list[float]] = defaultdict(list)
    for w in writes:
        if w.user == user and w.resource in child_resources:
            by_owner[owner_of(w)].append(w.at)
    every, pauses = [], []
    for name, steps in due.items():
        for step, at in steps.items():
            after = [t for t in by_owner.get(name, []) if t >= at]
            assert after, f"{name}: no write after step {step + 1} fell due"
            every.append(after[0] - at)
            if TIMED_STEPS[step] == "pause":
                pauses.append(after[0] - at)
    return every, pauses


def run_canaries(
    kube: Kube, label: str, size: int, namespace: str, start: Callable[[], Controller]
) -> CanaryResult:
    is_argo = label == "argo-rollouts"
    what, prefix = (RO, "r") if is_argo else (MD, "m")
    names = [f"{prefix}{i:04d}" for i in range(size)]
    log(f"{label} canaries x{size}: namespace {namespace}; load {load()}")
    kube.create_namespace(namespace)
    ctl = start()
    try:
        if is_argo:
            create_analysis_template(kube, namespace)
            bodies = [rollout(n, "1.0.0", 4) for n in names]
        else:
            bodies = [model_deployment(n, "1.0.0", 4, STEPS) for n in names]
        kube.create_all(what, namespace, bodies)
        ready = rollout_ready if is_argo else md_ready
        wait(f"{size} at rest", lambda: sum(map(ready, kube.list(what, namespace))) == size, 600, every=2)
        time.sleep(3)
        with StatusLog(kube, what, namespace) as statuses:
            q0, pq0 = ctl.scrape(), prometheus_query_count()
            cpu0, t0 = ctl.cpu_seconds(), time.time()
            ctl.reset_peak()
            if is_argo:
                patch = {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    rollout("x", "2.0.0", 4)["spec"]["template"]["spec"]["containers"][0]
                                ]
                            }
                        }
                    }
                }
                kube.patch_all(what, namespace, {n: patch for n in names})
            else:
                kube.patch_all(what, namespace, {n: {"spec": {"model": {"version": "2.0.0"}}} for n in names})

            def promoted() -> bool:
                items = kube.list(what, namespace)
                if is_argo:
                    return (
                        sum(
                            1
                            for r in items
                            if rollout_ready(r)
                            and r["status"].get("stableRS") == r["status"].get("currentPodHash")
                            and r["status"].get("currentStepIndex") == len(STEPS)
                        )
                        == size
                    )
                return (
                    sum(1 for m in items if md_ready(m) and m["status"].get("stableVersion") == "2.0.0")
                    == size
                )

            wait(f"{size} rollouts promoted", promoted, 600, every=2)
            t1, cpu1 = time.time(), ctl.cpu_seconds()
            q1, pq1 = ctl.scrape(), prometheus_query_count()
            seen = dict(statuses.seen)
        writes = [w for w in audit_writes(t0 - 1, t1 + 1) if w.namespace == namespace]
        if is_argo:
            due = {n: argo_due_times(seen.get(n, [])) for n in names}
            children = frozenset({"replicasets"})
            queries = argo_measurements(kube, namespace)
        else:
            due = {n: rollwise_due_times(seen.get(n, [])) for n in names}
            children = frozenset({"deployments", "services"})
            queries = metric_sum(q1, "rollwise_operator_provider_queries_total") - metric_sum(
                q0, "rollwise_operator_provider_queries_total"
            )
            check_steps(rollwise_step_entries(kube, namespace), names, len(STEPS))
            check_step_starts(seen, names)
            assert queries >= size * ANALYSIS_COUNT, f"only {queries} analysis queries for {size} rollouts"
        every, pauses = step_latencies(writes, ctl_user(label), due, children)
        expected = len(TIMED_STEPS) if not is_argo else 2
        assert len(every) == size * expected, f"{len(every)} timed steps seen, expected {size * expected}"
        window = argo_analysis_window(kube, namespace) if is_argo else rollwise_analysis_window(seen)
        result = CanaryResult(
            label=label,
            size=size,
            step_p50=pct(every, 50),
            step_p99=pct(every, 99),
            step_max=max(every),
            pause_p99=pct(pauses, 99),
            samples=len(every),
            total_seconds=t1 - t0,
            queries=queries,
            queries_per_second=queries / window,
            prometheus_queries=pq1 - pq0,
            cpu_per_min=(cpu1 - cpu0) / ((t1 - t0) / 60),
            rss_peak=ctl.peak_rss,
            load=load(),
        )
    finally:
        kube.delete_namespace(namespace)
        ctl.stop()
    log(f"{label} canaries: {result}")
    return result


def argo_measurements(kube: Kube, namespace: str) -> float:
    """Queries Argo sent: every measurement of every AnalysisRun is one Prometheus query."""
    runs = kube.list(("argoproj.io", "v1alpha1", "analysisruns"), namespace)
    return float(
        sum(
            m.get("count", 0) + m.get("error", 0)
            for r in runs
            for m in r.get("status", {}).get("metricResults", [])
        )
    )


def ctl_user(label: str) -> str:
    return ARGO_USER if label == "argo-rollouts" else ROLLWISE_USER


def rollwise_analysis_window(seen: dict[str, list[tuple[float, dict[str, Any]]]]) -> float:
    """First measurement due -> last one due, across all rollouts (the controller's own clock; the
    first is due one interval after the step starts)."""
    starts = {
        _epoch(a["startedAt"])
        for history in seen.values()
        for _, status in history
        if (a := status.get("analysis") or {}).get("step") == 3 and a.get("startedAt")
    }
    if not starts:
        return math.nan
    return max(starts) + ANALYSIS_COUNT * ANALYSIS_INTERVAL - (min(starts) + ANALYSIS_INTERVAL)


def argo_analysis_window(kube: Kube, namespace: str) -> float:
    """First measurement started -> last one finished, from the AnalysisRuns (1 s resolution)."""
    runs = kube.list(("argoproj.io", "v1alpha1", "analysisruns"), namespace)
    stamps = [
        (_epoch(m["startedAt"]), _epoch(m.get("finishedAt") or m["startedAt"]))
        for r in runs
        for result in r.get("status", {}).get("metricResults", [])
        for m in result.get("measurements", [])
        if m.get("startedAt")
    ]
    if not stamps:
        return math.nan
    return max(f for _, f in stamps) - min(s for s, _ in stamps)


# --- HA ----------------------------------------------------------------------------------------


@dataclass
class HaResult:
    size: int
    lifetime: int
    resumed_seconds: float
    step_delay_p99: float
    follower_writes_before_kill: int


HA_STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"durationSeconds": 40}},
    {"setWeight": 50},
    {"pause": {"durationSeconds": 10}},
]


def run_ha(kube: Kube, size: int, namespace: str, *, lifetime: int, resync: int) -> HaResult:
    log(f"HA x{size}: namespace {namespace}, peering lifetime {lifetime}s; load {load()}")
    kube.create_namespace(namespace)
    apply_file(REPO / "charts" / "rollwise" / "crds" / "kopf-peerings.yaml")
    kube.custom.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "rollwise-bench"}},
    )
    users = {"leader": f"{ROLLWISE_USER}-a", "follower": f"{ROLLWISE_USER}-b"}

    def replica(role: str, priority: int) -> Controller:
        return start_rollwise(
            namespace,
            resync=resync,
            user=users[role],
            peering="rollwise-bench",
            priority=priority,
            lifetime=lifetime,
            name=f"rollwise-{role}",
        )

    leader = replica("leader", 200)
    follower = replica("follower", 100)
    try:
        # Every peer starts paused until it sees the peering object; the leader then resumes.
        wait("the leader to act", lambda: "Resuming operations" in leader.log_path.read_text(), 60)
        assert "Resuming operations" not in follower.log_path.read_text(), "the follower acts too"
        names = [f"m{i:04d}" for i in range(size)]
        kube.create_all(MD, namespace, [model_deployment(n, "1.0.0", 4, HA_STEPS) for n in names])
        wait("HA set at rest", lambda: sum(map(md_ready, kube.list(MD, namespace))) == size, 300, every=1)
        with StatusLog(kube, MD, namespace) as statuses:
            t0 = time.time()
            kube.patch_all(MD, namespace, {n: {"spec": {"model": {"version": "2.0.0"}}} for n in names})
            wait(
                "every rollout in its 40 s pause",
                lambda: all(m["status"].get("currentStep") == 1 for m in kube.list(MD, namespace)),
                120,
            )
            time.sleep(5)
            before = {m["metadata"]["name"]: m["status"]["stepStartedAt"] for m in kube.list(MD, namespace)}
            killed = time.time()
            leader.stop(signal.SIGKILL)
            log("HA: leader killed")
            wait(
                "the follower to reconcile every rollout",
                lambda: (
                    metric_sum(follower.scrape(), "rollwise_operator_reconciles_total", result="ok") >= size
                ),
                lifetime + 120,
                every=0.1,
            )
            resumed = time.time()
            wait(
                "promotion by the follower",
                lambda: (
                    sum(
                        1
                        for m in kube.list(MD, namespace)
                        if md_ready(m) and m["status"].get("stableVersion") == "2.0.0"
                    )
                    == size
                ),
                300,
                every=1,
            )
            seen = dict(statuses.seen)
        writes = [w for w in audit_writes(t0 - 1) if w.namespace == namespace]
        follower_early = [
            w
            for w in writes
            if w.user == users["follower"] and w.at < killed and w.resource != "kopfpeerings"
        ]
        leader_late = [w for w in writes if w.user == users["leader"] and w.at > killed + 1]
        assert not follower_early, f"the follower wrote before the leader died: {follower_early[:5]}"
        assert not leader_late, f"the killed leader still wrote: {leader_late[:5]}"
        check_steps(rollwise_step_entries(kube, namespace), names, len(HA_STEPS))
        check_step_starts(seen, names)
        for name, started in before.items():
            kept = {s.get("stepStartedAt") for _, s in seen[name] if s.get("currentStep") == 1}
            assert kept == {started}, f"{name}: the interrupted step restarted ({kept} vs {started})"
        # How late the interrupted pause ended: its due time -> the follower's write of the next step.
        delays = []
        for name, started in before.items():
            due = _epoch(started) + 40
            after = [
                w.at
                for w in writes
                if owner_of(w) == name
                and w.user == users["follower"]
                and w.resource in ("deployments", "services")
                and w.at >= due
            ]
            assert after, f"{name}: the follower never applied step 3"
            delays.append(after[0] - due)
    finally:
        kube.delete_namespace(namespace)
        leader.stop(signal.SIGKILL)
        follower.stop()
    result = HaResult(
        size=size,
        lifetime=lifetime,
        resumed_seconds=resumed - killed,
        step_delay_p99=pct(delays, 99),
        follower_writes_before_kill=len(follower_early),
    )
    log(f"HA: {result}")
    return result


# --- the cluster's own floor -------------------------------------------------------------------


@dataclass
class FloorResult:
    what: str
    count: int
    seconds: float
    server_p50_ms: float
    server_p99_ms: float


def run_floor(kube: Kube, count: int, namespace: str) -> list[FloorResult]:
    """What children cost the API server here, with no controller at all: `count` ClusterIP
    Services, headless Services and ReplicaSets created by the bench, 6 at a time (asyncio's
    default thread pool on 2 cores, as the operator's)."""
    kube.create_namespace(namespace)
    out = []
    try:
        for what in ("Service (ClusterIP)", "Service (headless)", "ReplicaSet (0 replicas)"):
            t0 = time.time()

            def one(i: int, what: str = what) -> None:
                name = f"f{i:04d}"
                labels = {"app": name}
                if what.startswith("Service"):
                    spec: dict[str, Any] = {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}
                    if "headless" in what:
                        spec["clusterIP"] = "None"
                    body = {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": f"{name}-{len(out)}"},
                        "spec": spec,
                    }
                    kube.core.create_namespaced_service(namespace, body)
                else:
                    rollout_pod = rollout(name, "1.0.0", 0)["spec"]
                    body = {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "metadata": {"name": name},
                        "spec": {
                            "replicas": 0,
                            "selector": rollout_pod["selector"],
                            "template": rollout_pod["template"],
                        },
                    }
                    kube.apps.create_namespaced_replica_set(namespace, body)

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                list(pool.map(one, range(count)))
            t1 = time.time()
            resource = "services" if what.startswith("Service") else "replicasets"
            lat = [
                (w.at - w.received) * 1000
                for w in audit_writes(t0 - 1, t1 + 1)
                if w.namespace == namespace
                and w.user == BENCH_USER
                and w.verb == "create"
                and w.resource == resource
            ]
            out.append(FloorResult(what, count, t1 - t0, pct(lat, 50), pct(lat, 99)))
            log(f"floor: {out[-1]}")
    finally:
        kube.delete_namespace(namespace)
    return out


def floor_table(results: Sequence[FloorResult]) -> str:
    head = [
        "| created by the bench, 6 at a time | count | creates/s | API server p50 / p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = [
        f"| {r.what} | {r.count} | {fmt(r.count / r.seconds, 0)} "
        f"| {fmt(r.server_p50_ms, 0)} / {fmt(r.server_p99_ms, 0)} |"
        for r in results
    ]
    return "\n".join(head + rows)


# --- report ------------------------------------------------------------------------------------


def wave_table(waves: Sequence[WaveResult]) -> str:
    head = (
        "| controller | objects | apply s | children p50 / p99 / total s | Ready p50 / p99 / total s "
        "| Ready lag p50 / p99 s | writes per object | reconciles per object | idle writes/min "
        "| RSS peak / idle MB | CPU s/min wave / idle | restart settle s | restart writes "
        "| load (1/5/15 min) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    rows = [
        f"| {w.label} | {w.size:,} | {fmt(w.apply_seconds, 1)} "
        f"| {fmt(w.children_p50)} / {fmt(w.children_p99)} / {fmt(w.children_total, 1)} "
        f"| {fmt(w.ready_p50)} / {fmt(w.ready_p99)} / {fmt(w.ready_total, 1)} "
        f"| {fmt(w.lag_p50)} / {fmt(w.lag_p99)} | {fmt(w.writes_per_object, 1)} "
        f"| {fmt(w.reconciles_per_object, 1)} | {fmt(w.idle_writes_per_min, 1)} "
        f"| {fmt(w.rss_peak, 0)} / {fmt(w.rss_idle, 0)} "
        f"| {fmt(w.cpu_wave_per_min)} / {fmt(w.cpu_idle_per_min)} | {fmt(w.restart_settle, 1)} "
        f"| {w.restart_writes} | {w.load} |"
        for w in waves
    ]
    return "\n".join([head, *rows])


def canary_table(results: Sequence[CanaryResult]) -> str:
    head = (
        "| controller | rollouts | step latency p50 / p99 / max s (timed steps) | pause steps p99 s "
        "| all promoted in s | analysis queries | queries/s | Prometheus /api/v1/query requests "
        "| CPU s/min | RSS peak MB | load |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    rows = [
        f"| {c.label} | {c.size} | {fmt(c.step_p50, 3)} / {fmt(c.step_p99, 3)} / {fmt(c.step_max, 3)} "
        f"({c.samples}) | {fmt(c.pause_p99, 3)} | {fmt(c.total_seconds, 1)} | {fmt(c.queries, 0)} "
        f"| {fmt(c.queries_per_second, 1)} | {fmt(c.prometheus_queries, 0)} | {fmt(c.cpu_per_min)} "
        f"| {fmt(c.rss_peak, 0)} | {c.load} |"
        for c in results
    ]
    return "\n".join([head, *rows])


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def comparison(waves: Sequence[WaveResult]) -> str:
    """Rollwise / Argo Rollouts at the same size (below 1 means Rollwise used less)."""
    argo = {w.size: w for w in waves if w.label == "argo-rollouts"}
    lines = []
    for w in waves:
        peer = argo.get(w.size)
        if w.label != "rollwise" or peer is None:
            continue
        pairs = [
            (w.children_p99, peer.children_p99),
            (w.ready_p99, peer.ready_p99),
            (w.ready_total, peer.ready_total),
            (w.writes_per_object, peer.writes_per_object),
            (w.rss_peak, peer.rss_peak),
            (w.cpu_wave_total, peer.cpu_wave_total),
            (w.cpu_idle_per_min, peer.cpu_idle_per_min),
            (w.restart_settle, peer.restart_settle),
        ]
        lines.append(f"| {w.size:,} | " + " | ".join(ratio(a, b) for a, b in pairs) + " |")
    if not lines:
        return ""
    return "\n".join(
        [
            "| objects | children p99 | Ready p99 | Ready total | writes per object | RSS peak "
            "| CPU s wave | CPU s/min idle | restart settle |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *lines,
        ]
    )


def goals(waves: Sequence[WaveResult]) -> str:
    top = max((w for w in waves if w.label == "rollwise"), key=lambda w: w.size, default=None)
    peer = max((w for w in waves if w.label == "argo-rollouts"), key=lambda w: w.size, default=None)
    if top is None:
        return ""
    idle = max(w.idle_writes_per_min for w in waves if w.label == "rollwise")
    cpu = ratio(top.cpu_wave_total, peer.cpu_wave_total) if peer else "-"
    cpu_idle = ratio(top.cpu_idle_per_min, peer.cpu_idle_per_min) if peer else "-"
    rows = [
        (
            GOALS["ready_p99"],
            f"children p99 {fmt(top.children_p99)} s; Ready p99 {fmt(top.ready_p99)} s "
            f"(Ready lag p99 {fmt(top.lag_p99)} s) at {top.size:,}"
            + (
                f"; Argo Rollouts: children p99 {fmt(peer.children_p99)} s, Ready p99 "
                f"{fmt(peer.ready_p99)} s at {peer.size:,}"
                if peer
                else ""
            ),
            top.children_p99 <= 1,
        ),
        (GOALS["idle_writes"], f"{fmt(idle, 1)} writes/min (worst size)", idle == 0),
        (
            GOALS["rss"],
            f"peak {fmt(top.rss_peak, 0)} MB, idle {fmt(top.rss_idle, 0)} MB at {top.size:,}",
            top.rss_peak <= 200,
        ),
        (
            GOALS["cpu"],
            f"wave {cpu}, idle {cpu_idle} of Argo's at {top.size:,}",
            peer is not None
            and top.cpu_wave_total <= 2 * peer.cpu_wave_total
            and top.cpu_idle_per_min <= 2 * max(peer.cpu_idle_per_min, 1e-9),
        ),
    ]
    out = ["| goal | measured | met |", "| --- | --- | --- |"]
    out += [f"| {goal} | {measured} | {'yes' if ok else 'no'} |" for goal, measured, ok in rows]
    return "\n".join(out)


def cost_table(waves: Sequence[WaveResult]) -> str:
    """What each controller wrote during its largest wave, and what the API server took per write."""
    largest: dict[str, WaveResult] = {}
    for w in waves:
        if w.size >= largest.get(w.label, w).size:
            largest[w.label] = w
    rows = [
        f"| {w.label} | {w.size:,} | {kind} | {count:,} | {fmt(count / w.size, 1)} | {fmt(ms, 0)} |"
        for w in largest.values()
        for kind, (count, ms) in w.write_costs.items()
    ]
    head = [
        "| controller | objects | write | count | per object | API server p50 ms |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    return "\n".join(head + rows)


def ha_table(results: Sequence[HaResult]) -> str:
    head = [
        "| rollouts | peering lifetime s | kill -> follower reconciled all s "
        "| interrupted 40 s pause ended late by p99 s | follower writes before the kill |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [
        f"| {ha.size} | {ha.lifetime} | {fmt(ha.resumed_seconds, 1)} | {fmt(ha.step_delay_p99, 2)} "
        f"| {ha.follower_writes_before_kill} |"
        for ha in results
    ]
    return "\n".join(head + rows)


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - the driver: one optional phase per flag, top to bottom
    parser = argparse.ArgumentParser(prog="bench/operator_scale.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,300,1000", help="ModelDeployments per wave")
    parser.add_argument("--argo-size", type=int, default=1000, help="Rollouts in Argo's wave; 0 skips Argo")
    parser.add_argument("--canaries", type=int, default=50, help="rollouts started at once; 0 skips")
    parser.add_argument("--ha", type=int, default=10, help="rollouts in the HA scenario; 0 skips")
    parser.add_argument(
        "--ha-lifetime",
        default="60,15",
        help="Kopf peering lifetimes to try, s (60 is Kopf's default and the chart's)",
    )
    parser.add_argument("--idle", type=float, default=120, help="idle window per wave, s")
    parser.add_argument("--resync", type=int, default=60, help="resync period of both controllers, s")
    parser.add_argument("--only-argo", action="store_true", help="skip the Rollwise waves")
    parser.add_argument("--floor", type=int, default=300, help="children created with no controller; 0 skips")
    parser.add_argument("--profile", action="store_true", help="py-spy the operator during its waves")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()] if not args.only_argo else []

    started = time.time()
    peak_pods = max([*(2 * s for s in sizes), 2 * args.argo_size, 7 * args.canaries, 1])
    log(
        f"bench {PREFIX}: sizes {sizes}, argo {args.argo_size}, canaries {args.canaries}, "
        f"HA {args.ha}; load {load()}"
    )
    argo = argo_binary() if args.argo_size else None

    def ready_cluster() -> Kube:
        """Before each phase: the shared cluster may have been restarted (a cold `up` starts empty)
        by another session meanwhile; bring it up, with our kwok nodes and CRDs, again if so."""
        local_cluster.up(kwok_nodes=kwok_nodes_for(peak_pods))
        crds = sorted((REPO / "charts" / "rollwise" / "crds").glob("*.yaml"))
        crds += sorted((argo / "crds").glob("*.yaml")) if argo else []
        for crd in crds:
            apply_file(crd)
        wait_established("modeldeployments.rollwise.dev")
        if argo:
            wait_established("rollouts.argoproj.io")
        return Kube()

    failures: list[str] = []

    def phase(name: str, run: Callable[[Kube], Any]) -> Any:
        """One phase on a ready cluster; a failure is reported at the end, the other phases still run."""
        try:
            return run(ready_cluster())
        except Exception as err:  # an assertion or a broken cluster: report it, go on
            log(f"{name} FAILED: {err!r}"[:2000])
            failures.append(f"{name}: {err}"[:2000])
            return None

    floor: list[FloorResult] = []
    if args.floor:
        floor = phase("floor", lambda kube: run_floor(kube, args.floor, f"{PREFIX}-floor")) or []
    waves: list[WaveResult] = []
    subjects = [(rollwise_subject(args.resync), size, f"{PREFIX}-md-{size}") for size in sizes]
    if argo is not None:
        subjects.append((argo_subject(argo, args.resync), args.argo_size, f"{PREFIX}-argo-{args.argo_size}"))
    for subject, size, namespace in subjects:
        wave = phase(
            f"{subject.label} x{size}",
            lambda kube, s=subject, n=size, ns=namespace: run_wave(
                kube, s, n, ns, idle=args.idle, profile=args.profile
            ),
        )
        if wave is not None:
            waves.append(wave)
    canaries: list[CanaryResult] = []
    if args.canaries and not args.only_argo:
        result = phase(
            "rollwise canaries",
            lambda kube: run_canaries(
                kube,
                "rollwise",
                args.canaries,
                f"{PREFIX}-md-canary",
                lambda: start_rollwise(MD_GLOB, resync=args.resync),
            ),
        )
        canaries += [result] if result else []
    if args.canaries and argo is not None:
        peer = argo
        result = phase(
            "argo-rollouts canaries",
            lambda kube: run_canaries(
                kube,
                "argo-rollouts",
                args.canaries,
                f"{PREFIX}-argo-canary",
                lambda: start_argo(peer, f"{PREFIX}-argo-canary", resync=args.resync),
            ),
        )
        canaries += [result] if result else []
    ha: list[HaResult] = []
    if args.ha and not args.only_argo:
        for lifetime in [int(x) for x in args.ha_lifetime.split(",") if x.strip()]:
            result = phase(
                f"HA lifetime {lifetime}",
                lambda kube, life=lifetime: run_ha(
                    kube, args.ha, f"{PREFIX}-md-ha{life}", lifetime=life, resync=args.resync
                ),
            )
            ha += [result] if result else []

    report = [
        f"Run {time.strftime('%Y-%m-%d %H:%M')} ({PREFIX}), {time.time() - started:.0f} s; "
        f"resync {args.resync} s for both controllers, idle window {args.idle:.0f} s; "
        f"{os.cpu_count()} cores; load at the end {load()}.",
        "",
        "Waves (apply N objects at once, 2 replicas each on kwok nodes):",
        "",
        wave_table(waves),
    ]
    if waves:
        report += ["", "Writes during the largest wave of each controller:", "", cost_table(waves)]
    if floor:
        report += ["", "The cluster's floor (no controller running):", "", floor_table(floor)]
    if cmp := comparison(waves):
        report += ["", "Rollwise / Argo Rollouts at the same size:", "", cmp]
    if canaries:
        report += ["", f"{args.canaries} canary rollouts at once:", "", canary_table(canaries)]
        if len(canaries) == 2:
            rw, peer = canaries
            report += [
                "",
                f"Pause-step latency p99 Rollwise / Argo: {ratio(rw.pause_p99, peer.pause_p99)}; "
                f"CPU s/min: {ratio(rw.cpu_per_min, peer.cpu_per_min)}.",
            ]
    if ha:
        report += ["", "HA (2 replicas, leader SIGKILLed mid-pause):", "", ha_table(ha)]
    report += ["", "Goals (printed, not asserted):", "", goals(waves)]
    if failures:
        report += ["", "FAILED (correctness checks or a broken phase):", "", *[f"- {f}" for f in failures]]
    text = "\n".join(report)
    print(text)
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / f"operator_scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "waves": [w.__dict__ for w in waves],
                "canaries": [c.__dict__ for c in canaries],
                "ha": [h.__dict__ for h in ha],
                "floor": [f.__dict__ for f in floor],
                "failures": failures,
                "report": text,
            },
            indent=1,
        )
    )
    log(f"results: {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""What the Gateway path adds to a request: the same serving pod reached through its Service
(kube-proxy's iptables rules) and through the local cluster's Gateway (Traefik), side by side.

    .venv/bin/python bench/gateway.py [--duration 5] [--concurrency 1,16,64] [--rounds 3]

Brings the local cluster up (`e2e/cluster.py`: Traefik runs there as the Gateway API data plane),
deploys one Iris scikit-learn pod as the operator would render it (`plan/desired.py`, no operator
running) with its Services and an HTTPRoute attached to the Gateway, and drives both paths from
the host with wrk (one thread, keep-alive), alternating path by path for `--rounds` rounds per
concurrency so drift on a shared machine falls on both alike. Prints median req/s, p50 and p99 per
path, and the p50 the Gateway adds. The namespace is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "contract")]

from rollwise.api.v1alpha1 import ModelDeployment  # noqa: E402
from rollwise.plan.desired import desired_deployment, desired_services  # noqa: E402
from rollwise.plan.names import Track  # noqa: E402
from rollwise.plan.revision import revision_from_spec  # noqa: E402

from bench.serving import WORK, Result, lua_script, wrk  # noqa: E402
from e2e import cluster, modelstore  # noqa: E402
from e2e import components as cfg  # noqa: E402
from e2e.traffic import BODIES, send  # noqa: E402

NAMESPACE = "rollwise-bench-gateway"
PATH = "/v2/models/iris/infer"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def serving_image() -> str:
    import subprocess  # noqa: PLC0415

    proc = subprocess.run(
        ["bash", str(REPO / "serving-image" / "build-image.sh"), "--import"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


def objects(image: str) -> list[dict[str, Any]]:
    """The stable track as the operator renders it (ownerless: no ModelDeployment exists here),
    its Services, and an HTTPRoute on the cluster's Gateway to the stable Service."""
    doc = yaml.safe_load((REPO / "examples" / "iris-sklearn.yaml").read_text())
    doc["metadata"]["namespace"] = NAMESPACE
    doc["spec"]["model"].update(
        uri=modelstore.uri_of("iris-v1.joblib"), sha256=modelstore.sha256_of("iris-v1.joblib")
    )
    md = ModelDeployment.model_validate(doc)
    dep = desired_deployment(
        md, track=Track.STABLE, revision=revision_from_spec(md), replicas=1, owner_uid="", serving_image=image
    )
    out: list[dict[str, Any]] = [dep, *desired_services(md, owner_uid="", track_services=True)]
    for obj in out:
        obj["metadata"].pop("ownerReferences", None)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "iris", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": cfg.GATEWAY_NAME, "namespace": cfg.GATEWAY_NAMESPACE}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/iris"}}],
                    "backendRefs": [{"name": f"{md.metadata.name}-stable", "port": 80}],
                }
            ],
        },
    }
    return [*out, route]


def wait_for(what: str, ok: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell (default 5)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per concurrency (default 3)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    cluster.up()
    modelstore.deploy()
    image = serving_image()
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    try:
        docs = objects(image)
        cluster.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))
        service = json.loads(
            cluster.kubectl("-n", NAMESPACE, "get", "service", "iris-stable", "-o", "json").stdout
        )
        paths = {
            "service": f"http://{service['spec']['clusterIP']}:80{PATH}",
            "gateway": f"http://{cluster.load_topology().host_ip}:{cfg.GATEWAY_PORT}{PATH}",
        }
        for name, url in paths.items():
            wait_for(f"the {name} path to answer", lambda url=url: send(url, BODIES[0])[0] == 200, 180)
        script = lua_script()
        cells: dict[str, dict[int, list[Result]]] = {n: {c: [] for c in concurrencies} for n in paths}
        for c in concurrencies:
            for r in range(args.rounds):
                for name in list(paths) if r % 2 == 0 else list(reversed(paths)):
                    cells[name][c].append(wrk(paths[name], c, args.duration, script))
            log(f"c={c} done")
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    print(report(cells, concurrencies, args))
    return 0


def report(
    cells: dict[str, dict[int, list[Result]]], concurrencies: list[int], args: argparse.Namespace
) -> str:
    def med(rs: list[Result], field: str) -> float:
        return statistics.median(getattr(r, field) for r in rs)

    lines = [
        f"Service path vs Gateway path (Traefik), {args.rounds} rounds of {args.duration} s per path and "
        "concurrency, medians",
        "",
        "| concurrency | path | req/s | p50 ms | p99 ms | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in concurrencies:
        for name in cells:
            rs = cells[name][c]
            lines.append(
                f"| {c} | {name} | {med(rs, 'rps'):,.0f} | {med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} "
                f"| {sum(r.errors for r in rs)} |"
            )
    lines.append("")
    for c in concurrencies:
        added = med(cells["gateway"][c], "p50_ms") - med(cells["service"][c], "p50_ms")
        ratio = med(cells["gateway"][c], "rps") / med(cells["service"][c], "rps")
        lines.append(
            f"c={c}: the Gateway adds {added:+.2f} ms at p50; {ratio:.0%} of the Service path's req/s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

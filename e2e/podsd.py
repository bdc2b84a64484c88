"""Pod discovery for the harness's Prometheus: watch pods, write ``file_sd`` targets.

Debian's Prometheus 2.42 is built without ``kubernetes_sd_configs``, so this process does its job
for the local cluster: it watches pods through the API (as the ``rollwise-prometheus`` user, with
the same RBAC a Prometheus would have) and writes one JSON file that Prometheus reads with
``file_sd_configs`` (inotify: changes land within a second). The rules are the usual ones:

- a pod opts in with the annotation ``prometheus.io/scrape: "true"``, and may set
  ``prometheus.io/port`` (default: its first container port) and ``prometheus.io/path``
  (default ``/metrics``);
- only Running pods on the real node with an IP are targets: simulated (kwok) pods have
  addresses nobody may dial;
- each target carries ``namespace``, ``pod``, ``node`` and the pod's labels, sanitised the way
  Prometheus's Kubernetes discovery does (``rollwise.dev/track`` -> ``rollwise_dev_track``).

Run: ``python -m e2e.podsd --kubeconfig K --node NAME --out FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

SCRAPE = "prometheus.io/scrape"
PORT = "prometheus.io/port"
PATH = "prometheus.io/path"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    return _INVALID.sub("_", key)


def target_of(pod: Any, node: str) -> dict[str, Any] | None:
    """The file_sd entry for a pod, or None when it is not (or not yet) a target."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    annotations = meta.annotations or {}
    if annotations.get(SCRAPE) != "true" or spec.node_name != node:
        return None
    if status.phase != "Running" or not status.pod_ip or meta.deletion_timestamp:
        return None
    port = annotations.get(PORT)
    if port is None:
        ports = [p.container_port for c in spec.containers for p in (c.ports or [])]
        if not ports:
            return None
        port = str(ports[0])
    labels = {label_name(k): v for k, v in (meta.labels or {}).items()}
    labels.update(
        {
            "namespace": meta.namespace,
            "pod": meta.name,
            "node": node,
            "__metrics_path__": annotations.get(PATH, "/metrics"),
        }
    )
    return {"targets": [f"{status.pod_ip}:{port}"], "labels": labels}


def write_atomically(out: Path, targets: dict[str, dict[str, Any]]) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps([targets[k] for k in sorted(targets)], indent=1))
    os.replace(tmp, out)


def run(kubeconfig: str, node: str, out: Path) -> None:
    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]  # untyped upstream
    core: Any = client.CoreV1Api(api)  # Any: model attributes are Optional everywhere upstream
    while True:
        try:
            targets: dict[str, dict[str, Any]] = {}
            pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
            for pod in pods.items:
                if (t := target_of(pod, node)) is not None:
                    targets[f"{pod.metadata.namespace}/{pod.metadata.name}"] = t
            write_atomically(out, targets)
            watcher: Any = watch.Watch()  # type: ignore[no-untyped-call]  # untyped upstream
            stream = watcher.stream(
                core.list_pod_for_all_namespaces,
                field_selector=f"spec.nodeName={node}",
                resource_version=pods.metadata.resource_version,
                timeout_seconds=300,
            )
            for event in stream:
                pod = event["object"]
                key = f"{pod.metadata.namespace}/{pod.metadata.name}"
                t = None if event["type"] == "DELETED" else target_of(pod, node)
                if t is None and targets.pop(key, None) is None:
                    continue
                if t is not None:
                    if targets.get(key) == t:
                        continue
                    targets[key] = t
                write_atomically(out, targets)
        except Exception as err:  # the API server restarts, a watch expires: list again
            print(f"podsd: {err!r}; relisting in 1s", file=sys.stderr, flush=True)
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.podsd")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    run(args.kubeconfig, args.node, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

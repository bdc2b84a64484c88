"""Where the local cluster keeps its binaries, state and logs.

Binaries are cached per version under ``~/.cache/rollwise`` (rebuilt when absent); the running
cluster's state lives under ``~/.cache/rollwise/cluster`` and is wiped on every cold start.
"""

from __future__ import annotations

import os
from pathlib import Path

KUBE_VERSION = os.environ.get("KUBE_VERSION", "v1.37.2")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "v3.6.14")
KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.8.0")
HELM_VERSION = os.environ.get("HELM_VERSION", "v3.21.4")
COREDNS_VERSION = os.environ.get("COREDNS_VERSION", "v1.14.7")
TRAEFIK_VERSION = os.environ.get("TRAEFIK_VERSION", "v3.7.13")
METRICS_SERVER_VERSION = os.environ.get("METRICS_SERVER_VERSION", "v0.8.0")

CACHE = Path(os.environ.get("ROLLWISE_CACHE", Path.home() / ".cache" / "rollwise"))
KUBE_BIN = CACHE / f"k8s-{KUBE_VERSION}"
ETCD_BIN = CACHE / f"etcd-{ETCD_VERSION}"
KWOK_DIR = CACHE / f"kwok-{KWOK_VERSION}"
HELM_BIN = CACHE / f"helm-{HELM_VERSION}"
COREDNS_BIN = CACHE / f"coredns-{COREDNS_VERSION}"
TRAEFIK_BIN = CACHE / f"traefik-{TRAEFIK_VERSION}"
METRICS_SERVER_BIN = CACHE / f"metrics-server-{METRICS_SERVER_VERSION}"
KUBECTL = KUBE_BIN / "kubectl"
HELM = HELM_BIN / "helm"

STATE = CACHE / "cluster"
LOGS = STATE / "logs"
PIDS = STATE / "pids"
PKI = STATE / "pki"
KUBECONFIG = STATE / "kubeconfig"

# The real node's container runtime runs apart from Docker's: its own socket, root and state.
CONTAINERD_ROOT = Path("/var/lib/rollwise/containerd")
CONTAINERD_STATE = Path("/run/rollwise/containerd")
CONTAINERD_SOCK = CONTAINERD_STATE / "containerd.sock"
KUBELET_ROOT = Path("/var/lib/rollwise/kubelet")
REPO = Path(__file__).resolve().parent.parent

"""Shared fixtures: the local cluster, brought up once per session (or reused when already up).

A test that needs the cluster asks for the ``cluster`` fixture. If a part cannot be built or
started, the fixture raises with that part's log tail: the test errors, it never skips.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client, config

from e2e import cluster as local_cluster

T = TypeVar("T")

# Every namespace this pytest session creates starts with this prefix, and its operator watches only
# ``f"{NAMESPACE_PREFIX}-*"``: two sessions sharing the local cluster never reconcile each other's.
NAMESPACE_PREFIX = f"t{os.getpid() % 100000}"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    api: client.ApiClient
    prometheus_url: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def autoscaling(self) -> client.AutoscalingV2Api:
        return client.AutoscalingV2Api(self.api)


def wait_until(
    what: str, probe: Callable[[], T | None], timeout_seconds: float = 60, every: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as err:  # keep polling; report the last error at the deadline
            last_error = err
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what}; last error: {last_error!r}")


def create_test_namespace(cluster: Cluster, request: pytest.FixtureRequest, prefix: str, length: int) -> str:
    """A new namespace `<prefix><test name>-<ms>` (a valid DNS label), ready for pods."""
    test = request.node.name.lower().replace("_", "-")[:length].strip("-")
    name = f"{prefix}{test}-{int(time.time() * 1000) % 100000}"
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        f"default ServiceAccount in {name}",
        lambda: cluster.core.read_namespaced_service_account("default", name),
        30,
    )
    return name


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    kubeconfig = local_cluster.up(kwok_nodes=3)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield Cluster(kubeconfig=kubeconfig, api=api, prometheus_url=local_cluster.PROMETHEUS_URL)
    api.close()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its objects go with it)."""
    name = create_test_namespace(cluster, request, f"{NAMESPACE_PREFIX}-", 40)
    yield name
    # ModelDeployments first, while the namespace is live: an operator watching a namespace glob
    # stops watching a namespace once it terminates, so it would never see them deleted and never
    # remove Kopf's finalizer (the namespace would stay Terminating).
    local_cluster.kubectl("-n", name, "delete", "modeldeployments", "--all", "--timeout=30s", check=False)
    cluster.core.delete_namespace(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take the cluster down run last, after everything that needs it."""
    items.sort(key=lambda item: item.get_closest_marker("cluster_teardown") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster_teardown: stops the local cluster; runs last")

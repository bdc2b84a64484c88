"""Every example in `examples/` applied to the real API server and run by the operator (issue 6).

Each example is applied as written (kubectl, server-side), except that its serving pods go to the
simulated kwok nodes (no container runs: the artifacts' S3/PVC stores need not exist here). The
operator must bring it to Healthy, and a new model version must start the example's strategy.
The router examples also carry the user's route object, so they run after the upstream CRDs are
installed (the `crds` fixture). Real traffic through each strategy: test_rollouts.py,
test_strategies.py and test_routers_upstream.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import paths
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, kubectl, on_kwok
from tests.integration.test_operator import get_md, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]

EXAMPLES = sorted(
    p
    for p in (paths.REPO / "examples").glob("*.yaml")
    if "\nkind: ModelDeployment\n" in p.read_text() and "\n    server:\n" not in p.read_text()
)
"""Every ModelDeployment example but those of a user's own server (`runtime.server`): its image
needs the administrator's allowance (guardrails.allowedImages) and real containers, so
test_byo_server.py runs those as written on the real node instead; test_batch_jobs.py runs the
ModelBatchJob example."""


def volume_for(namespace: str, claim: str) -> list[dict[str, Any]]:
    """A statically bound hostPath volume and its claim (no provisioner runs here)."""
    pv = f"{namespace}-{claim}"[:63]
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "hostPath": {"path": f"/tmp/{pv}"},
                "claimRef": {"namespace": namespace, "name": claim},
                "persistentVolumeReclaimPolicy": "Delete",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": pv,
                "storageClassName": "",
            },
        },
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_applies_and_its_strategy_starts(
    cluster: Cluster, operator: Operator, namespace: str, path: Path, request: pytest.FixtureRequest
) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    md = next(d for d in docs if d["kind"] == "ModelDeployment")
    md["spec"]["runtime"] = on_kwok(md["spec"].get("runtime"))
    for claim in sorted(set(re.findall(r"pvc://([a-z0-9-]+)/", path.read_text()))):
        docs += volume_for(namespace, claim)  # the example's model store, as its cluster would have it
    stream = "\n---\n".join(json.dumps(d) for d in docs)
    request.addfinalizer(
        lambda: [
            kubectl("delete", "pv", d["metadata"]["name"], "--wait=false", check=False)
            for d in docs
            if d["kind"] == "PersistentVolume"
        ]
    )
    kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=stream)
    name = md["metadata"]["name"]
    try:
        wait_healthy(cluster, namespace, name, timeout=60)
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus: {get_md(cluster, namespace, name).get('status')}") from None
    rollout = md["spec"].get("rollout") or {}
    strategy = next((k for k in ("canary", "blueGreen", "abTest", "shadow") if k in rollout), "canary")
    kubectl(
        "-n", namespace, "patch", "md", name, "--type=merge",
        "-p", json.dumps({"spec": {"model": {"version": "9.9.9-example"}}}),
    )  # fmt: skip

    def started() -> dict[str, object] | None:
        status = get_md(cluster, namespace, name).get("status", {})
        rolling = status.get("candidateVersion") == "9.9.9-example" and status.get("phase") in (
            "Progressing",
            "Paused",
            "Promoting",
        )
        # The default rollout (one setWeight 100 step) may finish between two polls on kwok.
        done = status.get("stableVersion") == "9.9.9-example" and status.get("phase") == "Healthy"
        return status if rolling or done else None

    status = wait_until(f"{path.name}: the rollout to start", started, 60)
    assert status["strategy"] == strategy, status

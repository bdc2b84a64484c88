"""The one-command demo's rollouts, end to end (`pytest -m demo`): under steady traffic a good
candidate is promoted and a bad one (every prediction fails) is rolled back, followed in the
plugin's view, and both outcomes are printed.

It runs the demo's own functions (`e2e/demo.py`) in this session's namespace with this session's
operator, so it can run beside other test sessions; `make demo` runs the same code against the
Helm-installed operator, which watches only the `rollwise-demo` namespace.
"""

from __future__ import annotations

import io
import subprocess

import pytest
from rich.console import Console
from rollwise.cli.outcome import Outcome

from e2e import demo, modelstore, paths
from tests.conftest import Cluster
from tests.integration.conftest import Operator
from tests.integration.test_operator import get_md

pytestmark = [
    pytest.mark.demo,
    pytest.mark.cluster,
    pytest.mark.realnode,
    pytest.mark.prometheus,
    pytest.mark.slow,
]


def build_serving_image() -> None:
    proc = subprocess.run(
        ["bash", str(paths.REPO / "serving-image" / "build-image.sh"), "--import"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"serving image build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_the_demo_promotes_a_good_candidate_and_rolls_back_a_bad_one(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    build_serving_image()
    modelstore.deploy()
    demo.deploy_model(namespace)
    log = io.StringIO()
    console = Console(file=log, width=200, color_system=None)  # not a terminal: one line per change
    results = demo.rollouts(namespace, console)
    as_expected = demo.report(results, console)
    text = log.getvalue()
    print(text)

    good, bad = results
    assert (good.candidate.version, good.ended.outcome, good.stable_after) == (
        "2.0.0",
        Outcome.PROMOTED,
        "2.0.0",
    )
    assert good.failed == 0, "the stable and the good candidate answered every request"
    assert good.answered_by.get("2.0.0", 0) > 0 and good.answered_by.get("1.0.0", 0) > 0
    assert (bad.candidate.version, bad.ended.outcome) == ("3.0.0-broken", Outcome.ROLLED_BACK)
    assert bad.ended.reason == "AnalysisFailed" and bad.stable_after == "2.0.0"
    assert bad.failed > 0, "the bad candidate took traffic (and failed it) before it was rolled back"
    assert as_expected

    status = get_md(cluster, namespace, "iris")["status"]
    assert (status["phase"], status["stableVersion"], status["weight"]) == ("RolledBack", "2.0.0", 0)
    assert [(h["version"], h["outcome"]) for h in status["history"][:2]] == [
        ("3.0.0-broken", "RolledBack"),
        ("2.0.0", "Promoted"),
    ]
    failed = {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]}
    assert failed["success-rate"] == "Failed", failed

    # What the demo printed: the view while each rollout ran, then both outcomes.
    assert "Rolling out 2.0.0: a good candidate" in text
    assert "iris: Progressing" in text and "step 2/2 analysis" in text
    assert "Traffic " in text and "req/s over the last 5s" in text
    assert "Rolling out 3.0.0-broken" in text and "success-rate" in text
    assert "✓ 2.0.0: Promoted (Promoted)" in text
    assert "✓ 3.0.0-broken: RolledBack (AnalysisFailed)" in text

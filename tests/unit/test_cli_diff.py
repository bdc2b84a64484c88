"""`kubectl rollwise diff`: the request it sends, what it makes of the answers, and the table.

The stable pod's real `/diff` answer is read and rendered by `tests/serving/test_shadow_agreement.py`
against real servers; here a stand-in API client answers, so the URL, the timeout and every
refusal's message are pinned without a cluster.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any, cast

import pytest
import urllib3
from kubernetes import client
from rich.console import Console
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.cli.client import Client
from rollwise.cli.main import run
from rollwise.cli.outcome import ExitCode
from rollwise.cli.shadow import DiffRow, ShadowDiff, diff_view, read_diff, shown_input

from tests.unit.cli_objects import NOW, line_with, md, render


class FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def read(self) -> bytes:
        return self.body


class FakeApi:
    """The two `ApiClient` calls `Client.shadow_diff` makes; records the URL and the timeout."""

    def __init__(self, status: int = 200, body: bytes = b"", error: Exception | None = None) -> None:
        self.status, self.body, self.error = status, body, error
        self.calls: list[tuple[str, float]] = []

    def param_serialize(
        self, method: str, resource_path: str, **_: Any
    ) -> tuple[str, str, dict[str, str], None, list[str]]:
        return method, "https://api:6443" + resource_path, {}, None, []

    def call_api(
        self, method: str, url: str, headers: dict[str, str], *, _request_timeout: float
    ) -> FakeResponse:
        self.calls.append((url, _request_timeout))
        if self.error is not None:
            raise self.error
        return FakeResponse(self.status, self.body)


def entry(
    seconds_ago: float, row: list[float], stable: Any, shadow: Any, delta: float | None
) -> dict[str, Any]:
    return {
        "time": (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z"),
        "path": "/v2/models/iris/infer",
        "row": 0,
        "input": {"input-0": row},
        "stable": stable,
        "shadow": shadow,
        "shadow_version": "2.0.0",
        "delta": delta,
    }


ANSWER = {
    "model_name": "iris",
    "model_version": "1.0.0",
    "capacity": 64,
    "worker_pid": 7,
    "entries": [
        entry(90, [5.1, 3.5, 1.4, 0.2], "setosa", "versicolor", 0.7),
        entry(5, [6.7, 3.0, 5.2, 2.3], "virginica", "versicolor", None),
    ],
}


def iris() -> ModelDeployment:
    return md()


def shadow_diff(api: FakeApi, timeout: float = 10.0) -> ShadowDiff:
    return Client(cast(client.ApiClient, api), "ml", "https://api:6443").shadow_diff(
        iris(), timeout_seconds=timeout
    )


def test_the_stable_services_proxy_is_asked_with_the_timeout() -> None:
    api = FakeApi(body=json.dumps(ANSWER).encode())
    diff = shadow_diff(api, timeout=3)
    name = iris().metadata.name
    model = iris().spec.model.name
    assert api.calls == [
        (f"https://api:6443/api/v1/namespaces/ml/services/{name}-stable:80/proxy/v2/models/{model}/diff", 3)
    ]
    assert diff.version == "1.0.0" and diff.worker_pid == 7 and len(diff.rows) == 2
    assert diff.rows[0] == DiffRow(
        NOW - timedelta(seconds=90), {"input-0": [5.1, 3.5, 1.4, 0.2]}, "setosa", "versicolor", "2.0.0", 0.7
    )


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        pytest.param(
            404,
            {"kind": "Status", "reason": "NotFound", "message": 'services "iris-stable" not found'},
            "not found; the track Services exist while a candidate does",
            id="no stable Service: no candidate",
        ),
        pytest.param(
            404,
            {"error": "no diff: this server mirrors to no shadow (start it with --mirror-url)"},
            "the stable pod mirrors to no shadow",
            id="the pod does not mirror: no shadow step",
        ),
        pytest.param(
            503,
            {"kind": "Status", "message": "no endpoints available for service"},
            "no ready stable pod to ask",
            id="no ready pod",
        ),
        pytest.param(
            403, {"kind": "Status", "message": "nope"}, "ask for get on services/proxy", id="forbidden"
        ),
    ],
)
def test_refusals_name_the_cause_and_the_fix(status: int, body: dict[str, str], says: str) -> None:
    code, out = invoke(FakeApi(status, json.dumps(body).encode()))
    assert code == ExitCode.USAGE
    assert says in out and "Service " in out


def test_a_stalled_proxy_is_a_timeout() -> None:
    stalled = urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")  # type: ignore[arg-type]  # no pool here
    code, out = invoke(FakeApi(error=urllib3.exceptions.MaxRetryError(None, "/", stalled)))  # type: ignore[arg-type]
    assert code == ExitCode.TIMEOUT
    assert "no answer within 10s" in out


def test_an_answer_that_is_not_a_diff_is_refused() -> None:
    code, out = invoke(FakeApi(200, b"<html>hello</html>"))
    assert code == ExitCode.USAGE and "not readable" in out


class Stand:
    """`App`'s client: `get` and `shadow_diff` through a real `Client` over `FakeApi`."""

    namespace = "ml"

    def __init__(self, api: FakeApi) -> None:
        self.real = Client(cast(client.ApiClient, api), "ml", "https://api:6443")

    def get(self, name: str, namespace: str | None = None) -> ModelDeployment:
        return iris()

    def shadow_diff(self, obj: ModelDeployment, *, timeout_seconds: float) -> ShadowDiff:
        return self.real.shadow_diff(obj, timeout_seconds=timeout_seconds)

    def close(self) -> None:
        pass


def invoke(api: FakeApi, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    stand = cast(Client, Stand(api))
    code = run(["diff", iris().metadata.name, *argv], with_demo=False, client=stand, console=console)
    return code, out.getvalue()


def test_the_table_shows_input_both_answers_and_delta_newest_first() -> None:
    api = FakeApi(body=json.dumps(ANSWER).encode())
    md_name = iris().metadata.name
    text = render(diff_view(md_name, read_diff(json.dumps(ANSWER).encode()), NOW))
    assert "2 rows where the candidate (2.0.0) answered otherwise than stable 1.0.0" in text
    first, second = line_with(text, "virginica"), line_with(text, "setosa")
    assert text.index(first) < text.index(second)  # newest first
    assert first.split()[:2] == ["5s", "ago"] and first.rstrip().endswith("-")
    assert "[5.1, 3.5, 1.4, 0.2]" in second and "versicolor" in second and second.rstrip().endswith("0.7")
    code, out = invoke(api, "--timeout", "4s")
    assert code == ExitCode.OK and "virginica" in out
    assert api.calls[0][1] == 4


def test_no_differing_rows_say_so() -> None:
    empty = {**ANSWER, "entries": []}
    code, out = invoke(FakeApi(body=json.dumps(empty).encode()))
    assert code == ExitCode.OK
    assert "no rows where the shadow answered otherwise than stable 1.0.0" in out


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param({"input-0": [1.0, 2.0]}, "[1.0, 2.0]", id="one input: its row bare"),
        pytest.param({"a": 1, "b": 2}, '{"a": 1, "b": 2}', id="several inputs or an instance: as JSON"),
        pytest.param("x" * 100, "x" * 59 + "…", id="a long (already cut) text is cut to the cell"),
    ],
)
def test_inputs_fit_one_cell(value: Any, shown: str) -> None:
    assert shown_input(value) == shown

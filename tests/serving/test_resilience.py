"""Graceful degradation, the Redis cache (and its outage), mirroring and hash forwarding."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from rollwise_serving.forwarding import bucket_of

from tests.serving.conftest import (
    SETOSA,
    VIRGINICA,
    Redis,
    ServerFactory,
    free_port,
    infer_body,
    model_args,
    stop,
)

BROKEN = """
import numpy as np

class Model:
    def predict(self, inputs):
        x = next(iter(inputs.values()))
        if (x[:, 0] == 99).any():
            raise RuntimeError("poison row")
        if MODE == "fail":
            raise RuntimeError("model is broken")
        if MODE == "slow":
            import time; time.sleep(0.5)
        return {"label": np.array(["primary"] * len(x), dtype=object)}
"""


def python_model(tmp_path: Path, mode: str) -> list[str]:
    path = tmp_path / f"model-{mode}.py"
    path.write_text(f"MODE = {mode!r}\n" + BROKEN)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return [
        "--model-uri",
        str(path),
        "--sha256",
        sha,
        "--format",
        "python",
        "--name",
        "iris",
        "--version",
        "v1",
    ]


def fallback_args(models: dict[str, Any]) -> list[str]:
    rule = models["models"]["iris-rule"]
    return [
        "--fallback-uri",
        str(models["dir"] / rule["file"]),
        "--fallback-format",
        "python",
        "--fallback-sha256",
        rule["sha256"],
    ]


# ---- fallback ------------------------------------------------------------------------------------


def test_failing_primary_is_answered_by_the_fallback(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    s = fresh_servers.start(*python_model(tmp_path, "fail"), *fallback_args(models))
    body = s.get("/v2/health/ready").json()
    assert [m["state"] for m in body["models"]] == ["ready", "ready"]
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA], "FP64"))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["setosa", "virginica"]  # the rule's answer
    assert s.sample("rollwise_requests_total", outcome="fallback") == 1
    assert s.sample("rollwise_fallback_total", reason="error") == 1
    assert s.sample("rollwise_model_loaded", role="fallback") == 1


@pytest.mark.parametrize("broken", ["missing", "tampered", "unloadable"])
def test_a_primary_that_fails_to_load_leaves_the_fallback_serving(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path, broken: str
) -> None:
    """Not fetched, refused for its digest, or raising on load: the fallback answers, readiness
    is true and says so with the primary's reason, and every answer counts as a fallback."""
    args = model_args(models, "iris-v1")
    uri = args.index("--model-uri") + 1
    if broken == "missing":
        args[uri] = str(tmp_path / "nowhere.joblib")
    elif broken == "tampered":
        copy = tmp_path / "tampered.joblib"
        copy.write_bytes(Path(args[uri]).read_bytes() + b"x")
        args[uri] = str(copy)
    else:
        junk = tmp_path / "junk.joblib"
        junk.write_bytes(b"not a pickle")
        args[uri] = str(junk)
        args[args.index("--sha256") + 1] = hashlib.sha256(junk.read_bytes()).hexdigest()
    s = fresh_servers.start(*args, *fallback_args(models))
    ready = s.get("/v2/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["serving"] == "fallback"
    assert [m["state"] for m in body["models"]] == ["failed", "ready"]
    assert body["reason"].startswith("the primary failed to load, the fallback serves: ")
    assert s.get("/v2/models/iris/ready").status_code == 200
    for _ in range(3):
        r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA], "FP64"))
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == ["setosa", "virginica"]  # the rule's answer
    assert s.sample("rollwise_requests_total", outcome="fallback") == 3
    assert s.sample("rollwise_requests_total", outcome="success") == 0
    assert s.sample("rollwise_fallback_total", reason="unavailable") == 3
    assert s.sample("rollwise_model_loaded", role="primary") == 0
    assert s.sample("rollwise_model_loaded", role="fallback") == 1
    assert s.get("/v2/models/iris").json()["platform"] == "python"  # the metadata is the fallback's


def test_a_primary_that_fails_to_load_without_a_fallback_is_not_ready(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    args = model_args(models, "iris-v1")
    args[args.index("--model-uri") + 1] = str(tmp_path / "nowhere.joblib")
    s = fresh_servers.start(*args, wait_ready=False)
    deadline = time.monotonic() + 15
    while s.get("/v2/health/ready").json()["models"][0]["state"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ready = s.get("/v2/health/ready")
    assert ready.status_code == 503
    assert "serving" not in ready.json()
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA], "FP64"))
    assert r.status_code == 503 and "is not ready" in r.json()["error"]


def test_slow_primary_past_its_deadline_is_answered_by_the_fallback(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    s = fresh_servers.start(*python_model(tmp_path, "slow"), *fallback_args(models), "--deadline-ms", "100")
    started = time.monotonic()
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA], "FP64"))
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["setosa"]
    assert elapsed < 0.45, f"the answer waited for the slow primary ({elapsed:.2f}s)"
    assert s.sample("rollwise_fallback_total", reason="deadline") == 1
    time.sleep(0.6)  # the late primary call ends in the background and answers nobody twice
    assert s.sample("rollwise_requests_total", outcome="fallback") == 1


def test_without_fallback_errors_surface_and_the_server_keeps_serving(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    failing = fresh_servers.start(*python_model(tmp_path, "fail"))
    r = failing.post("/v2/models/iris/infer", content=infer_body([SETOSA], "FP64"))
    assert r.status_code == 500 and "the model failed: RuntimeError: model is broken" in r.json()["error"]
    assert failing.sample("rollwise_requests_total", outcome="server_error") == 1
    assert failing.get("/v2/health/live").status_code == 200
    slow = fresh_servers.start(*python_model(tmp_path, "slow"), "--deadline-ms", "50")
    r = slow.post("/v2/models/iris/infer", content=infer_body([SETOSA], "FP64"))
    assert r.status_code == 504 and "deadline" in r.json()["error"]


def test_a_poison_request_fails_alone_inside_a_micro_batch(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    s = fresh_servers.start(*python_model(tmp_path, "ok"))
    statuses: dict[str, list[int]] = {"good": [], "poison": []}
    lock = threading.Lock()

    def worker(kind: str) -> None:
        row = [99.0, 1.0, 1.0, 1.0] if kind == "poison" else SETOSA
        with httpx.Client(base_url=s.url, timeout=10) as c:
            for _ in range(25):
                code = c.post("/v2/models/iris/infer", content=infer_body([row], "FP64")).status_code
                with lock:
                    statuses[kind].append(code)

    threads = [threading.Thread(target=worker, args=(k,)) for k in ["good"] * 6 + ["poison"] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses["good"]) == {200} and len(statuses["good"]) == 150
    assert set(statuses["poison"]) == {500}


# ---- cache ---------------------------------------------------------------------------------------


def test_redis_cache_hits_and_survives_redis_dying(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    s = fresh_servers.start(*model_args(models, "iris-v1"), "--redis-url", redis_server.url)
    body = infer_body([VIRGINICA], id="a")
    first = s.post("/v2/models/iris/infer", content=body).json()
    time.sleep(0.2)  # the write to Redis is fire-and-forget
    second = s.post("/v2/models/iris/infer", content=body).json()
    assert first["outputs"] == second["outputs"]
    assert s.sample("rollwise_cache_total", tier="redis", result="miss") == 1
    assert s.sample("rollwise_cache_total", tier="redis", result="hit") == 1
    # A second server (another replica) reads the first one's answer from Redis.
    other = fresh_servers.start(*model_args(models, "iris-v1"), "--redis-url", redis_server.url)
    assert other.post("/v2/models/iris/infer", content=body).json()["outputs"] == first["outputs"]
    assert other.sample("rollwise_cache_total", tier="redis", result="hit") == 1
    assert other.sample("rollwise_prediction_value_count", **{"class": "virginica"}) == 1

    stop(redis_server.proc)
    codes = [
        s.post("/v2/models/iris/infer", content=infer_body([[5.0 + i / 10, 3.0, 1.5, 0.2]])).status_code
        for i in range(20)
    ]
    assert codes == [200] * 20
    assert s.sample("rollwise_cache_total", tier="redis", result="error") == 20
    assert s.sample("rollwise_requests_total", outcome="server_error") == 0


def test_in_process_lru_serves_repeats_without_the_model(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    s = fresh_servers.start(*model_args(models, "iris-v1"), "--cache-size", "2")
    bodies = [infer_body([SETOSA]), infer_body([VIRGINICA]), infer_body([[6.0, 2.9, 4.5, 1.5]])]
    for b in [bodies[0], bodies[0], bodies[1], bodies[2], bodies[0]]:
        assert s.post("/v2/models/iris/infer", content=b).status_code == 200
    # hit on the repeat; the third distinct input evicted the first (size 2), so it misses again.
    assert s.sample("rollwise_cache_total", tier="memory", result="hit") == 1
    assert s.sample("rollwise_cache_total", tier="memory", result="miss") == 4
    # Every answer counts in the class shares the judge compares, cached or not (issue 14).
    assert s.sample("rollwise_prediction_value_count") == 5
    assert s.sample("rollwise_prediction_value_count", **{"class": "setosa"}) == 3


# ---- mirroring and hash forwarding ---------------------------------------------------------------


def test_mirror_sends_a_copy_to_the_shadow_without_touching_the_answer(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    shadow = fresh_servers.start(*model_args(models, "iris-v2", version="v2"), "--track", "candidate")
    primary = fresh_servers.start(*model_args(models, "iris-v1"), "--mirror-url", shadow.url)
    for _ in range(10):
        r = primary.post("/v2/models/iris/infer", content=infer_body([SETOSA]))
        assert r.json()["model_version"] == "v1"
    _eventually(lambda: shadow.sample("rollwise_requests_total", outcome="success", track="candidate") == 10)
    assert primary.sample("rollwise_mirror_total", result="sent") == 10
    # The shadow does not mirror or forward mirrored copies again.
    assert shadow.sample("rollwise_mirror_total") == 0


def test_mirror_to_a_dead_shadow_counts_failures_and_serves_normally(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    primary = fresh_servers.start(*model_args(models, "iris-v1"), "--mirror-url", dead)
    codes = [
        primary.post("/v2/models/iris/infer", content=infer_body([SETOSA])).status_code for _ in range(10)
    ]
    assert codes == [200] * 10
    _eventually(lambda: primary.sample("rollwise_mirror_total", result="failed") == 10)


def test_hash_range_forwards_the_same_users_to_the_peer_every_time(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    peer = fresh_servers.start(*model_args(models, "iris-v2", version="v2"), "--track", "candidate")
    front = fresh_servers.start(
        *model_args(models, "iris-v1"),
        "--hash-header",
        "x-user-id",
        "--hash-range",
        "0-19",
        "--forward-url",
        peer.url,
    )
    users = [f"user-{i}" for i in range(60)]
    for _ in range(2):  # twice: the choice is sticky
        for user in users:
            r = front.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers={"x-user-id": user})
            assert r.status_code == 200
            expected = "v2" if bucket_of(user) < 20 else "v1"
            assert r.json()["model_version"] == expected, user
    forwarded = 2 * sum(bucket_of(u) < 20 for u in users)
    assert forwarded > 0
    assert front.sample("rollwise_forward_total", result="sent") == forwarded
    assert peer.sample("rollwise_requests_total", outcome="success") == forwarded
    assert front.sample("rollwise_requests_total", outcome="success") == 2 * len(users) - forwarded


MATCHES = json.dumps(
    [
        {"header": {"name": "x-variant", "value": "b"}},
        {"header": {"name": "x-group", "regex": "beta-[0-9]+"}},
        {"cookie": {"name": "model", "value": "v2"}},
    ]
)


@pytest.mark.parametrize(
    ("headers", "answered_by"),
    [
        ({"x-variant": "b"}, "v2"),
        ({"X-Variant": "b"}, "v2"),  # header names are case-insensitive
        ({"x-variant": "B"}, "v1"),  # values are not
        ({"x-group": "beta-42"}, "v2"),
        ({"x-group": "alpha-beta-1"}, "v1"),  # the regex must match the whole value (as Envoy's)
        ({"x-group": "beta-1x"}, "v1"),
        ({"cookie": "session=abc; model=v2"}, "v2"),
        ({"cookie": "model=v1"}, "v1"),
        ({"cookie": "not a cookie;;=="}, "v1"),
        ({}, "v1"),
    ],
)
def test_forward_match_sends_matching_requests_to_the_peer(
    fresh_servers: ServerFactory, models: dict[str, Any], headers: dict[str, str], answered_by: str
) -> None:
    peer = fresh_servers.start(*model_args(models, "iris-v2", version="v2"), "--track", "candidate")
    front = fresh_servers.start(
        *model_args(models, "iris-v1"), "--forward-match", MATCHES, "--forward-url", peer.url
    )
    for _ in range(3):
        r = front.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers=headers)
        assert r.status_code == 200
        assert r.json()["model_version"] == answered_by
    forwarded = 3 if answered_by == "v2" else 0
    assert front.sample("rollwise_forward_total", result="sent") == forwarded
    assert peer.sample("rollwise_requests_total", outcome="success", track="candidate") == forwarded


def test_forwarding_to_a_dead_peer_answers_locally(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    front = fresh_servers.start(
        *model_args(models, "iris-v1"),
        "--hash-header",
        "x-user-id",
        "--hash-range",
        "0-99",
        "--forward-url",
        dead,
    )
    r = front.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers={"x-user-id": "bob"})
    assert r.status_code == 200 and r.json()["model_version"] == "v1"
    assert front.sample("rollwise_forward_total", result="failed") == 1


def _eventually(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.05)


BATCH_PROBE = """
import numpy as np

class Model:
    def predict(self, inputs):
        x = next(iter(inputs.values()))
        return {"row": x[:, 0].copy(), "call_rows": np.full(len(x), len(x), dtype=np.int64)}
"""


def test_concurrent_requests_share_bounded_predict_calls(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    """Micro-batching happens, respects --max-batch-size, and hands each caller its own rows."""
    path = tmp_path / "probe.py"
    path.write_text(BATCH_PROBE)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    s = fresh_servers.start(
        "--model-uri",
        str(path),
        "--sha256",
        sha,
        "--format",
        "python",
        "--name",
        "iris",
        "--version",
        "v1",
        "--max-batch-size",
        "4",
    )
    seen: list[tuple[float, list[float], int]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            for j in range(30):
                marker = float(i * 1000 + j)
                r = c.post("/v2/models/iris/infer", content=infer_body([[marker, 0.0]], "FP64"))
                out = {o["name"]: o["data"] for o in r.json()["outputs"]}
                with lock:
                    seen.append((marker, out["row"], out["call_rows"][0]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 360
    assert all(row == [marker] for marker, row, _ in seen), "a caller got another caller's row"
    sizes = [size for _, _, size in seen]
    assert max(sizes) > 1, "no two concurrent requests ever shared a predict call"
    assert max(sizes) <= 4

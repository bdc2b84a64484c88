"""``rollwise-proxy --protocol openai`` in front of llama.cpp's real OpenAI server.

The server is llama-cpp-python's (``python -m llama_cpp.server``), built once by
``scripts/llama_server_venv.py``, serving a tiny GGUF model the test writes itself with the
``gguf`` package (random weights: ``e2e/tiny_gguf.py``). A second upstream, a FastAPI app that streams
a token every 0.3 s, makes buffering visible by the clock (llama.cpp's tiny model answers in
milliseconds) and sends the finish reasons a CPU model never gives (``content_filter``); it is
also the shadow and the A/B peer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from e2e.tiny_gguf import write_tiny_llama
from tests.serving.conftest import REPO, Server, free_port, wait_for
from tests.serving.proxying import Processes, processes

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    yield from processes(tmp_path)


@pytest.fixture(scope="module")
def llama_python() -> Path:
    """llama-cpp-python's venv: built on first use (minutes), a failure here fails the tests."""
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "llama_server_venv.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(f"scripts/llama_server_venv.py failed:\n{run.stderr[-3000:]}", pytrace=False)
    return Path(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def llama(procs: Processes, llama_python: Path, tmp_path: Path) -> Server:
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    port = free_port()
    argv = [str(llama_python), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--n_ctx", "512", "--n_threads", "1"]
    return procs.start(argv, port, "/v1/models")


SLOW_SSE = """
    import asyncio, json
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    seen = []

    @app.get("/v1/models")
    async def models() -> dict:
        return {"data": [{"id": "slow"}]}

    @app.get("/seen")
    async def got() -> list:
        return seen

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        doc = await request.json()
        seen.append({"hop": request.headers.get("x-rollwise-hop", ""), "stream": doc.get("stream", False)})
        refused = "forbidden" in doc["messages"][-1]["content"]
        words = [] if refused else ["one", " two", " three", " four"]
        reason = "content_filter" if refused else "stop"
        if not doc.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            return {"choices": [{"index": 0, "message": message, "finish_reason": reason}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": len(words)}, "served_by": "slow"}

        async def events():
            try:
                for word in words * doc.get("repeat", 1):
                    chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                    yield "data: " + json.dumps(chunk) + "\\n\\n"
                    await asyncio.sleep(0.3)
                end = {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
                yield "data: " + json.dumps(end) + "\\n\\n"
                yield "data: [DONE]\\n\\n"
                seen[-1]["done"] = True
            finally:
                seen[-1]["ended"] = True

        return StreamingResponse(events(), media_type="text/event-stream")
"""


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


Events = list[tuple[float, dict[str, Any]]]


def stream(server: Server, path: str, doc: dict[str, Any], **headers: str) -> Events:
    """The SSE events of a streamed answer, each with its arrival time at the client (s after sending)."""
    events: Events = []
    start = time.perf_counter()
    with httpx.stream("POST", server.url + path, json=doc, timeout=30, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append((time.perf_counter() - start, json.loads(line[6:])))
    return events


def texts(events: Events) -> list[str]:
    out = []
    for _, doc in events:
        for choice in doc["choices"]:
            piece = choice.get("delta", {}).get("content") or choice.get("text")
            if piece:
                out.append(piece)
    return out


def test_llama_cpp_streams_token_by_token_through_the_proxy(procs: Processes, llama: Server) -> None:
    proxy = procs.proxy(llama.url, "openai", name="tiny", version="v1")
    doc = chat("the model rolls out", stream=True, max_tokens=12)
    direct = stream(llama, "/v1/chat/completions", doc)
    through = stream(proxy, "/v1/chat/completions", doc)
    assert texts(through) == texts(direct)  # greedy decoding: the same tokens, passed on unchanged
    assert len(texts(through)) == 12
    assert through[-1][1]["choices"][0]["finish_reason"] == "length"
    assert proxy.sample("rollwise_requests_total", outcome="success") == 1
    assert proxy.sample("rollwise_llm_time_to_first_token_seconds_count") == 1
    assert proxy.sample("rollwise_llm_inter_token_latency_seconds_count") == 11
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_count") == 1  # one per answer
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_sum") == pytest.approx(
        proxy.sample("rollwise_llm_inter_token_latency_seconds_sum") / 11
    )
    assert proxy.sample("rollwise_llm_output_tokens_per_second_count") == 1
    assert proxy.sample("rollwise_llm_tokens_total", kind="completion") == 12  # no usage: chunks counted
    assert proxy.sample("rollwise_llm_finish_total", reason="length") == 1
    assert proxy.sample("rollwise_llm_tokens_total", kind="prompt") == 0  # unknown without usage


def test_llama_cpp_whole_answers_count_usage_and_stop_reasons(procs: Processes, llama: Server) -> None:
    proxy = procs.proxy(llama.url, "openai", name="tiny", version="v1")
    doc = {"model": "tiny", "prompt": "the model rolls out", "max_tokens": 6, "temperature": 0}
    direct = llama.post("/v1/completions", json=doc).json()
    answer = proxy.post("/v1/completions", json=doc).json()
    assert answer["choices"][0]["text"] == direct["choices"][0]["text"]
    usage = answer["usage"]
    assert proxy.sample("rollwise_llm_tokens_total", kind="prompt") == usage["prompt_tokens"]
    assert proxy.sample("rollwise_llm_tokens_total", kind="completion") == usage["completion_tokens"]
    assert proxy.sample("rollwise_llm_finish_total", reason="length") == 1
    assert proxy.sample("rollwise_llm_time_to_first_token_seconds_count") == 1
    assert proxy.sample("rollwise_llm_output_tokens_per_second_count") == 1  # usage's tokens, not streamed
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_count") == 0
    # a stop sequence taken from what the model says: finish reason "stop"
    stop_at = answer["choices"][0]["text"].split()[1]
    stopped = proxy.post("/v1/completions", json={**doc, "stop": [stop_at]}).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert proxy.sample("rollwise_llm_finish_total", reason="stop") == 1
    # the outcome is the upstream's status: llama-cpp-python answers a body it cannot parse with 500
    bad = b'{"prompt": 3}'
    assert (
        proxy.post("/v1/completions", content=bad).status_code
        == llama.post("/v1/completions", content=bad).status_code
        == 500
    )
    assert proxy.sample("rollwise_requests_total", outcome="server_error") == 1
    assert proxy.sample("rollwise_requests_total", outcome="success") == 2


def test_a_slow_stream_reaches_the_client_as_it_is_made(procs: Processes) -> None:
    """No buffering, by the clock: the first token arrives 1 s before the last is written."""
    slow = procs.user_app(SLOW_SSE, ready="/v1/models")
    proxy = procs.proxy(slow.url, "openai", name="slow", version="v1")
    events = stream(proxy, "/v1/chat/completions", chat("hi", stream=True))
    assert texts(events) == ["one", " two", " three", " four"]
    first, last = events[0][0], events[-1][0]
    assert last - first > 1.0, events
    assert first < 0.5, events
    text = proxy.metrics()
    assert proxy.sample("rollwise_llm_inter_token_latency_seconds_count") == 3
    # the gaps are the upstream's 0.3 s, observed as the chunks passed
    assert proxy.sample("rollwise_llm_inter_token_latency_seconds_bucket", le="0.25") == 0, text
    assert proxy.sample("rollwise_llm_inter_token_latency_seconds_bucket", le="0.5") == 3, text
    assert proxy.sample("rollwise_llm_finish_total", reason="stop") == 1
    # a refusal by the content filter: answered (success), counted by its reason
    refused = stream(proxy, "/v1/chat/completions", chat("something forbidden", stream=True))
    assert refused[-1][1]["choices"][0]["finish_reason"] == "content_filter"
    assert proxy.sample("rollwise_llm_finish_total", reason="content_filter") == 1
    assert proxy.sample("rollwise_requests_total", outcome="success") == 2


def test_each_answer_is_one_observation_of_its_mean_gap_and_its_output_rate(procs: Processes) -> None:
    """The slow upstream's four words, 0.3 s apart: the answer's mean gap is its three gaps' mean
    (the per-gap histogram's sum over 3), one observation; its rate is the four chunks counted (no
    usage in the stream) over the proxy's time for the whole answer, which lies within the client's
    (the client starts before the proxy sees the request and ends after)."""
    slow = procs.user_app(SLOW_SSE, ready="/v1/models")
    proxy = procs.proxy(slow.url, "openai", name="slow", version="v1")
    began = time.perf_counter()
    assert texts(stream(proxy, "/v1/chat/completions", chat("hi", stream=True))) == [
        "one",
        " two",
        " three",
        " four",
    ]
    elapsed = time.perf_counter() - began
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_count") == 1
    gaps = proxy.sample("rollwise_llm_inter_token_latency_seconds_sum")
    mean_gap = proxy.sample("rollwise_llm_time_per_output_token_seconds_sum")
    assert mean_gap == pytest.approx(gaps / 3, rel=1e-9)
    assert 0.29 < mean_gap < 0.6, mean_gap
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_bucket", le="0.2") == 0
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_bucket", le="1.0") == 1
    assert proxy.sample("rollwise_llm_output_tokens_per_second_count") == 1
    rate = proxy.sample("rollwise_llm_output_tokens_per_second_sum")
    assert 4 / elapsed <= rate <= 4 / 1.2, (rate, elapsed)  # four 0.3 s sleeps before the stream ends
    # a whole answer: its usage's 4 completion tokens over its time; no mean gap (not streamed)
    began = time.perf_counter()
    assert proxy.post("/v1/chat/completions", json=chat("hi")).status_code == 200
    elapsed = time.perf_counter() - began
    assert proxy.sample("rollwise_llm_output_tokens_per_second_count") == 2
    whole = proxy.sample("rollwise_llm_output_tokens_per_second_sum") - rate
    assert whole >= 4 / elapsed, (whole, elapsed)
    assert proxy.sample("rollwise_llm_time_per_output_token_seconds_count") == 1
    # a refused answer has no completion tokens: no rate observed
    assert texts(stream(proxy, "/v1/chat/completions", chat("something forbidden", stream=True))) == []
    assert proxy.sample("rollwise_llm_output_tokens_per_second_count") == 2


def test_a_client_that_leaves_stops_the_upstreams_stream(procs: Processes) -> None:
    """A generating model should stop when nobody reads: the proxy closes the upstream's
    connection at the next chunk, and counts the request the client's (client_error)."""
    slow = procs.user_app(SLOW_SSE, ready="/v1/models")
    proxy = procs.proxy(slow.url, "openai", name="slow", version="v1")
    doc = chat("hi", stream=True, repeat=20)  # 80 tokens, 24 s
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=doc, timeout=30) as response:
        first = next(response.iter_lines())
    assert first.startswith("data: ")
    wait_for(lambda: slow.get("/seen").json()[0].get("ended"), 5, "the upstream's stream to be stopped")
    assert not slow.get("/seen").json()[0].get("done")
    wait_for(lambda: proxy.sample("rollwise_requests_total", outcome="client_error") == 1, 5, "counted")
    assert proxy.sample("rollwise_llm_finish_total", reason="none") == 1


def test_openai_traffic_is_mirrored_and_ab_forwarded(procs: Processes, llama: Server) -> None:
    other = procs.user_app(SLOW_SSE, ready="/v1/models")
    match = orjson.dumps([{"header": {"name": "x-variant", "value": "b"}}]).decode()
    proxy = procs.proxy(
        llama.url,
        "openai",
        "--mirror-url",
        other.url,
        "--forward-match",
        match,
        "--forward-url",
        other.url,
        "--hop-token",
        "a-token-of-sixteen-chars",
        name="tiny",
        version="v1",
    )
    assert len(texts(stream(proxy, "/v1/chat/completions", chat("the", stream=True, max_tokens=4)))) == 4
    wait_for(lambda: proxy.sample("rollwise_mirror_total", result="sent") == 1, 10, "the copy mirrored")
    # the B variant is answered by the peer, which streams its own words
    forwarded = stream(proxy, "/v1/chat/completions", chat("hi", stream=True), **{"x-variant": "b"})
    assert texts(forwarded) == ["one", " two", " three", " four"]
    assert forwarded[0][0] < 0.5 and forwarded[-1][0] - forwarded[0][0] > 1.0, forwarded  # not buffered
    assert proxy.sample("rollwise_forward_total", result="sent") == 1
    assert proxy.sample("rollwise_requests_total") == 1  # the peer counts the forwarded one
    seen = other.get("/seen").json()
    assert [s["hop"] for s in seen] == ["mirror:a-token-of-sixteen-chars", "forward:a-token-of-sixteen-chars"]
    assert all(s["stream"] for s in seen)

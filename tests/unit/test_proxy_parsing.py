"""The proxy's pure readers: dotted paths (http-json) and the OpenAI SSE stream read as it passes."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import generate_latest
from rollwise_contract.metrics import FinishReason, TokenKind
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.proxy.http_json import DottedPath
from rollwise_serving.proxy.openai import OpenAi


@pytest.mark.parametrize(
    ("path", "doc", "found"),
    [
        ("$.predictions", {"predictions": [1, 2]}, [1, 2]),
        ("$.result.label", {"result": {"label": "a"}}, "a"),
        ("$.outputs.0.data", {"outputs": [{"data": [3]}]}, [3]),
        ("$.outputs[0].data", {"outputs": [{"data": [3]}]}, [3]),
        ("$.rows.*.label", {"rows": [{"label": "a"}, {"x": 1}, {"label": "b"}]}, ["a", "b"]),
        ("$.rows[*].label", {"rows": [{"label": "a"}]}, ["a"]),
        ("$", [1], [1]),
        ("$.missing", {"a": 1}, None),
        ("$.a.5", {"a": [1]}, None),
    ],
)
def test_dotted_paths_find_what_they_name(path: str, doc: object, found: object) -> None:
    assert DottedPath.parse(path).find(doc) == found


@pytest.mark.parametrize("path", ["predictions", "$..a", "$.a[1:2]", "$.a[?(@.x)]"])
def test_paths_outside_the_subset_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match=r"cannot read|does not start"):
        DottedPath.parse(path)


def sse(*docs: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(d) + b"\n\n" for d in docs) + b"data: [DONE]\n\n"


def chunk(text: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {} if text is None else {"content": text}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(
        name, {"model": "m", "version": "v1", "track": "stable", **labels}
    )
    return value or 0.0


def test_a_stream_split_anywhere_is_read_as_whole_events() -> None:
    metrics = ServerMetrics(model="m", version="v1", track="stable")
    adapter = OpenAi(metrics.bind_llm())
    body = sse(chunk(""), chunk("Hel"), chunk("lo"), chunk("!"), chunk(None, "length"))
    reader = adapter.stream(start=0.0)
    for i in range(0, len(body), 7):  # 7-byte pieces: events cut mid-line
        reader.feed(body[i : i + 7], now=1.0 + i / 1000)
    reader.close(2.0)
    assert sample(metrics, "rollwise_llm_time_to_first_token_seconds_count") == 1
    assert sample(metrics, "rollwise_llm_inter_token_latency_seconds_count") == 2
    assert sample(metrics, "rollwise_llm_tokens_total", kind=TokenKind.COMPLETION) == 3
    assert sample(metrics, "rollwise_llm_finish_total", reason=FinishReason.LENGTH) == 1
    assert sample(metrics, "rollwise_llm_finish_total", reason=FinishReason.NONE) == 0


def test_usage_in_a_stream_wins_over_counting_chunks_and_a_cut_stream_has_no_reason() -> None:
    metrics = ServerMetrics(model="m", version="v1", track="stable")
    adapter = OpenAi(metrics.bind_llm())
    reader = adapter.stream(start=0.0)
    reader.feed(sse(chunk("a"), {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}), 0.5)
    reader.close(1.0)
    assert sample(metrics, "rollwise_llm_tokens_total", kind=TokenKind.PROMPT) == 7
    assert sample(metrics, "rollwise_llm_tokens_total", kind=TokenKind.COMPLETION) == 2
    assert sample(metrics, "rollwise_llm_finish_total", reason=FinishReason.NONE) == 1


def test_a_streams_mean_gap_and_output_rate_are_one_observation_each() -> None:
    """Text at 1.0, 1.2 and 1.6 s (an empty chunk and the finish chunk carry none): the mean gap is
    (1.6 - 1.0) / 2 = 0.3 s; 3 completion tokens (chunks counted, no usage) over the 2.0 s from the
    request to the stream's end are 1.5 tokens/s."""
    metrics = ServerMetrics(model="m", version="v1", track="stable")
    reader = OpenAi(metrics.bind_llm()).stream(start=0.0)
    for doc, now in ((chunk(""), 0.5), (chunk("a"), 1.0), (chunk("b"), 1.2), (chunk("c"), 1.6)):
        reader.feed(b"data: " + orjson.dumps(doc) + b"\n\n", now)
    reader.feed(sse(chunk(None, "stop")), 1.9)
    reader.close(2.0)
    assert sample(metrics, "rollwise_llm_time_per_output_token_seconds_count") == 1
    assert sample(metrics, "rollwise_llm_time_per_output_token_seconds_sum") == pytest.approx(0.3)
    assert sample(metrics, "rollwise_llm_output_tokens_per_second_count") == 1
    assert sample(metrics, "rollwise_llm_output_tokens_per_second_sum") == pytest.approx(1.5)
    assert sample(metrics, "rollwise_llm_inter_token_latency_seconds_count") == 2


def test_a_one_chunk_stream_has_no_mean_gap_and_usage_sets_the_rate() -> None:
    metrics = ServerMetrics(model="m", version="v1", track="stable")
    reader = OpenAi(metrics.bind_llm()).stream(start=0.0)
    reader.feed(
        sse(chunk("all of it"), {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 8}}), 1.0
    )
    reader.close(4.0)
    assert sample(metrics, "rollwise_llm_time_per_output_token_seconds_count") == 0
    assert sample(metrics, "rollwise_llm_output_tokens_per_second_sum") == pytest.approx(2.0)


def test_the_bundled_servers_exposition_has_no_llm_series() -> None:
    """Only the proxy's openai protocol binds them: the bundled server's scrape is unchanged."""
    assert b"rollwise_llm" not in generate_latest(ServerMetrics(model="m", version="v1", track="s").registry)

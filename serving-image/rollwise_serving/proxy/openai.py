"""``--protocol openai``: an OpenAI-compatible server (llama.cpp's, vLLM's, TGI's...).

Inference is ``POST /v1/chat/completions`` and ``POST /v1/completions``. A streamed answer
(``"stream": true``, Server-Sent Events) is passed on chunk by chunk as the upstream sends it,
never buffered; the proxy reads each chunk on its way through (``Stream.feed``):

- time to first token: from the request reaching the proxy to the first chunk that carries text
  (``choices[].delta.content`` for chat, ``choices[].text`` for completions); for an answer that
  is not streamed, the whole answer's time;
- inter-token latency: each gap between two chunks with text (for dashboards: gaps within one
  stream are not independent draws), and per streamed answer with two or more such chunks its mean
  gap, (last chunk's time - first's) / (chunks - 1), one observation per answer (the check's);
- output tokens per second: per answer with at least one completion token, those tokens over the
  whole answer's time, from the request reaching the proxy to its last byte (streamed or not; a
  stream cut off counts what arrived until then);
- tokens: ``usage.prompt_tokens`` and ``usage.completion_tokens`` when the answer has a ``usage``
  (always when not streamed; streamed with ``stream_options.include_usage``), else the chunks
  with text are counted as completion tokens (servers send one token per chunk) and the prompt's
  are not counted;
- finish reasons: each choice's ``finish_reason`` (``stop``, ``length``, ``content_filter``,
  ``tool_calls``, else ``other``); a stream that ends with none is ``none``.

A request's outcome is its HTTP status's, as for every protocol (a refusal by a content filter is
a success with reason ``content_filter``: the server answered as designed).
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from rollwise_contract.metrics import FinishReason, TokenKind

from rollwise_serving.metrics import LlmSeries
from rollwise_serving.proxy.observe import Headers, Seen

PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions"})
_REASONS: Final = {r.value: r for r in FinishReason}


def _finish(value: Any) -> FinishReason:
    return _REASONS.get(value, FinishReason.OTHER) if isinstance(value, str) else FinishReason.NONE


def _has_text(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        return isinstance(content, str) and content != ""
    text = choice.get("text")
    return isinstance(text, str) and text != ""


class OpenAi:
    def __init__(self, series: LlmSeries) -> None:
        self.series = series

    def is_inference(self, method: str, path: str) -> bool:
        return method == "POST" and path in PATHS

    def request(self, body: bytes, headers: Headers) -> Seen:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Seen()
        return Seen(stream=isinstance(doc, dict) and doc.get("stream") is True)

    def answer(self, seen: Seen, status: int, body: bytes, headers: Any) -> None:
        """A whole (not streamed) answer; its time to first token is observed by the app, which
        hands its whole time over in ``seen.seconds``."""
        if status != 200:
            return
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        completion = self._usage(doc.get("usage"))
        if completion and seen.seconds is not None and seen.seconds > 0:
            self.series.tokens_per_second.observe(completion / seen.seconds)
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict):
                self.series.finish[_finish(choice.get("finish_reason"))].inc()

    def _usage(self, usage: Any) -> int | None:
        """Counts a ``usage``'s tokens; its completion tokens (0 when it names none), None without one."""
        if not isinstance(usage, dict):
            return None
        completion = 0
        for kind, key in ((TokenKind.PROMPT, "prompt_tokens"), (TokenKind.COMPLETION, "completion_tokens")):
            value = usage.get(key)
            if isinstance(value, int) and value >= 0:
                self.series.tokens[kind].inc(value)
                if kind is TokenKind.COMPLETION:
                    completion = value
        return completion

    def stream(self, start: float) -> Stream:
        return Stream(self, start)


class Stream:
    """Reads one SSE answer as its bytes pass (``feed``), then records it (``close``)."""

    def __init__(self, adapter: OpenAi, start: float) -> None:
        self.adapter = adapter
        self.series = adapter.series
        self.start = start
        self._pending = b""
        self._first: float | None = None
        self._last: float | None = None
        self._events = 0
        """Chunks (SSE events) with text: the mean gap is over ``_events - 1`` gaps."""
        self._chunks = 0
        """Choices with text, over all chunks: the completion tokens when no ``usage`` says."""
        self._usage: int | None = None
        self._finished = False

    def feed(self, data: bytes, now: float) -> None:
        """Some bytes of the stream, as they arrived; events are read as each completes."""
        self._pending += data
        while True:
            end = self._pending.find(b"\n\n")
            if end < 0:
                crlf = self._pending.find(b"\r\n\r\n")
                if crlf < 0:
                    return
                event, self._pending = self._pending[:crlf], self._pending[crlf + 4 :]
            else:
                event, self._pending = self._pending[:end], self._pending[end + 2 :]
            self._event(event, now)

    def _event(self, event: bytes, now: float) -> None:
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                self._chunk(doc, now)

    def _chunk(self, doc: dict[str, Any], now: float) -> None:
        choices = doc.get("choices")
        texts = 0
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict):
                continue
            texts += _has_text(choice)
            if choice.get("finish_reason") is not None:
                self.series.finish[_finish(choice["finish_reason"])].inc()
                self._finished = True
        if texts:
            if self._last is None:
                self.series.first_token.observe(now - self.start)
                self._first = now
            else:
                self.series.inter_token.observe(now - self._last)
            self._last = now
            self._events += 1
            self._chunks += texts
        completion = self.adapter._usage(doc.get("usage"))
        if completion is not None:
            self._usage = completion

    def close(self, now: float) -> None:
        """The stream ended (or was cut) at ``now``: count what ``usage`` did not, and the answer's
        mean gap and output rate."""
        if self._usage is None and self._chunks:
            self.series.tokens[TokenKind.COMPLETION].inc(self._chunks)
        if not self._finished:
            self.series.finish[FinishReason.NONE].inc()
        if self._events >= 2 and self._first is not None and self._last is not None:
            self.series.time_per_token.observe((self._last - self._first) / (self._events - 1))
        completion = self._usage if self._usage is not None else self._chunks
        if completion and now > self.start:
            self.series.tokens_per_second.observe(completion / (now - self.start))

"""``--protocol oip-rest``: an Open Inference Protocol v2 server (MLServer, KServe, Triton, ours).

The body goes on as it came, JSON or binary tensors (``Inference-Header-Content-Length``), so
Triton's and KServe's clients work unchanged. A copy is decoded with the bundled server's own
readers: the request by ``binary.decode_infer_request`` (one input: its columns are the schema's
features), the answer by ``agreement.read_answer`` (the output named ``label`` or else the first
integer or string column is the class, ``probabilities`` their scores, else ``prediction`` or
the first float column the value), so a class share means here what it means there.

Inference is ``POST /v2/models/{name}[/versions/{v}]/infer``. Its answers are kept by their OIP
``id`` (``--feedback-max-predictions``), so ``POST /v2/models/{name}/feedback`` is joined here, by
the bundled server's own store, into the same label metrics. Every other route (metadata,
health, repository calls) passes through uncounted.
"""

from __future__ import annotations

from typing import Any

from rollwise_serving import binary
from rollwise_serving.agreement import UnreadableError, read_answer
from rollwise_serving.feedback import is_mirror_copy
from rollwise_serving.protocol import ProtocolError
from rollwise_serving.proxy.observe import Headers, Observer, Seen


class OipRest:
    def __init__(self, observer: Observer, name: str) -> None:
        self.observer = observer
        self.name = name

    def is_inference(self, method: str, path: str) -> bool:
        """This model's infer route; another model's passes through uncounted, as the bundled
        server does not count a request for a model it does not serve."""
        return method == "POST" and _action(path) == "infer" and path.split("/")[3] == self.name

    @staticmethod
    def is_feedback(method: str, path: str) -> bool:
        """Labels for earlier answers: the proxy joins them itself (``feedback``)."""
        return method == "POST" and _action(path) == "feedback"

    def request(self, body: bytes, headers: Headers) -> Seen:
        keep = not is_mirror_copy(headers)
        seen = self._features(body, headers)
        return seen if keep else Seen(codes=seen.codes, keep=False)

    def _features(self, body: bytes, headers: Headers) -> Seen:
        if self.observer.schema is None:
            return Seen()
        try:
            request = binary.decode_infer_request(body, binary.header_length(headers))
        except ProtocolError:
            return Seen()  # the upstream will say what is wrong with it
        if len(request.inputs) != 1:
            return Seen()
        tensor = request.inputs[0]
        array = tensor.data
        if array.ndim == 1 and len(self.observer.schema.names) > 1:
            array = array.reshape(1, -1)
        if array.dtype.kind in "OUS":
            return Seen(codes=self.observer.strings(tensor.name, array))
        if array.dtype.kind in "biuf":
            return Seen(codes=self.observer.features(tensor.name, array))
        return Seen()

    def answer(self, seen: Seen, status: int, body: bytes, headers: Any) -> None:
        if status != 200:
            return
        length = headers.get(binary.HEADER.decode())
        try:
            answer = read_answer(
                body,
                classifier=self.observer.metrics.is_classifier,
                header_length=int(length) if length is not None and length.isdigit() else None,
            )
        except UnreadableError:
            return
        if answer.labels is not None:
            scores = [max(p) if p else None for p in answer.probabilities] if answer.probabilities else None
            self.observer.predictions(
                seen,
                labels=answer.labels,
                scores=scores,
                answer_id=answer.id,
                probabilities=answer.probabilities,
            )
        elif answer.values is not None:
            self.observer.predictions(seen, labels=None, scores=answer.values, answer_id=answer.id)


def _action(path: str) -> str | None:
    """``infer`` of ``/v2/models/{name}[/versions/{v}]/infer``; None for any other route."""
    parts = path.split("/")[1:]
    if parts[:2] != ["v2", "models"] or len(parts) not in (4, 6):
        return None
    if len(parts) == 6 and parts[3] != "versions":
        return None
    return parts[-1]

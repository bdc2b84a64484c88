"""``--protocol http-json``: any JSON-over-HTTP model, its prediction found by a dotted path.

A user's own FastAPI or Flask model answers ``{"predictions": [...]}`` or ``{"result": {"label":
...}}``; ``--prediction-path`` says where (``$.predictions``, ``$.result.label``), and
``--features-path`` where the request's rows are (``$.instances``): objects by feature name, or
lists in the schema's feature order. Every ``POST`` is an inference request.

Paths are a small, documented subset of JSONPath (no JSONPath library is in the lock, and this is
all a model's answer needs): ``$`` then ``.key`` steps, ``.N`` (or ``[N]``) for a list index, and
``*`` (or ``[*]``) for every element of a list, whose results are gathered in order. No filters,
no slices, no recursive descent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson
from rollwise_contract.features import OutputKind

from rollwise_serving.features import FeatureValidationError, SchemaChecker
from rollwise_serving.proxy.observe import Codes, Observer, Seen

_STEP: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*)\]")
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class DottedPath:
    """A parsed path: each step a key, an index or ``*``."""

    text: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> DottedPath:
        """``"$.predictions"`` -> steps ``("predictions",)``; ValueError for anything else."""
        if not text.startswith("$"):
            raise ValueError(f"{text!r} does not start with $")
        rest, steps = text[1:], []
        while rest:
            m = _STEP.match(rest)
            if m is None:
                raise ValueError(f"{text!r}: cannot read {rest!r}")
            token = m[1] if m[1] is not None else m[2]
            steps.append(int(token) if token.isdigit() else token)
            rest = rest[m.end() :]
        return cls(text, tuple(steps))

    def find(self, doc: Any) -> Any:
        """The value at the path, or None when the document has none there."""
        found = _walk(doc, self.steps)
        return None if found is _MISSING else found


def _walk(doc: Any, steps: tuple[str | int, ...]) -> Any:
    for i, step in enumerate(steps):
        if step == "*":
            if not isinstance(doc, list):
                return _MISSING
            items = [_walk(item, steps[i + 1 :]) for item in doc]
            return [item for item in items if item is not _MISSING]
        if isinstance(step, int) and isinstance(doc, list):
            if step >= len(doc):
                return _MISSING
            doc = doc[step]
        elif isinstance(doc, dict) and str(step) in doc:
            doc = doc[str(step)]
        else:
            return _MISSING
    return doc


class HttpJson:
    """Observes features at ``features_path`` and predictions at ``prediction_path``."""

    def __init__(self, observer: Observer, prediction_path: str, features_path: str | None) -> None:
        self.observer = observer
        self.prediction = DottedPath.parse(prediction_path)
        self.features = DottedPath.parse(features_path) if features_path else None

    def is_inference(self, method: str, path: str) -> bool:
        return method == "POST"

    def request(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> Seen:
        schema = self.observer.schema
        if schema is None or self.features is None:
            return Seen()
        try:
            rows = self.features.find(orjson.loads(body))
        except orjson.JSONDecodeError:
            return Seen()
        return Seen(codes=self._rows(schema, rows))

    def _rows(self, schema: SchemaChecker, rows: Any) -> Codes:
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not rows:
            return None
        if all(isinstance(r, dict) for r in rows):
            try:
                matrix = schema.matrix_from_instances(rows)
            except FeatureValidationError as err:
                self.observer.metrics.count_problems((p.feature, p.problem.value) for p in err.problems)
                return None
            return self.observer.features("instances", matrix, checked=True)
        try:
            matrix = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            self.observer.metrics.count_problems([("", "rejected")])
            return None
        return self.observer.features("instances", matrix)

    def answer(self, seen: Seen, status: int, body: bytes, headers: Any) -> None:
        if status != 200:
            return
        try:
            found = self.prediction.find(orjson.loads(body))
        except orjson.JSONDecodeError:
            return
        if found is None:
            return
        values = found if isinstance(found, list) else [found]
        declared = self.observer.schema.output if self.observer.schema else None
        classifier = (declared.kind is OutputKind.CLASSIFIER) if declared else None
        if classifier is None:
            classifier = any(isinstance(v, str | bool) for v in values)
        if classifier:
            self.observer.predictions(seen, labels=[str(v) for v in values], scores=None)
        else:
            numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            self.observer.predictions(seen, labels=None, scores=numbers)

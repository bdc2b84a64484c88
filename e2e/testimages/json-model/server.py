"""A user's own JSON model server, as teams write them: no OIP, no Rollwise, the standard library.

POST /predict {"instances": [[sepal_l, sepal_w, petal_l, petal_w], ...]} answers
{"predictions": ["setosa", ...], "model_version": VERSION} from a fixed rule-based Iris model.
GET / is its readiness. The cluster tests run it behind the signals proxy (`runtime.server`,
protocol http-json); MODEL_BROKEN=1 makes every prediction fail with a 500 (a bad release) and
MODEL_CONSTANT=<class> makes it answer one class only (a drifted one).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("MODEL_VERSION", "dev")
BROKEN = os.environ.get("MODEL_BROKEN") == "1"
CONSTANT = os.environ.get("MODEL_CONSTANT")


def predict(row: list[float]) -> str:
    if CONSTANT:
        return CONSTANT
    petal_length, petal_width = row[2], row[3]
    if petal_length < 2.5:
        return "setosa"
    return "versicolor" if petal_width < 1.75 else "virginica"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._send(200, {"ready": True} if self.path == "/" else {"error": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/predict":
            self._send(404, {"error": "not found"})
            return
        if BROKEN:
            self._send(500, {"error": "model failed"})
            return
        try:
            rows = json.loads(body)["instances"]
            predictions = [predict([float(v) for v in row]) for row in rows]
        except (ValueError, KeyError, TypeError, IndexError) as err:
            self._send(400, {"error": f"bad request: {err}"})
            return
        self._send(200, {"predictions": predictions, "model_version": VERSION})

    def _send(self, status: int, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "9000"))
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

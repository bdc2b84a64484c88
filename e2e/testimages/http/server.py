"""A tiny HTTP server for the cluster's own tests: it answers, exports one metric, and proves the
pod can reach the API server through the in-cluster `kubernetes` Service with its mounted token."""

import json
import os
import socket
import ssl
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def whoami() -> dict[str, object]:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ["KUBERNETES_SERVICE_PORT"]
    with open(f"{SA}/token") as f:
        token = f.read()
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
    req = urllib.request.Request(
        f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
        review = json.load(resp)
    return {"service": f"{host}:{port}", "user": review["status"]["userInfo"]["username"]}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, "text/plain", b"e2e_http_up 1\n")
        elif self.path.startswith("/resolve/"):
            name = self.path.removeprefix("/resolve/")
            try:
                self._send(200, "text/plain", socket.gethostbyname(name).encode())
            except OSError as err:
                self._send(502, "text/plain", repr(err).encode())
        elif self.path.startswith("/fetch?"):
            url = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["url"][0]
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    self._send(200, "text/plain", f"{resp.status}".encode())
            except Exception as err:
                self._send(502, "text/plain", repr(err).encode())
        elif self.path == "/whoami":
            try:
                self._send(200, "application/json", json.dumps(whoami()).encode())
            except Exception as err:  # the test wants the reason, not a bare 500
                self._send(500, "text/plain", repr(err).encode())
        else:
            self._send(200, "text/plain", f"hello from {os.environ.get('HOSTNAME', '?')}\n".encode())

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()

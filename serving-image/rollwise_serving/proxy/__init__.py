"""The signals proxy (#18): Rollwise's metric contract for any model server.

Run beside the user's container (``rollwise-proxy --upstream http://127.0.0.1:9000 --protocol
oip-rest``), it receives the traffic the Service sends to the pod, sends it on unchanged and
exports what the bundled ``rollwise-serve`` exports (``docs/metrics.md``), so every check,
strategy and router works for a server Rollwise did not build. ``app.py`` is the shared ASGI
app; one module per protocol says which requests are inference and what to read of them:
``oip_rest.py``, ``http_json.py``, ``openai.py``.
"""

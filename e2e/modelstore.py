"""The example model store: ``http://models.rollwise-system.svc/<artifact>`` inside the cluster.

The examples, the demo and the e2e scenarios load real artifacts over HTTP, as users' clusters
do from an object store. This builds them with ``serving-image/make_example_models.py``
(byte-identical every run, so the digests pinned in ``examples/`` match), bakes them into a small
image served by Python's ``http.server``, imports it into the real node and applies a Deployment
and Service in ``rollwise-system``.

CLI: ``python -m e2e.modelstore`` (needs the cluster up).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e import cluster, images, paths

NAMESPACE = "rollwise-system"
MODELS_DIR = paths.CACHE / "example-models"


# Deliberately bad candidates for the rollout scenarios: each looks fine to the server (it loads,
# its digest matches) and fails only in the signal the operator must catch.
BAD_MODELS = {
    "iris-broken.py": "raise RuntimeError('this candidate fails every prediction, on purpose')",
    "iris-slow.py": "time.sleep(0.4)\n        return _rule(inputs)",
    "iris-drift.py": "return {'label': np.full(len(_rows(inputs)), 'virginica', dtype=object)}",
}
BAD_MODEL_TEMPLATE = """\
\"\"\"A bad Iris candidate for Rollwise's rollout tests.\"\"\"

import time

import numpy as np


def _rows(inputs):
    return np.asarray(next(iter(inputs.values())), dtype=np.float64)


def _rule(inputs):
    petal = _rows(inputs)[:, 2]
    label = np.where(petal < 2.5, "setosa", np.where(petal < 4.9, "versicolor", "virginica"))
    return {{"label": label.astype(object)}}


class Model:
    inputs = [{{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}}]
    outputs = [{{"name": "label", "datatype": "BYTES", "shape": [-1]}}]
    classes = ["setosa", "versicolor", "virginica"]

    def predict(self, inputs):
        {body}
"""


def make_models(out: Path = MODELS_DIR) -> Path:
    """Write the example artifacts (idempotent: the script is deterministic) and the bad ones."""
    if not (out / "manifest.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        script = paths.REPO / "serving-image" / "make_example_models.py"
        subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    for name, body in BAD_MODELS.items():
        (out / name).write_text(BAD_MODEL_TEMPLATE.format(body=body))
    return out


def sha256_of(artifact: str) -> str:
    return hashlib.sha256((make_models() / artifact).read_bytes()).hexdigest()


def uri_of(artifact: str) -> str:
    return f"http://models.{NAMESPACE}.svc/{artifact}"


def _tag(models: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(models.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    return f"rollwise/models:{digest.hexdigest()[:12]}"


MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: models, namespace: {ns}, labels: {{app: models}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: models}}}}
  template:
    metadata: {{labels: {{app: models}}}}
    spec:
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: http
          image: {image}
          imagePullPolicy: Never
          args: [python3, -m, http.server, "8080", --directory, /models]
          ports: [{{containerPort: 8080, name: http}}]
          readinessProbe: {{httpGet: {{path: /manifest.json, port: 8080}}, periodSeconds: 2}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {{name: models, namespace: {ns}}}
spec:
  selector: {{app: models}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def deploy() -> str:
    """Build, import and apply the model store; returns the image tag."""
    models = make_models()
    tag = _tag(models)
    images.ensure_python_base()
    if not images.image_exists(tag):
        with tempfile.TemporaryDirectory(prefix="models-") as tmp:
            ctx = Path(tmp)
            shutil.copytree(models, ctx / "models")
            (ctx / "Dockerfile").write_text(
                "FROM rollwise/python:bookworm\nCOPY models /models\nUSER 65532:65532\n"
            )
            images.docker_build(ctx, tag)
    images.import_into_node(tag)
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=MANIFESTS.format(ns=NAMESPACE, image=tag))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/models", "--timeout=120s")
    return tag


if __name__ == "__main__":
    print(deploy())

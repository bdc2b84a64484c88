"""The operator's half of the contract with the serving image: what `desired.py` puts on the
`rollwise-serve` command line is accepted by the serving image's own parsers, unchanged.

If either side renames a flag or a feature-schema key, this fails here instead of as a pod that
never becomes ready.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rollwise.api.v1alpha1 import ModelDeployment
from rollwise.plan.desired import proxy_args, serve_args
from rollwise.plan.names import Track
from rollwise_serving.config import parse_settings
from rollwise_serving.features import SchemaChecker
from rollwise_serving.proxy.config import parse_proxy_settings

from tests.unit.manifests import SHA, base, edit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EVERYTHING = edit(
    base(),
    spec__model__uri="pvc://models/iris-v1.joblib",
    spec__model__featureSchema={
        "features": [
            {"name": "x", "type": "float", "min": 0, "max": 1},
            {"name": "n", "type": "int", "min": 0, "required": False, "default": 3},
            {"name": "c", "type": "category", "values": ["a", "b"]},
            {"name": "b", "type": "bool"},
        ],
        "output": {"kind": "classifier", "classes": ["no", "yes"]},
    },
    spec__model__reference={"uri": "pvc://models/iris-reference.json"},
    spec__model__fallback={"uri": "https://models.example/rule.py", "format": "python", "sha256": SHA},
)


def model_deployment(path: Path) -> dict[str, Any]:
    """The example's ModelDeployment (router examples also carry the user's route object)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return next(d for d in docs if d.get("kind") == "ModelDeployment")


CASES = [pytest.param(EVERYTHING, id="every optional model field set")] + [
    pytest.param(model_deployment(p), id=p.name)
    for p in sorted(EXAMPLES.glob("*.yaml"))
    if "kind: ModelDeployment" in p.read_text()  # batch-job.yaml: test_batch_job checks rollwise-batch's args
]


@pytest.mark.parametrize("doc", CASES)
@pytest.mark.parametrize("track", [Track.STABLE, Track.CANDIDATE])
def test_serving_image_accepts_the_planned_arguments(doc: dict[str, Any], track: Track) -> None:
    spec = ModelDeployment.model_validate(doc).spec
    model = spec.model
    if spec.runtime.server is not None:
        # Your own server: the proxy beside it takes its arguments (`rollwise-proxy`).
        proxied = parse_proxy_settings(
            [str(a) for a in proxy_args(model, spec.runtime.server, track)], environ={}
        )
        assert (proxied.name, proxied.version, str(proxied.track), proxied.port) == (
            model.name,
            model.version,
            str(track),
            8080,
        )
        assert proxied.upstream == f"http://127.0.0.1:{spec.runtime.server.port}"
        assert str(proxied.protocol) == str(spec.runtime.server.protocol)
        return
    settings = parse_settings([str(a) for a in serve_args(model, track)], environ={})
    assert (settings.name, settings.version, str(settings.format), str(settings.track), settings.port) == (
        model.name,
        model.version,
        str(model.format),
        str(track),
        8080,
    )
    assert settings.sha256 == model.sha256
    if model.feature_schema is not None:
        assert settings.feature_schema is not None
        loaded = SchemaChecker.load(settings.feature_schema)
        assert loaded.names == tuple(f.name for f in model.feature_schema.features)


def test_fallback_and_reference_reach_the_server_as_it_expects_them() -> None:
    model = ModelDeployment.model_validate(EVERYTHING).spec.model
    settings = parse_settings([str(a) for a in serve_args(model, Track.STABLE)], environ={})
    assert settings.model_uri == "file:///mnt/pvc/models/iris-v1.joblib"
    assert settings.reference == "/mnt/pvc/models/iris-reference.json"
    assert (settings.fallback_uri, str(settings.fallback_format), settings.fallback_sha256) == (
        "https://models.example/rule.py",
        "python",
        SHA,
    )

"""Builders for ModelDeployment manifests in tests: a valid base plus dotted-path edits."""

from __future__ import annotations

import copy
from typing import Any

SHA = "a" * 64


def base(name: str = "iris") -> dict[str, Any]:
    """A valid manifest using most of the API, so each test row breaks exactly one thing."""
    return {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "model": {
                "name": "iris",
                "version": "1.0.0",
                "uri": "http://models.example/iris.joblib",
                "sha256": SHA,
                "format": "sklearn",
            },
            "runtime": {"replicas": 2},
            "rollout": {
                "canary": {"steps": [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}]},
                "analysis": {"metrics": [{"name": "ok", "builtin": "successRate", "threshold": {"min": 99}}]},
            },
        },
    }


_DELETE = object()


def edit(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `doc` with `a__b__0__c=value` set (None deletes the key); `__` separates keys."""
    out = copy.deepcopy(doc)
    for dotted, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split("__")]
        node: Any = out
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return out

"""The generated CRD and reference: current on disk, structural, and shaped as kubectl users expect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollwise.api import crdgen

REPO = Path(__file__).resolve().parents[2]


def test_crds_and_reference_on_disk_match_the_models() -> None:
    diff = "".join(crdgen.stale(REPO))
    assert diff == "", f"run `python -m rollwise.api.crdgen` and commit:\n{diff}"


def test_check_fails_with_a_diff_when_stale_and_passes_once_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "+kind: CustomResourceDefinition" in capsys.readouterr().out
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / crdgen.REFERENCE_PATH).write_text("hand edit\n")
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "-hand edit" in capsys.readouterr().out


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


SCHEMA = crdgen.openapi_schema()
NODES = list(_nodes(SCHEMA))


def test_every_schema_node_is_structural() -> None:
    problems = []
    for path, node in NODES:
        if "type" not in node and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: no type")
        for banned in ("$ref", "title", "nullable", "allOf", "oneOf", "uniqueItems", "$defs"):
            if banned in node:
                problems.append(f"{path}: has {banned}")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: anyOf outside int-or-string")
    assert problems == []


def test_lists_and_maps_are_bounded_so_cel_cost_stays_estimable() -> None:
    unbounded = [p for p, n in NODES if n.get("type") == "array" and "maxItems" not in n]
    unbounded += [
        p for p, n in NODES if isinstance(n.get("additionalProperties"), dict) and "maxProperties" not in n
    ]
    spec_strings = [
        p
        for p, n in NODES
        if p.startswith(".spec") and n.get("type") == "string" and "maxLength" not in n and "enum" not in n
    ]
    assert (unbounded, spec_strings) == ([], [])


def test_optional_fields_are_not_required() -> None:
    model = SCHEMA["properties"]["spec"]["properties"]["model"]
    # uri and format are required by a rule: with runtime.server the user's server loads its model
    assert sorted(model["required"]) == ["name", "version"]
    assert "required" not in SCHEMA["properties"]["spec"]["properties"]["runtime"]
    assert SCHEMA["required"] == ["spec"]


def test_field_docs_become_descriptions() -> None:
    model = SCHEMA["properties"]["spec"]["properties"]["model"]
    assert model["properties"]["sha256"]["description"].startswith(
        "Hex sha256 of the artifact (of its `SHA256SUMS` for a directory), checked before loading"
    )
    assert (
        "unset uses the operator's `ROLLWISE_SERVING_IMAGE`"
        in (SCHEMA["properties"]["spec"]["properties"]["runtime"]["properties"]["image"]["description"])
    )


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        pytest.param(
            ".spec.rollout.canary.steps[].setWeight", "maximum", 100, id="canary weights stop at 100"
        ),
        pytest.param(".spec.rollout.canary.steps[].setWeight", "minimum", 1, id="canary weights start at 1"),
        pytest.param(
            ".spec.model.format",
            "enum",
            ["sklearn", "onnx", "python", "xgboost", "lightgbm"],
            id="formats are an enum",
        ),
        pytest.param(".spec.model.sha256", "pattern", "^[a-f0-9]{64}$", id="digests are 64 hex characters"),
        pytest.param(
            ".spec.rollout.traffic.provider", "default", "replicas", id="the replicas router is the default"
        ),
        pytest.param(
            ".spec.rollout.webhooks", "x-kubernetes-list-map-keys", ["name"], id="webhooks are keyed by name"
        ),
        pytest.param(".status.conditions", "x-kubernetes-list-type", "map", id="conditions merge by type"),
        pytest.param(".status.history", "maxItems", 10, id="history is bounded"),
        pytest.param(
            ".spec.runtime.resources.requests.cpu", "x-kubernetes-int-or-string", True, id="cpu: 1 is allowed"
        ),
    ],
)
def test_schema_keeps(path: str, key: str, value: Any) -> None:
    assert dict(NODES)[path][key] == value


def test_required_cel_rules_are_present_with_field_naming_messages() -> None:
    messages = [r["message"] for _, n in NODES for r in n.get("x-kubernetes-validations", [])]
    for start in (
        "spec.rollout.canary.steps: setWeight values must strictly increase within 1..100",
        "spec.model.sha256: required for format sklearn and python",
        "spec.rollout: set exactly one strategy block",
        "spec.runtime.replicas: set replicas or autoscaling, not both",
        "spec.runtime.autoscaling.minReplicas: must not exceed maxReplicas",
    ):
        assert any(m.startswith(start) for m in messages), start


def test_status_carries_no_cel_rules() -> None:
    assert [p for p, n in NODES if p.startswith(".status") and "x-kubernetes-validations" in n] == []


def test_crd_names_columns_and_status_subresource() -> None:
    crd = yaml.safe_load(crdgen.render_crd())
    spec = crd["spec"]
    version = spec["versions"][0]
    assert crd["metadata"]["name"] == "modeldeployments.rollwise.dev"
    assert (spec["names"]["kind"], spec["names"]["plural"], spec["names"]["shortNames"]) == (
        "ModelDeployment",
        "modeldeployments",
        ["md"],
    )
    assert spec["names"]["categories"] == ["rollwise"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Strategy",
        "Stable",
        "Candidate",
        "Weight",
        "Phase",
        "Age",
    ]


def test_reference_lists_every_spec_field_and_rule() -> None:
    text = crdgen.render_reference()
    assert "## `spec.rollout.canary.steps[]`" in text
    assert "| `setWeight` | `integer` |" in text
    assert "*rule:* spec.model.sha256: required for format sklearn and python" in text

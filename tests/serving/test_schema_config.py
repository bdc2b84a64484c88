"""Feature schema, reference/PSI, settings: the pure parts, with the exact texts users see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollwise_contract.metrics import Problem
from rollwise_contract.redact import redact_uri
from rollwise_serving.config import (
    HashRange,
    ModelFormat,
    Redactor,
    SettingsError,
    Track,
    parse_settings,
)
from rollwise_serving.drift import Reference, bin_counts, psi
from rollwise_serving.features import FeatureValidationError, SchemaChecker, SchemaError
from rollwise_serving.forwarding import bucket_of

SCHEMA = {
    "features": [
        {"name": "age", "type": "int", "min": 0, "max": 130},
        {"name": "income", "type": "float", "min": 0},
        {"name": "colour", "type": "category", "values": ["red", "blue"], "required": False},
        {"name": "member", "type": "bool"},
    ]
}


@pytest.fixture
def schema() -> SchemaChecker:
    return SchemaChecker.load(json.dumps(SCHEMA))


def test_valid_instances_become_the_model_matrix(schema: SchemaChecker) -> None:
    matrix = schema.matrix_from_instances(
        [
            {"age": 30, "income": 1.5, "colour": "blue", "member": True},
            {"age": 1, "income": 0, "member": False},
        ]
    )
    np.testing.assert_array_equal(matrix[0], [30, 1.5, 1, 1])
    assert matrix[1, 0] == 1 and np.isnan(matrix[1, 2]) and matrix[1, 3] == 0


def test_every_bad_field_is_listed_in_one_error(schema: SchemaChecker) -> None:
    with pytest.raises(FeatureValidationError) as err:
        schema.matrix_from_instances(
            [
                {"age": 200, "income": -1, "colour": "green", "member": "yes"},
                {"income": float("inf"), "member": True, "height": 3},
            ]
        )
    got = {(p.loc, p.problem) for p in err.value.problems}
    assert got == {
        ("instances[0].age", Problem.OUT_OF_RANGE),
        ("instances[0].income", Problem.OUT_OF_RANGE),
        ("instances[0].colour", Problem.OUT_OF_RANGE),
        ("instances[0].member", Problem.REJECTED),
        ("instances[1].age", Problem.MISSING),
        ("instances[1].income", Problem.REJECTED),
        ("instances[1].height", Problem.REJECTED),
    }


def test_tensor_check_flags_range_and_fractions_per_cell(schema: SchemaChecker) -> None:
    ok = np.array([[30, 10.0, 0, 1]])
    schema.check_matrix("x", ok)
    with pytest.raises(FeatureValidationError) as err:
        schema.check_matrix("x", np.array([[30.5, -1.0, 5, 1]]))
    assert [(p.feature, p.problem) for p in err.value.problems] == [
        ("age", Problem.REJECTED),
        ("income", Problem.OUT_OF_RANGE),
        ("colour", Problem.OUT_OF_RANGE),
    ]
    assert err.value.problems[1].message == "x[0][1] (income): -1 is outside [0, inf]"


def test_tensor_with_the_wrong_column_count_names_the_expected_shape(schema: SchemaChecker) -> None:
    with pytest.raises(FeatureValidationError, match=r"send shape \[N, 4\]"):
        schema.check_matrix("x", np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            {"features": []}, "features: [] is invalid: List should have at least 1 item", id="no features"
        ),
        pytest.param(
            {"features": [{"name": "a", "type": "category"}]},
            "features[0].values: required for type category and not allowed otherwise; list the "
            "category's values or change the type",
            id="category without values",
        ),
        pytest.param(
            {"features": [{"name": "a", "min": 2, "max": 1}]},
            "features[0].min: must not exceed max; swap or fix the bounds",
            id="inverted range",
        ),
        pytest.param(
            {"features": [{"name": "a"}, {"name": "a"}]},
            "features: duplicate name 'a'; each name may appear once",
            id="duplicate names",
        ),
        pytest.param(
            {"features": [{"name": "a", "type": "text"}]},
            "features[0].type: 'text' is invalid",
            id="unknown type",
        ),
    ],
)
def test_bad_schemas_name_the_field(doc: dict[str, object], message: str) -> None:
    with pytest.raises(SchemaError, match="--feature-schema") as err:
        SchemaChecker.load(json.dumps(doc))
    assert message in str(err.value)


def test_psi_is_zero_for_the_reference_itself_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    ref_values = rng.normal(0, 1, 10_000)
    cuts = list(np.quantile(ref_values, np.linspace(0, 1, 11)[1:-1]))
    ref = bin_counts(ref_values, cuts) / len(ref_values)
    same = psi(bin_counts(rng.normal(0, 1, 5000), cuts).tolist(), ref.tolist())
    shifted = psi(bin_counts(rng.normal(1.0, 1, 5000), cuts).tolist(), ref.tolist())
    assert same is not None and shifted is not None
    assert same < 0.02 < 0.25 < shifted
    assert psi([0, 0], [0.5, 0.5]) is None


def test_bins_follow_prometheus_le_rule() -> None:
    assert bin_counts(np.array([1.0, 1.5, 2.0, 3.0]), [1.0, 2.0]).tolist() == [1, 2, 1]


@given(
    st.lists(st.floats(0, 1), min_size=3, max_size=3), st.lists(st.integers(0, 1000), min_size=3, max_size=3)
)
def test_psi_is_never_negative(raw: list[float], counts: list[int]) -> None:
    total = sum(raw) or 1.0
    value = psi(counts, [r / total for r in raw] if sum(raw) else [1 / 3] * 3)
    assert value is None or value >= 0


def test_reference_file_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"features": {"a": {"cuts": [1, 2], "fractions": [0.5, 0.5]}}}))
    with pytest.raises(
        ValueError, match=r"--reference: features\.a: Value error, needs len\(cuts\) \+ 1 = 3 fractions"
    ):
        Reference.load(str(path))


def test_flags_beat_env_and_env_fills_the_rest() -> None:
    s = parse_settings(
        ["--name", "iris", "--track", "candidate"],
        {
            "ROLLWISE_NAME": "other",
            "ROLLWISE_MODEL_URI": "/m.onnx",
            "ROLLWISE_VERSION": "v2",
            "ROLLWISE_FORMAT": "onnx",
        },
    )
    assert (s.name, s.version, s.track, s.format, s.model_uri) == (
        "iris",
        "v2",
        Track.CANDIDATE,
        ModelFormat.ONNX,
        "/m.onnx",
    )


def test_settings_survive_the_trip_to_worker_processes() -> None:
    s = parse_settings(
        [
            "--model-uri",
            "/m",
            "--name",
            "n",
            "--version",
            "1",
            "--sha256",
            "a" * 64,
            "--hash-header",
            "x-user",
            "--hash-range",
            "0-9",
            "--forward-url",
            "http://127.0.0.1:1",
            "--access-log",
            "true",
        ],
        {},
    )
    assert parse_settings([], s.to_environ()) == s
    assert s.hash_range == HashRange(0, 9)


def test_all_bad_flags_are_reported_at_once_with_their_fix() -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(
            ["--format", "tensorflow", "--track", "canary", "--port", "99999", "--hash-range", "50-10"], {}
        )
    assert err.value.problems == [
        "--model-uri (env ROLLWISE_MODEL_URI) is required; point it at the model artifact, "
        "e.g. file:///models/model.joblib or s3://bucket/key",
        "--name (env ROLLWISE_NAME) is required; give the model a name, e.g. --name iris",
        "--version (env ROLLWISE_VERSION) is required; give the model a version, e.g. --version v1",
        "--format (env ROLLWISE_FORMAT): 'tensorflow' is not valid; "
        "use sklearn or onnx or python or xgboost or lightgbm",
        "--track (env ROLLWISE_TRACK): 'canary' is not valid; use stable or candidate",
        "--port (env ROLLWISE_PORT): '99999' is not valid; use an integer from 1 to 65535",
        "--hash-range (env ROLLWISE_HASH_RANGE): '50-10' is not valid; "
        "use LOW-HIGH with 0 <= LOW <= HIGH <= 99, e.g. 0-9 for 10 % of users",
        "hash forwarding needs --hash-header, --hash-range and --forward-url together; "
        "add --hash-header, --forward-url",
    ]


BASE_FLAGS = ["--model-uri", "/m", "--name", "n", "--version", "1", "--sha256", "a" * 64]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("x-variant=b", "--forward-match (env ROLLWISE_FORWARD_MATCH) is not JSON"),
        ("[]", "must be a non-empty JSON list"),
        ('[{"query": {"name": "a", "value": "b"}}]', "entry 0 must have exactly one key, header or cookie"),
        ('[{"header": {"name": "x-v"}}]', "entry 0: header needs exactly one of value or regex"),
        ('[{"header": {"name": "x-v", "value": "b", "regex": "b"}}]', "exactly one of value or regex"),
        ('[{"cookie": {"name": "c", "regex": "b"}}]', "entry 0: cookie needs a string value"),
        (
            '[{"header": {"name": "x-v", "regex": "("}}]',
            "entry 0: header.regex '(' is invalid: not valid RE2 syntax (missing ): ()",
        ),
        (
            '[{"header": {"name": "x-v", "regex": "(a)\\\\1"}}]',
            "entry 0: header.regex '(a)\\\\1' is invalid: not valid RE2 syntax (invalid escape sequence: "
            "\\1); RE2, which Envoy, Istio and the model server match with, has no backreferences like "
            "\\1 and no lookaround like (?=...) or (?<=...): rewrite the pattern without them",
        ),
        (
            '[{"header": {"name": "x-v", "regex": "(?<=a)b"}}]',
            "entry 0: header.regex '(?<=a)b' is invalid: not valid RE2 syntax (invalid perl operator: (?<=)",
        ),
    ],
)
def test_a_bad_forward_match_names_the_entry_and_the_fix(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings([*BASE_FLAGS, "--forward-match", value, "--forward-url", "http://peer"], {})
    assert len(err.value.problems) == 1 and problem in err.value.problems[0], err.value.problems
    assert 'e.g. [{"header": {"name": "x-variant", "value": "b"}}]' in err.value.problems[0]


def test_forward_match_needs_a_peer_and_excludes_hash_forwarding() -> None:
    match = '[{"header": {"name": "x-variant", "value": "b"}}]'
    with pytest.raises(SettingsError) as err:
        parse_settings(
            [*BASE_FLAGS, "--forward-match", match, "--hash-header", "x-user", "--hash-range", "0-9"], {}
        )
    assert err.value.problems == [
        "--forward-match needs --forward-url (the peer answering matching requests)",
        "set either --forward-match or --hash-header/--hash-range, not both",
    ]
    ok = parse_settings([*BASE_FLAGS, "--forward-match", match, "--forward-url", "http://peer/"], {})
    assert parse_settings([], ok.to_environ()) == ok  # survives the hand-off to worker processes


def test_pickles_need_a_pinned_digest() -> None:
    with pytest.raises(
        SettingsError, match=r"--sha256 \(env ROLLWISE_SHA256\) is required for --format sklearn"
    ):
        parse_settings(["--model-uri", "/m.joblib", "--name", "n", "--version", "1"], {})
    onnx = parse_settings(["--model-uri", "/m.onnx", "--name", "n", "--version", "1", "--format", "onnx"], {})
    assert onnx.sha256 is None


def test_user_buckets_are_stable_and_spread() -> None:
    assert bucket_of("alice") == bucket_of("alice")
    buckets = [bucket_of(f"user-{i}") for i in range(10_000)]
    share = sum(b < 10 for b in buckets) / len(buckets)
    assert 0.08 < share < 0.12


def test_a_bad_hop_token_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings([*BASE_FLAGS, "--hop-token", "s3cret:short"], {})
    assert err.value.problems == [
        "--hop-token (env ROLLWISE_HOP_TOKEN): (the value, hidden) is not valid; use 16 to 256 letters, "
        "digits or ._~+/=- (e.g. `openssl rand -hex 32`)"
    ]
    ok = parse_settings(BASE_FLAGS, {"ROLLWISE_HOP_TOKEN": "f" * 64})
    assert ok.hop_token == "f" * 64 and "f" * 16 not in repr(ok)
    assert parse_settings([], ok.to_environ()) == ok  # workers get it too


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        pytest.param("/models/m.onnx", "/models/m.onnx", id="a path is shown as it is"),
        pytest.param("file:///models/m.onnx", "file:///models/m.onnx", id="a file URI is shown as it is"),
        pytest.param(
            "https://u:p@host:8443/m.onnx?X-Amz-Signature=abc#x",
            "https://***@host:8443/m.onnx",
            id="userinfo starred, query and fragment dropped",
        ),
        pytest.param("https://token@host/m", "https://***@host/m", id="a user without password is starred"),
        pytest.param("s3://bucket/key?versionId=3", "s3://bucket/key", id="an s3 query is dropped"),
        pytest.param(
            "rediss://:pw@redis:6380/0", "rediss://***@redis:6380/0", id="a redis password is starred"
        ),
        pytest.param("http://[::1/m", "http://***", id="an unparseable URI shows no more than its scheme"),
    ],
)
def test_uris_are_shown_without_their_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_the_redactor_hides_credentials_however_a_library_quotes_them() -> None:
    uri = "https://alice:pa%2Fss@h/m.onnx?X-Amz-Credential=AKIA%2F2026&X-Amz-Expires=3600"
    scrub = Redactor([uri], ["hop-token-0123456789"]).scrub
    assert scrub(f"GET {uri} failed") == "GET https://***@h/m.onnx failed"
    assert scrub("auth for pa/ss with AKIA/2026 and hop-token-0123456789") == "auth for *** with *** and ***"
    assert scrub("expires in 3600 s") == "expires in 3600 s"  # too short to be a credential on its own


def test_a_bad_redis_url_is_shown_without_its_password() -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings([*BASE_FLAGS, "--redis-url", "http://:hunter2-pw@redis:6379"], {})
    assert err.value.problems == [
        "--redis-url (env ROLLWISE_REDIS_URL): 'http://***@redis:6379' is not valid; use redis://host:6379/0"
    ]


def test_the_pod_namespace_comes_from_the_downward_api_variable() -> None:
    assert parse_settings(BASE_FLAGS, {}).pod_namespace == "default"
    s = parse_settings(BASE_FLAGS, {"POD_NAMESPACE": "team-a"})
    assert s.pod_namespace == "team-a" and s.to_environ()["POD_NAMESPACE"] == "team-a"
    assert parse_settings([], s.to_environ()) == s
    with pytest.raises(SettingsError) as err:
        parse_settings([*BASE_FLAGS, "--redis-ca-file", "/ca.pem"], {"POD_NAMESPACE": "Team_A"})
    assert err.value.problems == [
        "--pod-namespace (env POD_NAMESPACE): 'Team_A' is not a Kubernetes namespace; use a DNS label "
        "(lowercase letters, digits, '-')",
        "--redis-ca-file verifies a TLS Redis: use it with a rediss:// --redis-url",
    ]

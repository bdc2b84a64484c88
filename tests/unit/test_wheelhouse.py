"""The images' requirements come from uv.lock: each image's own closure, pinned and hashed."""

from __future__ import annotations

import re
from typing import Any

import pytest

from e2e import wheelhouse

LOCK = wheelhouse.load_lock()
DEBIAN = {  # Debian bookworm's python3 in rollwise/python:bookworm
    "implementation_name": "cpython", "implementation_version": "3.11.2", "os_name": "posix",
    "platform_machine": "x86_64", "platform_release": "", "platform_system": "Linux",
    "platform_version": "", "python_full_version": "3.11.2", "platform_python_implementation": "CPython",
    "python_version": "3.11", "sys_platform": "linux",
}  # fmt: skip
LINE = re.compile(r"^([a-z0-9._-]+)==(\S+)( --hash=sha256:[0-9a-f]{64})+$")


def names(image: str, env: dict[str, str] = DEBIAN, extras: tuple[str, ...] = ()) -> set[str]:
    return {p["name"] for p in wheelhouse.closure(LOCK, image, env, extras)}


def locked_version(name: str) -> str:
    (package,) = [p for p in LOCK["package"] if p["name"] == name]
    version: str = package["version"]
    return version


def test_the_model_server_image_carries_no_operator_dependency() -> None:
    serving = names("serving")
    assert {"scikit-learn", "numpy", "onnxruntime", "uvicorn", "redis", "boto3"} <= serving
    assert not serving & {"kopf", "kubernetes", "rich", "rollwise"}


def test_the_operator_image_carries_no_model_library() -> None:
    operator = names("operator")
    assert {"kopf", "kubernetes", "pydantic", "rich"} <= operator
    assert not operator & {"scikit-learn", "numpy", "onnxruntime", "scipy"}


def test_markers_are_the_image_interpreters_not_the_hosts() -> None:
    """redis needs async-timeout below CPython 3.11.3: Debian's 3.11.2 gets it, 3.11.7 does not."""
    assert "async-timeout" in names("serving")
    assert "async-timeout" not in names("serving", {**DEBIAN, "python_full_version": "3.11.7"})


def test_every_line_is_the_locked_version_with_its_hashes() -> None:
    text = wheelhouse.requirements(LOCK, "serving", DEBIAN)
    lines = text.splitlines()
    assert len(lines) == len(names("serving"))
    for line in lines:
        match = LINE.match(line)
        assert match, line
        assert match[2] == locked_version(match[1])


def test_a_package_without_a_wheel_fails_naming_it_and_the_fix() -> None:
    lock: dict[str, Any] = {
        "package": [
            {"name": "rollwise", "version": "0", "dependencies": [{"name": "pure"}]},
            {"name": "pure", "version": "1.0", "sdist": {"hash": "sha256:" + "0" * 64}},
        ]
    }
    with pytest.raises(wheelhouse.LockError, match=r"pure 1\.0 has no wheel in uv\.lock.*make lock"):
        wheelhouse.requirements(lock, "operator", DEBIAN)


@pytest.mark.parametrize(
    ("extras", "adds"),
    [
        pytest.param(
            ("batch",), {"pyarrow", "pandas", "tzdata"}, id="batch adds pyarrow, pandas and pandas' tzdata"
        ),
        pytest.param(("xgboost",), {"xgboost-cpu"}, id="xgboost adds the CPU-only build"),
        pytest.param(("lightgbm",), {"lightgbm"}, id="lightgbm adds lightgbm"),
        pytest.param(("batch", "xgboost"), {"pyarrow", "pandas", "xgboost-cpu"}, id="two extras add both"),
    ],
)
def test_a_variant_is_the_serving_closure_plus_its_extras_closures(
    extras: tuple[str, ...], adds: set[str]
) -> None:
    serving, variant = names("serving"), names("serving", extras=extras)
    assert adds <= variant - serving
    assert serving <= variant
    # closed under dependencies: whatever a package in the variant needs is in it too
    by_name = {p["name"]: p for p in LOCK["package"]}
    for name in variant:
        needs = {d["name"] for d in by_name[name].get("dependencies", []) if wheelhouse._applies(d, DEBIAN)}
        assert needs <= variant, name
    assert not variant & {"kopf", "kubernetes", "rich", "rollwise", "pyspark", "nvidia-nccl-cu12"}


def test_no_variant_carries_the_other_formats() -> None:
    assert not names("serving", extras=("batch",)) & {"xgboost-cpu", "lightgbm"}
    assert "lightgbm" not in names("serving", extras=("xgboost",))


def test_a_variants_lines_are_locked_and_hashed() -> None:
    lines = wheelhouse.requirements(LOCK, "serving", DEBIAN, ("batch",)).splitlines()
    assert len(lines) == len(names("serving", extras=("batch",)))
    assert any(line.startswith(f"pyarrow=={locked_version('pyarrow')} --hash=") for line in lines)


@pytest.mark.parametrize(
    ("image", "extras", "message"),
    [
        pytest.param(
            "serving",
            ("parquet",),
            r"unknown extra 'parquet': use any of .*batch.*lightgbm.*xgboost",
            id="an undeclared extra names the declared ones",
        ),
        pytest.param(
            "operator",
            ("batch",),
            r"the operator image takes no extras \(got batch\); drop --with",
            id="the operator image refuses extras",
        ),
    ],
)
def test_a_wrong_extra_fails_naming_the_fix(image: str, extras: tuple[str, ...], message: str) -> None:
    with pytest.raises(wheelhouse.LockError, match=message):
        wheelhouse.roots(LOCK, image, extras)


def test_the_cli_takes_repeated_with(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(wheelhouse, "image_environment", lambda tag: DEBIAN)
    assert wheelhouse.main(["serving", "--with", "batch", "--with", "xgboost"]) == 0
    printed = {line.split("==")[0] for line in capsys.readouterr().out.splitlines()}
    assert printed == names("serving", extras=("batch", "xgboost"))
    assert wheelhouse.main(["serving", "--with", "nope"]) == 2
    assert "unknown extra 'nope'" in capsys.readouterr().err

"""The optional formats (xgboost, lightgbm) when their library is missing, and their class names.

The default serving image has neither library: `--format xgboost` there must fail to load with a
readiness reason naming the extra to install, never an ImportError traceback or a crash. The
import is made to fail here by hiding the module (`sys.modules[name] = None`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from rollwise_contract.model import ModelFormat
from rollwise_serving.config import parse_settings
from rollwise_serving.errors import ArtifactError
from rollwise_serving.repository import LoadState, ModelSlot, load_slot
from rollwise_serving.runtimes import class_labels, load_runtime, threads_from_env

MISSING = [
    pytest.param(
        ModelFormat.XGBOOST,
        "xgboost",
        "--format xgboost needs the xgboost library, which this server lacks; install the 'xgboost' "
        "extra (pip install 'rollwise[serving,xgboost]') or run a serving image built with it",
        id="xgboost without its library names the xgboost extra",
    ),
    pytest.param(
        ModelFormat.LIGHTGBM,
        "lightgbm",
        "--format lightgbm needs the lightgbm library, which this server lacks; install the 'lightgbm' "
        "extra (pip install 'rollwise[serving,lightgbm]') or run a serving image built with it",
        id="lightgbm without its library names the lightgbm extra",
    ),
]


def hide(monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # `import library` now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, f"rollwise_serving.runtimes.{library}", raising=False)


@pytest.mark.parametrize(("fmt", "library", "message"), MISSING)
def test_a_missing_library_fails_loading_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: ModelFormat, library: str, message: str
) -> None:
    hide(monkeypatch, library)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"{}")
    with pytest.raises(ArtifactError) as err:
        load_runtime(fmt, artifact)
    assert str(err.value) == message


@pytest.mark.parametrize(("fmt", "library", "message"), MISSING)
def test_a_missing_library_is_the_readiness_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: ModelFormat, library: str, message: str
) -> None:
    hide(monkeypatch, library)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"{}")
    settings = parse_settings(
        ["--model-uri", str(artifact), "--format", fmt.value, "--name", "m", "--version", "v1"], environ={}
    )
    slot = ModelSlot("primary", settings.model_uri, settings.format, settings.sha256)
    load_slot(slot, settings)
    assert (slot.state, slot.reason, slot.runtime) == (LoadState.FAILED, message, None)


def test_another_missing_module_is_not_blamed_on_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "rollwise_serving.runtimes.xgboost", None)
    with pytest.raises(ModuleNotFoundError) as err:
        load_runtime(ModelFormat.XGBOOST, tmp_path / "model.json")
    assert err.value.name == "rollwise_serving.runtimes.xgboost"


def test_declared_classes_name_the_indices_in_order() -> None:
    assert class_labels(None, 3, ModelFormat.XGBOOST).tolist() == [0, 1, 2]
    named = class_labels(["setosa", "versicolor", "virginica"], 3, ModelFormat.LIGHTGBM)
    assert named.dtype == np.dtype(object) and named.tolist() == ["setosa", "versicolor", "virginica"]


def test_declared_classes_of_another_count_are_refused_naming_both() -> None:
    with pytest.raises(ArtifactError) as err:
        class_labels(["a", "b"], 3, ModelFormat.XGBOOST)
    assert str(err.value) == (
        "the feature schema's output.classes names 2 classes (['a', 'b']); this xgboost model has 3: "
        "list one name per class index, in index order"
    )


@pytest.mark.parametrize(
    ("value", "threads"),
    [pytest.param(None, 1, id="one thread by default"), pytest.param("2", 2, id="the variable sets it")],
)
def test_thread_count_defaults_to_one(
    monkeypatch: pytest.MonkeyPatch, value: str | None, threads: int
) -> None:
    if value is None:
        monkeypatch.delenv("ROLLWISE_XGBOOST_THREADS", raising=False)
    else:
        monkeypatch.setenv("ROLLWISE_XGBOOST_THREADS", value)
    assert threads_from_env("ROLLWISE_XGBOOST_THREADS") == threads


@pytest.mark.parametrize("value", ["0", "many", "-1", "1000"])
def test_a_bad_thread_count_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ROLLWISE_LIGHTGBM_THREADS", value)
    with pytest.raises(ArtifactError) as err:
        threads_from_env("ROLLWISE_LIGHTGBM_THREADS")
    assert str(err.value) == (
        f"ROLLWISE_LIGHTGBM_THREADS={value!r} is not a thread count; use an integer from 1 to 256"
    )

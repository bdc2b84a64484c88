"""The explanation methods' arithmetic, and the binary tensor codec, on generated inputs.

Shapley values are pinned by their axioms, whatever the function: efficiency (attributions add up
to f(x) - f(baseline)), a feature the function ignores gets 0, and a function additive in the
features gets each term exactly. The sampled estimate must keep efficiency exactly too. The
codec must give back every array it writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rollwise_serving import binary
from rollwise_serving.explain import _exact, _sampled

Array = np.ndarray[Any, Any]


def function(weights: Array, pair: tuple[int, int]) -> Any:
    """f(x) = w·x + x_i·x_j: additive plus one interaction."""
    i, j = pair

    def value(z: Array, owners: Array) -> Array:
        return np.asarray(z @ weights + z[:, i] * z[:, j])

    return value


shapes = st.tuples(st.integers(1, 4), st.integers(2, 7))
finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=shapes)
def test_exact_values_keep_the_axioms(data: st.DataObject, shape: tuple[int, int]) -> None:
    rows, width = shape
    x = data.draw(hnp.arrays(np.float64, (rows, width), elements=finite))
    b = data.draw(hnp.arrays(np.float64, (width,), elements=finite))
    w = data.draw(hnp.arrays(np.float64, (width,), elements=finite))
    i, j = data.draw(st.permutations(range(width)))[:2]
    found = _exact(x, b, function(w, (i, j)), "prediction")
    f = function(w, (i, j))
    np.testing.assert_allclose(found.values, f(x, np.zeros(rows)), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(
        found.base_values, f(np.tile(b, (rows, 1)), np.zeros(rows)), rtol=1e-9, atol=1e-6
    )
    np.testing.assert_allclose(
        found.attributions.sum(axis=1), found.values - found.base_values, rtol=1e-9, atol=1e-6
    )
    additive = [k for k in range(width) if k not in (i, j)]
    np.testing.assert_allclose(
        found.attributions[:, additive], (w * (x - b))[:, additive], rtol=1e-9, atol=1e-6
    )
    # of the interaction x_i x_j, feature i gets the mean of its two marginal changes:
    # ((x_i - b_i) b_j + (x_i - b_i) x_j) / 2
    share = (x[:, i] - b[i]) * (x[:, j] + b[j]) / 2
    want = w[i] * (x[:, i] - b[i]) + share
    np.testing.assert_allclose(found.attributions[:, i], want, rtol=1e-9, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=shapes, permutations=st.integers(2, 12))
def test_sampled_values_add_up_exactly_and_get_additive_terms_right(
    data: st.DataObject, shape: tuple[int, int], permutations: int
) -> None:
    rows, width = shape
    x = data.draw(hnp.arrays(np.float64, (rows, width), elements=finite))
    b = data.draw(hnp.arrays(np.float64, (width,), elements=finite))
    w = data.draw(hnp.arrays(np.float64, (width,), elements=finite))
    i, j = data.draw(st.permutations(range(width)))[:2]
    f = function(w, (i, j))
    found = _sampled(x, b, f, "prediction", permutations=permutations, rng=np.random.default_rng(0))
    np.testing.assert_allclose(
        found.attributions.sum(axis=1), found.values - found.base_values, rtol=1e-9, atol=1e-5
    )
    additive = [k for k in range(width) if k not in (i, j)]
    np.testing.assert_allclose(
        found.attributions[:, additive], (w * (x - b))[:, additive], rtol=1e-9, atol=1e-5
    )
    assert found.stderr is not None and found.stderr.shape == (rows, width)


DTYPES = [
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
]


@pytest.mark.parametrize("datatype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_the_binary_codec_gives_back_what_it_wrote(datatype: str, data: st.DataObject) -> None:
    dtype = binary.DATATYPES[datatype]
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    elements = st.floats(-1e4, 1e4, width=16 if datatype == "FP16" else 32) if dtype.kind == "f" else None
    array = data.draw(hnp.arrays(dtype, shape, elements=elements))
    raw = binary.tensor_to_bytes(array)
    back = binary.tensor_from_bytes("x", datatype, list(array.shape), memoryview(raw))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text(max_size=20), min_size=1, max_size=12))
def test_binary_bytes_are_length_prefixed_utf8(words: list[str]) -> None:
    array = np.array(words, dtype=object)
    raw = binary.tensor_to_bytes(array)
    assert len(raw) == sum(4 + len(w.encode()) for w in words)
    back = binary.tensor_from_bytes("x", "BYTES", [len(words)], memoryview(raw))
    assert back.tolist() == words

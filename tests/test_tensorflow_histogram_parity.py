"""tbweights histograms equal what `tf.summary.histogram` writes for the same input.

Both are written to event files and read back with TensorBoard's reader, so
the comparison covers the stored values, not only the in-memory arrays.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is the reference for histogram parity (pip install 'tbweights[tensorflow]')"
)

from conftest import RunReader  # noqa: E402
from tbweights import tags  # noqa: E402
from tbweights.writer import WeightWriter  # noqa: E402

rng = np.random.default_rng(0)
INPUTS: dict[str, np.ndarray] = {
    "random": rng.normal(size=(64, 33)).astype("float32"),
    "random_float64": rng.uniform(-3, 5, size=1000),
    "constant": np.full((4, 5), 0.25, "float32"),
    "single": np.array([3.5], "float32"),
    "integers": rng.integers(-50, 50, size=200).astype("int32"),
    "int64_wide": rng.integers(-(10**9), 10**9, size=300).astype("int64"),
    "bucket_edges": np.linspace(-1, 1, 31).astype("float32"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("parity")
    tf_dir, ours_dir = folder / "tf", folder / "ours"
    writer = tf.summary.create_file_writer(str(tf_dir))
    with writer.as_default():
        for name, values in INPUTS.items():
            tf.summary.histogram(name, values, step=0)
    writer.flush()
    writer.close()
    allocator = tags.TagAllocator()
    our_tags = {name: allocator.tags(name)[0] for name in INPUTS}
    with WeightWriter(ours_dir) as ours:
        ours.log(INPUTS, step=0)
    return {"tf": RunReader(tf_dir), "ours": RunReader(ours_dir), "tags": our_tags}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_histogram_matches_tf_summary(runs: dict[str, Any], name: str) -> None:
    reference = runs["tf"].value(name)
    ours = runs["ours"].value(runs["tags"][name])
    assert runs["ours"].plugin(runs["tags"][name]) == runs["tf"].plugin(name) == "histograms"
    assert ours.dtype == reference.dtype == np.float64
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours[:, :2], reference[:, :2], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(ours[:, 2], reference[:, 2])

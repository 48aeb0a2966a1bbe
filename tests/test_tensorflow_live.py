"""Live TensorFlow objects: tf.Module, tf.Variable lists and tf_keras models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install 'tbweights[tensorflow]')")

from tbweights import log_weights, tags  # noqa: E402
from tbweights.frameworks import WalkOptions, named_tensors  # noqa: E402
from tbweights.tensors import Role  # noqa: E402


class Block(tf.Module):
    def __init__(self) -> None:
        super().__init__(name="block")
        self.kernel = tf.Variable(tf.ones((2, 3)))
        self.bias = tf.Variable(tf.zeros(3))
        self.inner = tf.Module()
        self.inner.kernel = tf.Variable(tf.fill((3, 1), 2.0))
        self.count = tf.Variable(0, trainable=False)


def test_module_paths_when_names_repeat() -> None:
    tensors = {t.name: t for t in named_tensors(Block(), WalkOptions(include_buffers=True))}
    assert set(tensors) == {"kernel", "bias", "inner/kernel", "count"}
    assert tensors["bias"].role is Role.BIAS
    assert tensors["count"].role is Role.BUFFER
    np.testing.assert_array_equal(tensors["inner/kernel"].load(), np.full((3, 1), 2.0, "float32"))
    assert "count" not in {t.name for t in named_tensors(Block(), WalkOptions())}


def test_named_variables_keep_their_names() -> None:
    variables = [tf.Variable(tf.ones(2), name="enc/kernel"), tf.Variable(tf.zeros(2), name="enc/bias")]
    assert [t.name for t in named_tensors(variables)] == ["enc/kernel", "enc/bias"]


def test_tf_keras_model_in_layer_order(tmp_path: Path, read_run: Any) -> None:
    tf_keras = pytest.importorskip("tf_keras", reason="tf_keras is not installed")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3), tf_keras.layers.Dense(1)])
    names = [t.name for t in named_tensors(model)]
    assert names == [v.name.removesuffix(":0") for v in model.weights]
    log_weights(model, tmp_path / "run")
    tag, _ = tags.TagAllocator().tags(names[0])
    assert read_run(tmp_path / "run").value(tag)[:, 2].sum() == 12

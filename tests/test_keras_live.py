"""Live Keras 3 models: names, roles, the callback, and the torch backend without TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras", reason="Keras 3 is not installed (pip install 'tbweights[keras]')")

from tbweights import TbweightsError, WeightWriter, log_weights, tags  # noqa: E402
from tbweights.frameworks import WalkOptions, named_tensors  # noqa: E402
from tbweights.keras import WeightsCallback  # noqa: E402
from tbweights.tensors import Role  # noqa: E402


@pytest.fixture(scope="module")
def model() -> Any:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)], name="inner")
    x = keras.layers.BatchNormalization()(keras.layers.Dense(5)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(inner(x)))


def test_names_are_variable_paths(model: Any) -> None:
    tensors = list(named_tensors(model, WalkOptions(include_buffers=True)))
    assert [t.name for t in tensors] == [v.path for v in model.weights]
    assert len({t.name for t in tensors}) == len(tensors)
    for tensor, variable in zip(tensors, model.weights, strict=True):
        np.testing.assert_array_equal(tensor.load(), keras.ops.convert_to_numpy(variable))


def test_kernel_and_bias_roles(model: Any) -> None:
    roles = {t.name.rsplit("/", 1)[-1]: t.role for t in named_tensors(model, WalkOptions(include_buffers=True))}
    assert roles["kernel"] is Role.WEIGHT
    assert roles["bias"] is Role.BIAS
    assert roles["moving_mean"] is Role.BUFFER


def test_buffers_only_on_request(model: Any) -> None:
    names = [t.name for t in named_tensors(model, WalkOptions())]
    assert not any(name.endswith(("moving_mean", "moving_variance")) for name in names)
    assert any(name.endswith("gamma") for name in names)


def test_model_left_as_found(model: Any, tmp_path: Path) -> None:
    before = [(v.path, v.trainable, v.dtype, keras.ops.convert_to_numpy(v).copy()) for v in model.weights]
    trainable = model.trainable
    log_weights(model, tmp_path / "run")
    after = [(v.path, v.trainable, v.dtype, keras.ops.convert_to_numpy(v)) for v in model.weights]
    assert model.trainable == trainable
    for (path, flag, dtype, value), (path2, flag2, dtype2, value2) in zip(before, after, strict=True):
        assert (path, flag, dtype) == (path2, flag2, dtype2)
        np.testing.assert_array_equal(value, value2)


def test_unbuilt_model_is_an_error() -> None:
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(TbweightsError, match="not built"):
        list(named_tensors(unbuilt))


def test_callback_logs_initial_and_epochs(tmp_path: Path, read_run: Any) -> None:
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")], name="net")
    initial = keras.ops.convert_to_numpy(net.weights[0]).copy()
    net.compile(optimizer="sgd", loss="mse")
    logdir = tmp_path / "run"
    data = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    net.fit(*data, epochs=4, batch_size=4, verbose=0, callbacks=[WeightsCallback(logdir, every_n_epochs=2)])
    run = read_run(logdir)
    tag, _ = tags.TagAllocator().tags("net/fc/kernel")
    assert run.steps(tag) == [0, 2, 4]
    histogram = run.value(tag, 0)
    assert histogram[0, 0] == pytest.approx(float(initial.min()))
    assert histogram[-1, 1] == pytest.approx(float(initial.max()))


def test_callback_every_n_batches_with_open_writer(tmp_path: Path, read_run: Any) -> None:
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")], name="net2")
    net.compile(optimizer="sgd", loss="mse")
    data = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    with WeightWriter(tmp_path / "run", buckets=10) as writer:
        callback = WeightsCallback(writer, every_n_batches=3)
        net.fit(*data, epochs=2, batch_size=2, verbose=0, callbacks=[callback])
        # The callback leaves a writer it did not open usable.
        writer.log(net, step=100)
    run = read_run(tmp_path / "run")
    tag, _ = tags.TagAllocator().tags("net2/fc/kernel")
    assert run.steps(tag) == [0, 3, 6, 100]
    assert run.value(tag, 3).shape == (10, 3)


def test_callback_rejects_bad_intervals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_n_batches must be a positive integer"):
        WeightsCallback(tmp_path, every_n_batches=0)
    with WeightWriter(tmp_path / "run") as writer:
        with pytest.raises(ValueError, match="cannot change an already open WeightWriter"):
            WeightsCallback(writer, buckets=5)


TORCH_BACKEND_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import tbweights
    from tbweights.frameworks import WalkOptions, named_tensors

    assert keras.backend.backend() == "torch", keras.backend.backend()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1, dtype="bfloat16")])
    tensors = list(named_tensors(model, WalkOptions()))
    assert [t.name for t in tensors] == [v.path for v in model.weights], [t.name for t in tensors]
    for tensor, variable in zip(tensors, model.weights):
        expected = keras.ops.convert_to_numpy(variable)
        loaded = tensor.load()
        assert loaded.dtype == expected.dtype, (loaded.dtype, expected.dtype)
        np.testing.assert_array_equal(loaded, expected)
    assert tensors[-2].dtype == "bfloat16"
    report = tbweights.log_weights(model, sys.argv[1])
    assert len(report.results) == 4 and not report.skipped, report
    assert "tensorflow" not in sys.modules, "tensorflow was imported"
    print("torch backend ok")
    """
)


def test_torch_backend_needs_no_tensorflow(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is needed for the Keras torch backend")
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": os.pathsep.join(sys.path)}
    # Any TensorFlow import in the child fails loudly.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text("raise ImportError('tensorflow is blocked in this test')\n")
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-c", TORCH_BACKEND_SCRIPT, str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch backend ok" in done.stdout

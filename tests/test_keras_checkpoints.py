"""Keras checkpoint files written by real Keras, read back by tbweights.

Every file here is written by the installed Keras (and tf_keras for the
Keras 2 format, when installed); names and values are checked against the
model that wrote it, and conversions are read back with TensorBoard's reader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras", reason="Keras 3 is needed to write Keras files (pip install 'tbweights[keras]')")
h5py = pytest.importorskip("h5py", reason="h5py is needed to read Keras weight files (pip install 'tbweights[keras]')")

from tbweights import CheckpointError, tags  # noqa: E402
from tbweights.checkpoints import LoadOptions, detect, read_checkpoint  # noqa: E402
from tbweights.checkpoints.keras_names import LAYER_VARIABLES, to_snake_case  # noqa: E402
from tbweights.cli import main as cli_main  # noqa: E402
from tbweights.convert import convert  # noqa: E402
from tbweights.tensors import Role  # noqa: E402


def build_nested_model() -> Any:
    """A functional model with a nested Sequential, batch norm, a bias-free layer and bfloat16."""
    inputs = keras.Input((4,), name="features")
    inner = keras.Sequential([keras.layers.Dense(3, name="d_in"), keras.layers.Dense(2)], name="inner")
    # Explicit names: Keras numbers default names per process, which depends on test order.
    x = keras.layers.Dense(5, name="dense_1")(inputs)
    x = keras.layers.BatchNormalization(name="batch_normalization")(x)
    x = inner(x)
    x = keras.layers.Dense(3, use_bias=False, name="no_bias")(x)
    x = keras.layers.Dense(2, dtype="bfloat16", name="half")(x)
    outputs = keras.layers.Dense(1, name="head")(x)
    return keras.Model(inputs, outputs, name="outer")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One model trained for one step (so it has optimizer state), saved in every Keras format."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("keras_files")
    model = build_nested_model()
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 4), "float32"), np.ones((4, 1), "float32"), epochs=1, batch_size=4, verbose=0)
    model.save(folder / "m.keras")
    model.save_weights(folder / "m.weights.h5")
    expected = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    return {"model": model, "folder": folder, "expected": expected}


def by_name(path: Path, **options: Any) -> dict[str, Any]:
    tensors = list(read_checkpoint(path, LoadOptions(**options)))
    names = [t.name for t in tensors]
    assert len(names) == len(set(names)), f"duplicate names: {names}"
    return {t.name: t for t in tensors}


def assert_same_weights(found: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    assert sorted(found) == sorted(expected)
    for name, array in expected.items():
        loaded = found[name].load()
        assert loaded.dtype == array.dtype, name
        assert loaded.shape == array.shape, name
        np.testing.assert_array_equal(loaded, array, err_msg=name)


@pytest.mark.parametrize("file_name", ["m.keras", "m.weights.h5"])
def test_keras3_files_match_model(trained: dict[str, Any], file_name: str) -> None:
    found = by_name(trained["folder"] / file_name)
    assert_same_weights(found, trained["expected"])
    assert found["dense_1/kernel"].role is Role.WEIGHT
    assert found["dense_1/bias"].role is Role.BIAS
    assert found["batch_normalization/moving_mean"].role is Role.BUFFER
    assert found["half/kernel"].dtype == "bfloat16"
    assert all(not t.note for t in found.values())


def test_keras3_formats_detected(trained: dict[str, Any]) -> None:
    assert detect(trained["folder"] / "m.keras").name.startswith("Keras archive")
    assert detect(trained["folder"] / "m.weights.h5").name.startswith("Keras 3 weights")


def test_keras3_optimizer_only_on_request(trained: dict[str, Any]) -> None:
    plain = by_name(trained["folder"] / "m.keras")
    with_optimizer = by_name(trained["folder"] / "m.keras", include_optimizer=True)
    extra = {name: t for name, t in with_optimizer.items() if name not in plain}
    optimizer_vars = trained["model"].optimizer.variables
    assert len(extra) == len(optimizer_vars)
    assert all(t.role is Role.OPTIMIZER for t in extra.values())
    iterations = extra["optimizer/vars/0"].load()
    assert int(iterations) == 1


def test_archive_read_without_extracting(trained: dict[str, Any], tmp_path: Path) -> None:
    """The weights member is read in place: nothing lands next to the archive."""
    archive = tmp_path / "copy.keras"
    archive.write_bytes((trained["folder"] / "m.keras").read_bytes())
    tensors = list(read_checkpoint(archive))
    assert tensors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.keras"]
    # Loading after the reader finished reopens the archive.
    assert tensors[0].load().size > 0


def test_subclassed_model_keeps_positions(tmp_path: Path) -> None:
    class Tower(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="tower")
            self.encoder = keras.layers.Dense(3, name="enc")
            self.block = keras.Sequential([keras.layers.Dense(2)], name="blk")

        def call(self, x: Any) -> Any:
            return self.block(self.encoder(x))

    model = Tower()
    model(np.ones((1, 4), "float32"))
    model.save_weights(tmp_path / "tower.weights.h5")
    found = by_name(tmp_path / "tower.weights.h5")
    expected = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    # The attribute name `encoder` does not say the layer is a Dense: positions are kept.
    assert "tower/enc/vars/0" in found
    assert "position" in found["tower/enc/vars/0"].note
    np.testing.assert_array_equal(found["tower/enc/vars/0"].load(), expected["tower/enc/kernel"])
    # The nested Sequential's Dense is saved under `layers/dense`: its class is known.
    inner_kernel = f"tower/blk/{model.block.layers[0].name}/kernel"
    np.testing.assert_array_equal(found[inner_kernel].load(), expected[inner_kernel])


def test_layer_table_matches_keras() -> None:
    """The positional-name table agrees with the order the installed Keras saves variables in."""
    layers = keras.layers
    cases = [
        (layers.Dense(2), (None, 3)),
        (layers.EinsumDense("ab,bc->ac", 4, bias_axes="c"), (None, 3)),
        (layers.Conv1D(2, 3), (None, 5, 1)),
        (layers.Conv2D(2, 3), (None, 5, 5, 1)),
        (layers.Conv2DTranspose(2, 3), (None, 5, 5, 1)),
        (layers.DepthwiseConv2D(3), (None, 5, 5, 2)),
        (layers.SeparableConv2D(2, 3), (None, 5, 5, 2)),
        (layers.Embedding(5, 2), (None, 3)),
        (layers.BatchNormalization(), (None, 3)),
        (layers.LayerNormalization(), (None, 3)),
        (layers.GroupNormalization(1), (None, 4)),
        (layers.PReLU(), (None, 3)),
    ]
    for layer, shape in cases:
        layer.build(shape)
        key = to_snake_case(type(layer).__name__)
        saved_order = [v.path.rsplit("/", 1)[-1] for v in layer._trainable_variables + layer._non_trainable_variables]
        assert [name for name, _ in LAYER_VARIABLES[key]] == saved_order, key
    lstm = layers.LSTM(2)
    lstm.build((None, 4, 3))
    assert [name for name, _ in LAYER_VARIABLES["lstm_cell"]] == [v.path.rsplit("/", 1)[-1] for v in lstm.cell.weights]


def write_keras2_layout(path: Path, model: Any) -> None:
    """Write a model in the Keras 2 `save_weights` HDF5 layout with h5py.

    Used when tf_keras is not installed. It follows what Keras 2's
    `save_weights_to_hdf5_group` writes: `layer_names`, then per layer a
    `weight_names` attribute of byte strings and one dataset per weight.
    """
    with h5py.File(path, "w") as file:
        file.attrs["backend"] = b"tensorflow"
        file.attrs["keras_version"] = b"2.15.0"
        file.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = file.create_group(layer.name)
            weight_names = [f"{v.path.removeprefix(layer.name + '/')}:0" for v in layer.weights]
            weight_names = [n if "/" in n else f"{layer.name}/{n}" for n in weight_names]
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            for name, variable in zip(weight_names, layer.weights, strict=True):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(variable).astype("float32"))


def test_keras2_layout_written_by_h5py(trained: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "legacy_weights.h5"
    write_keras2_layout(path, trained["model"])
    assert detect(path).name.startswith("Keras 2")
    found = by_name(path)
    expected = {name: value.astype("float32") for name, value in trained["expected"].items()}
    assert sorted(found) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name].load(), value, err_msg=name)


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tf_keras = pytest.importorskip("tf_keras", reason="tf_keras writes real Keras 2 .h5 files (pip install tf_keras)")
    folder = tmp_path_factory.mktemp("keras2")
    inputs = tf_keras.Input((4,))
    inner = tf_keras.Sequential([tf_keras.layers.Dense(3, name="d_in"), tf_keras.layers.Dense(2)], name="inner")
    x = tf_keras.layers.BatchNormalization()(tf_keras.layers.Dense(5)(inputs))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(inner(x)), name="outer")
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 4)), np.ones((4, 1)), verbose=0)
    model.save(folder / "model.h5", save_format="h5")
    model.save_weights(folder / "weights.h5")
    # Keras 2 names are `dense_1/kernel:0`, nested ones without the outer model's name.
    expected: dict[str, np.ndarray] = {}
    for layer in model.layers:
        for variable in layer.weights:
            name = variable.name.removesuffix(":0")
            expected[name if name.startswith(layer.name + "/") else f"{layer.name}/{name}"] = variable.numpy()
    return {"folder": folder, "expected": expected, "optimizer_count": len(model.optimizer.variables)}


@pytest.mark.parametrize("file_name", ["model.h5", "weights.h5"])
def test_keras2_files_match_model(keras2_files: dict[str, Any], file_name: str) -> None:
    found = by_name(keras2_files["folder"] / file_name)
    assert_same_weights(found, keras2_files["expected"])
    assert "inner/d_in/kernel" in found


def test_keras2_optimizer_only_on_request(keras2_files: dict[str, Any]) -> None:
    path = keras2_files["folder"] / "model.h5"
    plain = by_name(path)
    with_optimizer = by_name(path, include_optimizer=True)
    extra = [t for name, t in with_optimizer.items() if name not in plain]
    assert len(extra) == keras2_files["optimizer_count"]
    assert all(t.role is Role.OPTIMIZER and t.name.startswith("optimizer/") for t in extra)


def test_convert_keras_archive_reads_back(trained: dict[str, Any], tmp_path: Path, read_run: Any) -> None:
    logdir = tmp_path / "run"
    report = convert([trained["folder"] / "m.keras"], logdir, start_step=0)
    assert not report.failed
    run = read_run(logdir)
    tag, _ = tags.TagAllocator().tags("inner/d_in/kernel")
    assert run.plugin(tag) == "histograms"
    histogram = run.value(tag, 0)
    assert histogram.shape == (30, 3)
    assert histogram[:, 2].sum() == trained["expected"]["inner/d_in/kernel"].size


def test_cli_converts_every_keras_format(trained: dict[str, Any], tmp_path: Path, read_run: Any) -> None:
    logdir = tmp_path / "cli_run"
    files = [str(trained["folder"] / "m.keras"), str(trained["folder"] / "m.weights.h5")]
    assert cli_main(["convert", *files, "--logdir", str(logdir), "--step", "0", "--quiet"]) == 0
    run = read_run(logdir)
    allocator = tags.TagAllocator()
    kernel_tag, _ = allocator.tags("dense_1/kernel")
    assert run.steps(kernel_tag) == [0, 1]
    np.testing.assert_array_equal(run.value(kernel_tag, 0), run.value(kernel_tag, 1))


def test_corrupt_archive_names_path(trained: dict[str, Any], tmp_path: Path) -> None:
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="config.json is not valid JSON") as caught:
        list(read_checkpoint(broken))
    assert caught.value.path == str(broken)


def test_truncated_weights_file_names_path(trained: dict[str, Any], tmp_path: Path) -> None:
    truncated = tmp_path / "cut.weights.h5"
    truncated.write_bytes((trained["folder"] / "m.weights.h5").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as caught:
        list(read_checkpoint(truncated))
    assert caught.value.path == str(truncated)


def test_keras_files_read_without_tensorflow(trained: dict[str, Any]) -> None:
    """With TensorFlow and Keras blocked from import, the Keras files still read."""
    script = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "sys.modules['keras'] = None\n"
        "from tbweights.checkpoints import read_checkpoint\n"
        "for path in sys.argv[1:]:\n"
        "    tensors = list(read_checkpoint(path))\n"
        "    assert tensors and all(t.load().size == t.size for t in tensors), path\n"
        "print('read', len(sys.argv) - 1)\n"
    )
    folder = trained["folder"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder / "m.keras"), str(folder / "m.weights.h5")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "read 2" in done.stdout

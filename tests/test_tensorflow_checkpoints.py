"""TensorFlow checkpoints and SavedModels written by real TensorFlow, read without it.

Values are checked against `tf.train.load_checkpoint`, TensorFlow's own reader,
key by key, and names against the model's variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is needed to write checkpoints (pip install 'tbweights[tensorflow]')"
)
keras = pytest.importorskip("keras", reason="Keras 3 builds the test models (pip install 'tbweights[tensorflow]')")

from tbweights import CheckpointError, tags  # noqa: E402
from tbweights.checkpoints import LoadOptions, detect, read_checkpoint  # noqa: E402
from tbweights.checkpoints.tf_bundle import TensorBundle  # noqa: E402
from tbweights.checkpoints.tf_object_graph import strip_key  # noqa: E402
from tbweights.cli import main as cli_main  # noqa: E402
from tbweights.tensors import Role  # noqa: E402


class Tower(tf.Module):
    """A plain tf.Module with unnamed variables (all called `Variable`) and a sub-module."""

    def __init__(self) -> None:
        super().__init__(name="tower")
        self.w = tf.Variable(tf.random.normal((3, 4), seed=1))
        self.b = tf.Variable(tf.zeros(4))
        self.head = tf.Module(name="head")
        self.head.w = tf.Variable(tf.range(8, dtype=tf.int32))
        self.head.half = tf.Variable(tf.constant([1.5, -2.0], dtype=tf.bfloat16))
        self.steps = tf.Variable(7, dtype=tf.int64, trainable=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("tf_files")
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.layers.Dense(3, name="d_in"), keras.layers.Dense(2)], name="inner")
    x = keras.layers.BatchNormalization()(keras.layers.Dense(5)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(inner(x)), name="outer")
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 4), "float32"), np.ones((4, 1), "float32"), verbose=0)
    prefix = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(folder / "keras" / "ckpt"))
    tf.saved_model.save(model, str(folder / "saved_model"))
    tower = Tower()
    tower_prefix = tf.train.Checkpoint(tower=tower).save(str(folder / "tower" / "ckpt"))
    return {
        "folder": folder,
        "prefix": Path(prefix),
        "tower_prefix": Path(tower_prefix),
        "model": model,
        "tower": tower,
        "expected": {v.path: v.numpy() for v in model.weights},
        # Keras numbers default layer names per process, so read them from the model.
        "inner_kernel": inner.layers[1].kernel.path,
        "moving_mean": model.layers[2].moving_mean.path,
    }


def by_name(path: Path | str, **options: Any) -> dict[str, Any]:
    tensors = list(read_checkpoint(path, LoadOptions(**options)))
    names = [t.name for t in tensors]
    assert len(names) == len(set(names)), f"duplicate names: {names}"
    return {t.name: t for t in tensors}


def test_bundle_matches_tensorflow_reader(files: dict[str, Any]) -> None:
    """Every numeric entry equals what tf.train.load_checkpoint returns."""
    for prefix in (files["prefix"], files["tower_prefix"], files["folder"] / "saved_model" / "variables" / "variables"):
        reader = tf.train.load_checkpoint(str(prefix))
        bundle = TensorBundle(prefix)
        assert set(bundle.entries) == set(reader.get_variable_to_shape_map())
        for key, entry in bundle.entries.items():
            if entry.dtype_name == "DT_STRING":
                continue
            expected = reader.get_tensor(key)
            loaded = bundle.loader(entry)()
            assert loaded.dtype == expected.dtype, key
            np.testing.assert_array_equal(loaded, expected, err_msg=key)


def test_keras_checkpoint_names_are_paths(files: dict[str, Any]) -> None:
    found = by_name(files["prefix"])
    assert sorted(found) == sorted(files["expected"])
    for name, value in files["expected"].items():
        np.testing.assert_array_equal(found[name].load(), value, err_msg=name)
    assert found["inner/d_in/kernel"].role is Role.WEIGHT
    assert found["inner/d_in/bias"].role is Role.BIAS
    assert found[files["moving_mean"]].role is Role.BUFFER


def test_optimizer_state_only_on_request(files: dict[str, Any]) -> None:
    plain = by_name(files["prefix"])
    full = by_name(files["prefix"], include_optimizer=True)
    extra = {name: t for name, t in full.items() if name not in plain}
    # The optimizer's own variables plus the checkpoint's save counter.
    assert len(extra) == len(files["model"].optimizer.variables) + 1
    assert extra["save_counter"].load() == 1
    assert all(t.role is Role.OPTIMIZER for name, t in extra.items() if name != "save_counter")


@pytest.mark.parametrize("form", ["prefix", "index", "data", "directory"])
def test_every_path_form_reads(files: dict[str, Any], form: str) -> None:
    prefix = files["prefix"]
    path = {
        "prefix": prefix,
        "index": prefix.with_name(prefix.name + ".index"),
        "data": prefix.with_name(prefix.name + ".data-00000-of-00001"),
        "directory": prefix.parent,
    }[form]
    assert detect(path).name == "TensorFlow checkpoint"
    assert sorted(by_name(path)) == sorted(files["expected"])


def test_saved_model_variables(files: dict[str, Any]) -> None:
    found = by_name(files["folder"] / "saved_model")
    assert sorted(found) == sorted(files["expected"])
    for name, value in files["expected"].items():
        np.testing.assert_array_equal(found[name].load(), value, err_msg=name)


def test_module_with_unnamed_variables(files: dict[str, Any]) -> None:
    """Unnamed variables share the name `Variable`, so object paths name them."""
    found = by_name(files["tower_prefix"])
    tower = files["tower"]
    assert set(found) == {"tower/w", "tower/b", "tower/head/w", "tower/head/half", "tower/steps"}
    np.testing.assert_array_equal(found["tower/w"].load(), tower.w.numpy())
    assert found["tower/head/w"].dtype == "int32"
    assert found["tower/head/half"].dtype == "bfloat16"
    np.testing.assert_array_equal(found["tower/head/half"].load().astype("float32"), [1.5, -2.0])


def test_cli_converts_checkpoint_prefix(files: dict[str, Any], tmp_path: Path, read_run: Any) -> None:
    logdir = tmp_path / "run"
    assert cli_main(["convert", str(files["prefix"]), "--logdir", str(logdir), "--quiet"]) == 0
    run = read_run(logdir)
    tag, _ = tags.TagAllocator().tags(files["inner_kernel"])
    # `ckpt-1` names step 1.
    assert run.steps(tag) == [1]
    histogram = run.value(tag, 1)
    kernel = files["expected"][files["inner_kernel"]]
    assert histogram[:, 2].sum() == kernel.size
    assert histogram[0, 0] == pytest.approx(float(kernel.min()))


def test_cli_folder_takes_latest_step(files: dict[str, Any], tmp_path: Path, read_run: Any) -> None:
    logdir = tmp_path / "run"
    folder = files["prefix"].parent
    assert cli_main(["convert", str(folder), "--logdir", str(logdir), "--quiet"]) == 0
    # The folder's `checkpoint` file names ckpt-1, so the step is 1, not a position.
    assert read_run(logdir).steps("tbweights/overview") == [1]


def test_cli_glob_lists_each_checkpoint_once(files: dict[str, Any], tmp_path: Path, read_run: Any) -> None:
    logdir = tmp_path / "run"
    paths = sorted(str(p) for p in files["prefix"].parent.glob("ckpt-*"))
    assert len(paths) == 2  # the .index and the .data file of ckpt-1
    assert cli_main(["convert", *paths, "--logdir", str(logdir), "--quiet"]) == 0
    assert read_run(logdir).steps("tbweights/overview") == [1]


def test_missing_data_file_is_reported(files: dict[str, Any], tmp_path: Path) -> None:
    index = files["prefix"].with_name(files["prefix"].name + ".index")
    copy = tmp_path / "lonely.index"
    copy.write_bytes(index.read_bytes())
    with pytest.raises(CheckpointError, match=r"data file\(s\) missing: lonely.data-00000-of-00001"):
        list(read_checkpoint(copy))


def test_corrupt_index_is_reported(files: dict[str, Any], tmp_path: Path) -> None:
    index = files["prefix"].with_name(files["prefix"].name + ".index")
    data = bytearray(index.read_bytes())
    data[10] ^= 0xFF
    broken = tmp_path / "broken.index"
    broken.write_bytes(bytes(data))
    (tmp_path / "broken.data-00000-of-00001").write_bytes(
        files["prefix"].with_name(files["prefix"].name + ".data-00000-of-00001").read_bytes()
    )
    with pytest.raises(CheckpointError, match="corrupt or truncated") as caught:
        list(read_checkpoint(broken))
    assert caught.value.path == str(broken)


def test_truncated_data_file_is_reported(files: dict[str, Any], tmp_path: Path) -> None:
    prefix = files["prefix"]
    (tmp_path / "cut.index").write_bytes(prefix.with_name(prefix.name + ".index").read_bytes())
    data = prefix.with_name(prefix.name + ".data-00000-of-00001").read_bytes()
    (tmp_path / "cut.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    # TensorFlow writes the object graph last, so a cut file loses it first.
    with pytest.raises(CheckpointError, match="the data file is truncated") as caught:
        list(read_checkpoint(tmp_path / "cut"))
    assert caught.value.path == str(tmp_path / "cut.data-00000-of-00001")


def test_checkpoints_read_without_tensorflow(files: dict[str, Any]) -> None:
    script = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "from tbweights.checkpoints import read_checkpoint\n"
        "for path in sys.argv[1:]:\n"
        "    tensors = list(read_checkpoint(path))\n"
        "    assert tensors and all(t.load().size == t.size for t in tensors), path\n"
        "print('read', len(sys.argv) - 1)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    paths = [str(files["prefix"]), str(files["folder"] / "saved_model"), str(files["tower_prefix"])]
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "read 3" in done.stdout


def test_aliases_keep_checkpoint_keys(files: dict[str, Any]) -> None:
    keys = {strip_key(k) for k in TensorBundle(files["prefix"]).entries}
    for tensor in read_checkpoint(files["prefix"]):
        assert keys & set(tensor.aliases), tensor.name

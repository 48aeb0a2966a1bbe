"""JAX pytrees, Flax models, Flax msgpack files and Orbax folders, read back with TensorBoard's reader."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tbweights import check_init, log_weights
from tbweights.checkpoints import LoadOptions, detect, read_checkpoint
from tbweights.convert import convert
from tbweights.errors import CheckpointError
from tbweights.initcheck import Verdict

jax = pytest.importorskip("jax", reason="the jax extra is not installed")
jnp = pytest.importorskip("jax.numpy", reason="the jax extra is not installed")
flax = pytest.importorskip("flax", reason="the jax extra is not installed")
ml_dtypes = pytest.importorskip("ml_dtypes")

from flax import linen, nnx, serialization  # noqa: E402


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = linen.Conv(4, (3, 3))(x)
        x = linen.BatchNorm(use_running_average=True)(x)
        x = x.reshape((x.shape[0], -1))
        x = linen.Dense(80)(x)  # a 256x80 float32 kernel, above msgpack_index.MAX_DECODED_BYTES
        return linen.Dense(10, param_dtype=jnp.bfloat16)(x)


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(50, 32, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(32, 64, rngs=rngs), nnx.Linear(64, 2, rngs=rngs)])
        self.norm = nnx.BatchNorm(2, rngs=rngs)


@pytest.fixture(scope="module")
def variables() -> dict:
    return LinenNet().init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))


def leaf(tree: dict, name: str) -> np.ndarray:
    for part in name.split("/"):
        tree = tree[part]
    return np.asarray(tree)


def assert_logged(run, name: str, array: np.ndarray, step: int = 0) -> None:
    """The histogram counts every element and the text shows the shape and the first values."""
    histogram = run.value(name, step)
    assert histogram[:, 2].sum() == array.size
    text = run.text(f"{name}/stats", step)
    assert f"`{name}`" in text
    assert f"| shape | {tuple(array.shape)} |" in text
    first = ", ".join(f"{v:.6g}" for v in array.astype(np.float32).reshape(-1)[:3].tolist())
    assert f"| first 3 (row-major) | {first} |" in text


def test_import_does_not_load_jax() -> None:
    code = (
        "import sys, tbweights, tbweights.checkpoints.flax_msgpack, tbweights.checkpoints.orbax; "
        "print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_linen_variables_names_and_values(variables, logdir, read_run) -> None:
    report = log_weights(variables, logdir, first=3)
    names = [result.tensor.name for result in report.results]
    assert names == [
        "params/BatchNorm_0/bias",
        "params/BatchNorm_0/scale",
        "params/Conv_0/bias",
        "params/Conv_0/kernel",
        "params/Dense_0/bias",
        "params/Dense_0/kernel",
        "params/Dense_1/bias",
        "params/Dense_1/kernel",
    ]
    run = read_run(logdir)
    for name in names:
        assert_logged(run, name, leaf(variables, name))
    assert "batch_stats/BatchNorm_0/mean" not in run.tags


def test_linen_batch_stats_with_buffers(variables, logdir) -> None:
    report = log_weights(variables, logdir, include_buffers=True)
    names = {result.tensor.name for result in report.results}
    assert {"batch_stats/BatchNorm_0/mean", "batch_stats/BatchNorm_0/var"} <= names


def test_bfloat16_kernel_is_read(variables, logdir, read_run) -> None:
    report = log_weights(variables, logdir, first=3)
    kernel = next(r for r in report.results if r.tensor.name == "params/Dense_1/kernel")
    assert kernel.tensor.dtype == "bfloat16"
    expected = leaf(variables, "params/Dense_1/kernel")
    assert expected.dtype == ml_dtypes.bfloat16
    assert_logged(read_run(logdir), "params/Dense_1/kernel", expected)


def test_flax_kernels_pass_init_check(variables) -> None:
    report = check_init(variables["params"])
    for name in ("Conv_0/kernel", "Dense_0/kernel"):
        finding = report[name]
        assert finding.verdict is Verdict.CONSISTENT, finding
        assert finding.scheme is not None and "lecun_normal" in finding.scheme
    assert report["Dense_0/kernel"].fan_in == 4 * 8 * 8  # (in, out) layout: fan_in = shape[0]
    assert report["Dense_0/bias"].verdict is Verdict.CONSISTENT


def test_nnx_module_names_roles_and_layers(logdir, read_run) -> None:
    model = NnxNet(nnx.Rngs(0))
    report = log_weights(model, logdir, first=3, check_init=True)
    names = [result.tensor.name for result in report.results]
    assert "layers/0/kernel" in names
    assert "embed/embedding" in names
    assert "norm/mean" not in names  # a BatchStat, left out without include_buffers
    run = read_run(logdir)
    assert_logged(run, "layers/0/kernel", np.asarray(model.layers[0].kernel[...]))
    assert_logged(run, "embed/embedding", np.asarray(model.embed.embedding[...]))
    init = report.init_check
    assert init is not None
    assert init["layers/0/kernel"].layer == "flax.nnx.Linear"
    assert init["embed/embedding"].verdict is Verdict.CONSISTENT
    assert init["layers/1/kernel"].verdict is Verdict.CONSISTENT


def test_nnx_param_state_and_tuple_pytree(logdir) -> None:
    model = NnxNet(nnx.Rngs(0))
    report = log_weights(nnx.state(model, nnx.Param), logdir)
    assert "layers/1/bias" in {r.tensor.name for r in report.results}
    pytree = ({"w": jnp.ones((2, 3))}, [jnp.zeros(4)])
    names = [r.tensor.name for r in log_weights(pytree, logdir).results]
    assert names == ["0/w", "1/0"]


def test_dict_with_int_and_str_keys_is_logged(logdir) -> None:
    # JAX cannot flatten a dict whose keys do not sort (1 and "a"), so such a mapping
    # takes the generic path, for NumPy arrays as well as JAX arrays.
    for array in (np.ones(3, np.float32), jnp.ones(3)):
        report = log_weights({1: array, "a": {"w": array}}, logdir)
        assert sorted(r.tensor.name for r in report.results) == ["1", "a.w"]


SHARDED_SCRIPT = """
import sys, jax, numpy as np, tbweights
mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("x",))
values = np.arange(16, dtype=np.float32).reshape(4, 4)
sharded = jax.device_put(values, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x")))
assert len(sharded.addressable_shards) == 2
tbweights.log_weights({"w": sharded}, sys.argv[1], first=3)
"""


def test_sharded_array_is_gathered(logdir, read_run) -> None:
    # XLA makes two CPU devices only when the flag is set before JAX starts, hence a subprocess.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(logdir)], check=True, env=env)
    assert_logged(read_run(logdir), "w", np.arange(16, dtype=np.float32).reshape(4, 4))


def test_msgpack_file_matches_arrays(variables, tmp_path, logdir, read_run) -> None:
    path = tmp_path / "checkpoint_100"  # flax.training's legacy name, no suffix
    path.write_bytes(serialization.to_bytes(variables))
    assert detect(path).name == "Flax msgpack"
    tensors = {t.name: t for t in read_checkpoint(path)}
    assert tensors["params/Dense_1/kernel"].dtype == "bfloat16"
    assert tensors["batch_stats/BatchNorm_0/var"].role.value == "buffer"
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(tensor.load(), leaf(variables, name))
    assert not convert([path], logdir, first=3).failed
    kernel = leaf(variables, "params/Dense_0/kernel")
    assert_logged(read_run(logdir), "params/Dense_0/kernel", kernel, step=100)  # the step from the name


def test_msgpack_chunked_and_nested_lists(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)  # split arrays above 64 bytes
    tree = {"big": np.arange(100, dtype=np.float32).reshape(10, 10), "layers": [np.ones(3), np.float32(2.5)]}
    path = tmp_path / "state.msgpack"
    path.write_bytes(serialization.msgpack_serialize(tree))
    tensors = {t.name: t.load() for t in read_checkpoint(path)}
    np.testing.assert_array_equal(tensors["big"], tree["big"])
    np.testing.assert_array_equal(tensors["layers/0"], np.ones(3))
    assert tensors["layers/1"].shape == ()
    assert tensors["layers/1"] == 2.5


def test_run_folder_of_msgpack_files(variables, tmp_path, logdir, read_run) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for step in (30, 4):
        (run / f"checkpoint_{step}.msgpack").write_bytes(serialization.to_bytes(variables))
    report = convert([run], logdir)
    assert [step.step for _, step in report.steps] == [4, 30]
    assert read_run(logdir).steps("params/Dense_0/kernel") == [4, 30]


def test_train_state_optimizer_left_out(tmp_path) -> None:
    optax = pytest.importorskip("optax")
    from flax.training import train_state

    params = {"dense": {"kernel": jnp.ones((3, 2))}}
    state = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))
    path = tmp_path / "state.msgpack"
    path.write_bytes(serialization.to_bytes(state))
    assert [t.name for t in read_checkpoint(path)] == ["params/dense/kernel"]
    with_optimizer = [t.name for t in read_checkpoint(path, LoadOptions(include_optimizer=True))]
    assert "opt_state/0/mu/dense/kernel" in with_optimizer
    assert "opt_state/0/count" in with_optimizer


def test_corrupt_msgpack_is_a_checkpoint_error(variables, tmp_path) -> None:
    data = serialization.to_bytes(variables)
    path = tmp_path / "broken.msgpack"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"broken\.msgpack: not a valid Flax msgpack checkpoint"):
        list(read_checkpoint(path))
    for cut in range(1, len(data), len(data) // 50):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            list(read_checkpoint(path))


def test_msgpack_object_dtype_skips_one_tensor(tmp_path, logdir) -> None:
    msgpack = pytest.importorskip("msgpack")
    payload = msgpack.packb(((2,), "O", b"\0" * 16), use_bin_type=True)
    good = msgpack.packb(((2,), "float32", np.ones(2, np.float32).tobytes()), use_bin_type=True)
    path = tmp_path / "odd.msgpack"
    path.write_bytes(msgpack.packb({"bad": msgpack.ExtType(1, payload), "good": msgpack.ExtType(1, good)}))
    report = convert([path], logdir)
    _, step = report.steps[0]
    assert [s.name for s in step.skipped] == ["bad"]
    assert "dtype 'O' is not a numeric dtype" in step.skipped[0].reason
    assert [r.tensor.name for r in step.results] == ["good"]


def test_msgpack_int4_arrays(tmp_path) -> None:
    path = tmp_path / "int4.msgpack"
    tree = {"i4": jnp.array([1, -2, 3], jnp.int4), "u4": jnp.array([0, 15], jnp.uint4)}
    path.write_bytes(serialization.to_bytes(tree))
    tensors = {record.name: record for record in read_checkpoint(path)}
    assert tensors["i4"].dtype == "int4"
    assert np.asarray(tensors["i4"].load()).astype(np.int8).tolist() == [1, -2, 3]
    report = log_weights({name: record.load() for name, record in tensors.items()}, tmp_path / "logs")
    assert report.skipped == []
    stats = {r.tensor.name: r.stats for r in report.results}
    assert (stats["i4"].min, stats["i4"].max) == (-2, 3)
    assert (stats["u4"].min, stats["u4"].max) == (0, 15)


def test_orbax_standard_checkpoint(variables, tmp_path, logdir, read_run) -> None:
    ocp = pytest.importorskip("orbax.checkpoint")
    folder = tmp_path / "orbax"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(folder, variables)
    checkpointer.wait_until_finished()
    assert detect(folder).name == "Orbax checkpoint"
    tensors = {t.name: t for t in read_checkpoint(folder)}
    assert tensors["params/Dense_1/kernel"].dtype == "bfloat16"
    assert tensors["params/Conv_0/kernel"].shape == (3, 3, 1, 4)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(tensor.load(), leaf(variables, name))


def test_orbax_corrupt_data_files(variables, tmp_path) -> None:
    ocp = pytest.importorskip("orbax.checkpoint")
    folder = tmp_path / "orbax"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(folder, variables)
    checkpointer.wait_until_finished()
    for path in (folder / "d").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(CheckpointError, match=r"data files \(manifest.ocdbt, d/\) are missing or corrupt"):
        list(read_checkpoint(folder))


def test_orbax_manager_steps(variables, tmp_path, logdir, read_run) -> None:
    ocp = pytest.importorskip("orbax.checkpoint")
    root = tmp_path / "manager"
    manager = ocp.CheckpointManager(root)
    for step in (0, 100):
        manager.save(step, args=ocp.args.StandardSave(variables["params"]))
    manager.wait_until_finished()
    with pytest.raises(CheckpointError, match=r"2 checkpoint\(s\) of a training run \(0, 100\)"):
        list(read_checkpoint(root))
    assert not convert([root], logdir, first=3).failed
    run = read_run(logdir)
    assert run.steps("Dense_0/kernel") == [0, 100]
    assert_logged(run, "Dense_0/kernel", leaf(variables, "params/Dense_0/kernel"), step=100)


def test_orbax_opt_state_item_left_out(tmp_path) -> None:
    """A manager step saved as Composite(state=..., opt_state=...) keeps the optimizer item out by default."""
    ocp = pytest.importorskip("orbax.checkpoint")
    manager = ocp.CheckpointManager(tmp_path / "manager")
    params = {"params": {"w": jnp.ones((2, 2))}}
    opt_state = {"mu": {"w": jnp.zeros((2, 2))}, "count": jnp.int32(3)}
    args = ocp.args.Composite(state=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state))
    manager.save(7, args=args)
    manager.wait_until_finished()
    step = tmp_path / "manager" / "7"
    assert [record.name for record in read_checkpoint(step)] == ["state/params/w"]
    with_optimizer = [record.name for record in read_checkpoint(step, LoadOptions(include_optimizer=True))]
    assert sorted(with_optimizer) == ["opt_state/count", "opt_state/mu/w", "state/params/w"]


def test_msgpack_of_one_array(tmp_path) -> None:
    path = tmp_path / "array.msgpack"
    path.write_bytes(serialization.to_bytes(jnp.arange(6.0).reshape(2, 3)))
    records = list(read_checkpoint(path))
    assert [(r.name, r.shape) for r in records] == [("tensor", (2, 3))]
    assert np.asarray(records[0].load()).tolist() == [[0, 1, 2], [3, 4, 5]]

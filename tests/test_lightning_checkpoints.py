"""PyTorch Lightning `.ckpt` files, written by a real Trainer with ModelCheckpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tbweights.checkpoints import LoadOptions, read_checkpoint
from tbweights.cli import main
from tbweights.summaries import fmt_first, fmt_shape

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning", reason="pytorch_lightning writes the .ckpt files of these tests")

STEPS = [2, 4, 6, 8, 10]


class TinyModule(pl.LightningModule):
    """A Linear-BatchNorm-Linear regressor; its hyperparameters land in each checkpoint."""

    def __init__(self, hidden: int = 4, data_dir: Any = "data") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: Any, index: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=0.1)


def train(folder: Path, module: TinyModule, max_steps: int, resume: Path | None = None) -> Path:
    """Train up to `max_steps` steps, saving a checkpoint every 2 steps and `last.ckpt`."""
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3), torch.randn(16, 1))
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=folder / "checkpoints", every_n_train_steps=2, save_top_k=-1, save_last=True
    )
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
        callbacks=[checkpoints],
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4), ckpt_path=resume)
    return folder / "checkpoints"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("lightning"), TinyModule(), max_steps=10)


def test_trainer_wrote_expected_files(run: Path) -> None:
    names = sorted(p.name for p in run.iterdir())
    assert names == [
        "epoch=0-step=2.ckpt",
        "epoch=0-step=4.ckpt",
        "epoch=1-step=6.ckpt",
        "epoch=1-step=8.ckpt",
        "epoch=2-step=10.ckpt",
        "last.ckpt",
    ]


def test_ckpt_yields_model_weights_only(run: Path) -> None:
    path = run / "epoch=2-step=10.ckpt"
    found = {t.name: t for t in read_checkpoint(path)}
    state = torch.load(path, weights_only=True)["state_dict"]
    assert sorted(found) == sorted(state)
    for name, tensor in state.items():
        assert found[name].shape == tuple(tensor.shape)
        assert torch.equal(torch.as_tensor(found[name].load()), tensor)


def test_optimizer_states_only_when_asked(run: Path) -> None:
    path = run / "epoch=2-step=10.ckpt"
    names = [t.name for t in read_checkpoint(path, LoadOptions(include_optimizer=True))]
    assert "net.0.weight" in names
    assert any(name.startswith("optimizer_states.") and name.endswith("exp_avg") for name in names)
    assert not [name for name in names if name.startswith(("callbacks.", "loops."))]


def test_run_folder_converts_each_step(run: Path, tmp_path: Path, read_run, capsys) -> None:
    logdir = tmp_path / "logs"
    assert main(["convert", str(run), "--logdir", str(logdir)]) == 0
    err = capsys.readouterr().err
    assert "last.ckpt: no step number in its name; left out of the run" in err
    assert "Lightning's last.ckpt repeats the newest checkpoint" in err

    reader = read_run(logdir)
    assert reader.steps("tbweights/overview") == STEPS
    assert not any(tag.startswith(("optimizer", "loops", "callbacks", "lr_schedulers")) for tag in reader.tags)
    newest = torch.load(run / "epoch=2-step=10.ckpt", weights_only=True)["state_dict"]
    for name, tensor in newest.items():
        tag = name[::-1].replace(".", "/", 1)[::-1]
        assert reader.steps(tag) == STEPS
        assert reader.value(tag, 10)[:, 2].sum() == tensor.numel()
        text = reader.text(f"{tag}/stats", 10)
        assert f"| shape | {fmt_shape(tensor.shape)} |" in text
        first = tensor.flatten()[:5].tolist()
        assert f"| first {len(first)} (row-major) | {fmt_first(first)} |" in text


def test_appending_after_more_training(tmp_path: Path, read_run, capsys) -> None:
    folder = tmp_path / "run"
    checkpoints = train(folder, TinyModule(), max_steps=4)
    logdir = tmp_path / "logs"
    assert main(["convert", str(checkpoints), "--logdir", str(logdir), "--quiet"]) == 0
    assert read_run(logdir).steps("tbweights/overview") == [2, 4]

    # Training resumes from last.ckpt in a later session and saves steps 6 and 8 into the same folder.
    train(folder, TinyModule(), max_steps=8, resume=checkpoints / "last.ckpt")
    capsys.readouterr()
    assert main(["convert", str(checkpoints), "--logdir", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert f"step 2 already in {logdir}, skipped" in out
    assert f"step 4 already in {logdir}, skipped" in out
    assert "step 6: 9 tensors" in out
    assert read_run(logdir).steps("tbweights/overview") == [2, 4, 6, 8]


def test_show_run_folder_hint(run: Path, capsys) -> None:
    assert main(["show", str(run)]) == 1
    err = capsys.readouterr().err
    assert "contains 5 checkpoint(s) of a training run (epoch=0-step=2.ckpt, epoch=0-step=4.ckpt" in err
    assert "pass one of them" in err


def test_root_folder_points_to_checkpoints(run: Path, capsys) -> None:
    """Lightning's default_root_dir contains the run folder `checkpoints/` one level down."""
    assert main(["show", str(run.parent)]) == 1
    err = capsys.readouterr().err
    assert f"training checkpoints are in {run}: pass that folder" in err


def test_unsafe_hyperparameter_names_trust_flag(tmp_path: Path, capsys) -> None:
    """A Path among the hyperparameters is an object that weights_only loading rejects."""
    checkpoints = train(tmp_path, TinyModule(data_dir=Path("data")), max_steps=2)
    path = checkpoints / "epoch=0-step=2.ckpt"
    assert main(["show", str(path)]) == 1
    err = capsys.readouterr().err
    assert "which safe loading (weights_only=True) rejects" in err
    assert "pathlib" in err
    assert "--trust-checkpoint" in err
    assert main(["show", str(path), "--trust-checkpoint"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [
        "net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias",
        "net.1.running_mean", "net.1.running_var", "net.1.num_batches_tracked",
        "net.2.weight", "net.2.bias",
    ]

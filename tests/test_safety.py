"""Loading never runs code from a checkpoint unless the trust option is given."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest

from tbweights.checkpoints import LoadOptions, read_checkpoint
from tbweights.cli import main
from tbweights.errors import CheckpointError, UnsafeCheckpointError

torch = pytest.importorskip("torch")


class CreatesFile:
    """Unpickling this object creates the file at `path`, as a malicious pickle would run code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


class TrainingState:
    """A custom class, as training scripts put in their checkpoints."""

    def __init__(self) -> None:
        self.epoch = 3


def weights() -> dict[str, object]:
    return {"fc.weight": torch.ones(2, 2)}


def save_torch(path: Path, extra: object, legacy: bool = False) -> Path:
    torch.save({**weights(), "extra": extra}, path, _use_new_zipfile_serialization=not legacy)
    return path


def names(path: Path, trust: bool = False) -> list[str]:
    return [t.name for t in read_checkpoint(path, LoadOptions(trust=trust))]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["torch", "npy", "npz"])
def test_payload_never_runs_without_trust(tmp_path: Path, kind: str, legacy: bool, capsys) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    if kind == "torch":
        path = save_torch(tmp_path / "model.pt", CreatesFile(marker), legacy)
    elif kind == "npy":
        path = tmp_path / "model.npy"
        np.save(path, np.array([CreatesFile(marker)], dtype=object), allow_pickle=True)
    else:
        path = tmp_path / "model.npz"
        np.savez(path, weight=np.ones(3), payload=np.array([CreatesFile(marker)], dtype=object))

    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        for tensor in read_checkpoint(path):
            tensor.load()
    assert main(["show", str(path)]) == 1
    # In an .npz only the object array is skipped and the plain arrays are
    # converted; the exit code is 1 either way, because something was skipped.
    assert main(["convert", str(path), "--logdir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--trust-checkpoint" in err
    assert not marker.exists()


def test_payload_runs_only_with_trust(tmp_path: Path) -> None:
    """The test payload is real: with trust, unpickling does create the file."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = save_torch(tmp_path / "model.pt", CreatesFile(marker))
    assert names(path, trust=True) == ["fc.weight"]
    assert marker.exists()


# extra object: (rejected global named in the error)
REJECTED = {
    "numpy_scalar": (np.float64(0.5), "numpy._core.multiarray.scalar"),
    "namespace": (argparse.Namespace(lr=0.1), "argparse.Namespace"),
    "custom_class": (TrainingState(), f"{__name__}.TrainingState"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_global_named(tmp_path: Path, case: str) -> None:
    extra, global_name = REJECTED[case]
    path = save_torch(tmp_path / "model.pt", extra)
    with pytest.raises(UnsafeCheckpointError) as caught:
        names(path)
    message = str(caught.value)
    assert f"the file holds {global_name}" in message
    assert "--trust-checkpoint (Python: trust=True)" in message
    assert f"torch.serialization.add_safe_globals([{global_name}])" in message
    assert names(path, trust=True) == ["fc.weight"]


def test_blocked_callable_named(tmp_path: Path) -> None:
    path = save_torch(tmp_path / "model.pt", CreatesFile(tmp_path / "x"))
    with pytest.raises(UnsafeCheckpointError, match=r"pickle calls (builtins|io)\.open, which can run code"):
        names(path)


def test_torchscript_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 3)).save(str(path))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript archive; loading it runs code"):
        names(path)
    assert sorted(names(path, trust=True)) == ["bias", "weight"]


def test_trust_flag_in_cli(tmp_path: Path, capsys) -> None:
    path = save_torch(tmp_path / "model.pt", argparse.Namespace(lr=0.1))
    assert main(["show", str(path)]) == 1
    assert main(["show", str(path), "--trust-checkpoint"]) == 0
    assert "fc.weight" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_pickle_file_is_rejected(tmp_path: Path, protocol: int) -> None:
    """A bare pickle (not torch.save) is loaded with weights_only=True too."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": CreatesFile(marker)}, protocol=protocol))
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        names(path)
    assert not marker.exists()

"""A folder that contains one model file, such as a Hugging Face Trainer's `checkpoint-500/`.

Formats that are folders themselves (sharded indexes, distributed checkpoints,
TensorFlow checkpoints, SavedModels) are sniffed first. This one comes last, and it
reads the folder's model file with that file's own format. Trainer folders also
hold optimizer, scheduler and RNG state, and `training_args.bin` is a pickle of
arbitrary objects, so those files are never picked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tbweights.checkpoints import Format, LoadOptions, detect
from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor

# File names that training frameworks give the model's weights, in order of preference.
MODEL_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "model.ckpt",
    "model.weights.h5",
    "model.keras",
    "model.npz",
)
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".npz",
    ".npy",
    ".h5",
    ".keras",
    ".onnx",
    ".gguf",
    ".msgpack",
)
# Files beside the model in training folders that hold no model weights.
NOT_MODEL_FILES = ("optimizer", "scheduler", "rng_state", "training_args", "scaler", "trainer_state")


def model_file(folder: Path) -> Path | None:
    """Pick the folder's model file, or return None when there is no candidate."""
    for name in MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = _candidates(folder)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(path.name for path in candidates)
        raise CheckpointError(folder, f"the folder contains several weight files ({names}); pass one of them")
    return None


def _candidates(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        path
        for path in entries
        if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES) and not path.name.startswith(NOT_MODEL_FILES)
    ]


def _sniff(path: Path, head: bytes) -> bool:
    del head  # a folder has no bytes of its own
    return path.is_dir() and model_file(path) is not None


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    found = model_file(path)
    if found is None:
        raise CheckpointError(path, "no model weight file found in the folder")
    yield from detect(found).read(found, options)


FORMAT = Format(name="folder with one model file", sniff=_sniff, read=_read)

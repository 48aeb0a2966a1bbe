"""Real broken checkpoint files, written by the real libraries and then damaged."""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 1048576\n"
)


def state_dict() -> dict[str, object]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(32, 32, generator=generator), "fc.bias": torch.randn(32, generator=generator)}


def torch_zip(path: Path) -> Path:
    import torch

    torch.save(state_dict(), path)
    return path


def truncated(make: Callable[[Path], Path], fraction: float) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        data = make(path.with_name("whole_" + path.name)).read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return build


def torch_legacy(path: Path) -> Path:
    import torch

    torch.save(state_dict(), path, _use_new_zipfile_serialization=False)
    return path


def safetensors_file(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(state_dict(), path)  # type: ignore[arg-type]
    return path


def corrupt_central_directory(path: Path) -> Path:
    data = torch_zip(path.with_name("whole.pt")).read_bytes()
    start = data.rfind(b"PK\x01\x02")
    path.write_bytes(data[:start] + b"\xff" * (len(data) - start))
    return path


def absurd_header(path: Path) -> Path:
    path.write_bytes(struct.pack("<Q", 2**62) + b'{"fc.weight": {}}')
    return path


def header_past_end(path: Path) -> Path:
    path.write_bytes(struct.pack("<Q", 4096) + b'{"fc.weight": {"dtype": "F32"}}')
    return path


def bad_json_header(path: Path) -> Path:
    body = b'{"fc.weight": {"dtype": "F32",,}}'
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    return path


def lfs_pointer(path: Path) -> Path:
    path.write_text(LFS_POINTER)
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def directory(path: Path) -> Path:
    path.mkdir()
    return path


def unknown(path: Path) -> Path:
    path.write_bytes(b"just some text, not weights\n" * 4)
    return path


def other_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    return path


def missing(path: Path) -> Path:
    return path


def truncated_npy(path: Path) -> Path:
    np.save(path, np.arange(1000, dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_npz(path: Path) -> Path:
    np.savez(path, a=np.arange(1000.0), b=np.ones(10))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def unreadable(path: Path) -> Path:
    torch_zip(path)
    os.chmod(path, 0)
    return path


# name: (file name, builder, error message fragment)
BROKEN: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "truncated_zip": ("model.pt", truncated(torch_zip, 0.5), "zip archive is corrupt or truncated"),
    "truncated_zip_head": ("model.pt", truncated(torch_zip, 0.02), "zip archive is corrupt or truncated"),
    "truncated_legacy": (
        "model.pt",
        truncated(torch_legacy, 0.5),
        "the file is corrupt, truncated or not a PyTorch checkpoint",
    ),
    "corrupt_zip": ("model.pt", corrupt_central_directory, "zip archive is corrupt or truncated"),
    "truncated_safetensors": ("model.safetensors", truncated(safetensors_file, 0.5), "the file is truncated"),
    "absurd_header": ("model.safetensors", absurd_header, "header length 4611686018427387904 does not fit"),
    "header_past_end": ("model.safetensors", header_past_end, "header length 4096 does not fit in a file of 39 bytes"),
    "bad_json_header": ("model.safetensors", bad_json_header, "header is not valid JSON"),
    "lfs_pointer": ("model.safetensors", lfs_pointer, "Git LFS pointer, not the checkpoint itself"),
    "lfs_pointer_pt": ("pytorch_model.bin", lfs_pointer, "git lfs pull"),
    "empty": ("model.pt", empty, "the file is empty"),
    "directory": ("checkpoint-100", directory, "the folder is empty; pass a checkpoint file or a folder"),
    "unknown": ("weights.dat", unknown, "unknown checkpoint format for this file"),
    "unknown_by_suffix": ("pytorch_model.bin", unknown, "not a PyTorch checkpoint: it starts with b'just'"),
    "other_zip": ("archive.zip", other_zip, "unknown checkpoint format"),
    "missing": ("nowhere.pt", missing, "no such file or directory"),
    "truncated_npy": ("weights.npy", truncated_npy, "cannot be read"),
    "truncated_npz": ("weights.npz", truncated_npz, "cannot open the .npz archive"),
}

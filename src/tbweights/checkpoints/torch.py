"""PyTorch checkpoints: `torch.save` zip files (memory-mapped) and legacy pickles.

Files are always loaded with `weights_only=True` and `map_location="cpu"`, so no
code from the file runs and checkpoints saved from GPU tensors open on any
machine. Full unpickling is available only when the user trusts the file.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tbweights.checkpoints import ZIP_MAGIC, Format, LoadOptions, zip_members
from tbweights.checkpoints.nesting import weight_tensors
from tbweights.checkpoints.onnx import suffix_hint as onnx_suffix_hint
from tbweights.checkpoints.pages import PageWindow, file_mappings, watch
from tbweights.errors import CheckpointError, UnsafeCheckpointError, import_optional
from tbweights.tensors import NamedTensor, Role

PICKLE_PROTOCOL_2_PLUS = b"\x80"
TRUST_FLAG = "--trust-checkpoint (Python: trust=True)"
# Modules whose globals read files, run programs or evaluate code: a pickle that
# names them gets no `add_safe_globals` suggestion.
CODE_MODULES = frozenset(
    {"builtins", "io", "os", "posix", "nt", "subprocess", "sys", "shutil", "runpy", "importlib",
     "pickle", "marshal", "socket", "ctypes", "code", "codecs", "pty", "webbrowser", "types", "functools", "operator"}
)



def _sniff(path: Path, head: bytes) -> bool:
    if head.startswith(PICKLE_PROTOCOL_2_PLUS):
        return True
    if not head.startswith(ZIP_MAGIC):
        return False
    # The zip's inner folder name need not match the file name: look for any */data.pkl.
    return any(name.endswith("data.pkl") for name in zip_members(path))


def _is_torchscript(members: list[str]) -> bool:
    return any(name.endswith("constants.pkl") for name in members) and any(
        "/code/" in name for name in members
    )


def _import_torch() -> Any:
    return import_optional("torch", "torch", "torch", "reading a PyTorch checkpoint")


def load_object(path: Path, options: LoadOptions) -> Any:
    """Load the file with torch.load safely, or raise a CheckpointError naming the fix."""
    torch = _import_torch()
    with path.open("rb") as file:
        head = file.read(4)
    is_zip = head == ZIP_MAGIC
    if not is_zip and not head.startswith(PICKLE_PROTOCOL_2_PLUS):
        raise CheckpointError(
            path,
            f"not a PyTorch checkpoint: it starts with {head!r}, neither a zip archive nor a pickle"
            + onnx_suffix_hint(path),
        )
    members = zip_members(path) if is_zip else []
    if is_zip and not members:
        raise CheckpointError(path, "the zip archive is corrupt or truncated")
    if _is_torchscript(members):
        if not options.trust:
            raise UnsafeCheckpointError(
                path,
                f"this is a TorchScript archive; loading it runs code from the file; pass {TRUST_FLAG} to allow it",
            )
        module = torch.jit.load(str(path), map_location="cpu")
        return module.state_dict()
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write, and the error below explains more.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # Rebuilding quantized tensors warns about torch's own deprecated internals; nothing for the user to do.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not options.trust, mmap=is_zip)
    except pickle.UnpicklingError as error:
        raise _unpickling_error(path, error) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as error:
        message = _first_line(str(error)) if str(error).strip() else type(error).__name__
        raise CheckpointError(
            path, f"torch.load failed ({message}); the file is corrupt, truncated or not a PyTorch checkpoint"
        ) from None


def _is_mapped(path: Path) -> bool:
    """Tell whether `load_object` memory-maps the file (zip checkpoints, not TorchScript)."""
    with path.open("rb") as file:
        if file.read(4) != ZIP_MAGIC:
            return False
    return not _is_torchscript(zip_members(path))


def _unpickling_error(path: Path, error: Exception) -> CheckpointError:
    """Name what safe loading rejected, and how to allow it, from torch's message."""
    text = str(error)
    allowed = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if allowed and allowed.group(1).split(".", 1)[0] in CODE_MODULES:
        return UnsafeCheckpointError(
            path,
            f"the file's pickle calls {allowed.group(1)}, which can run code, so safe loading "
            f"(weights_only=True) rejects it; pass {TRUST_FLAG} only if you trust the file",
        )
    if allowed:
        name = allowed.group(1)
        return UnsafeCheckpointError(
            path,
            f"the file holds {name}, which safe loading (weights_only=True) rejects; "
            f"if you trust the file, pass {TRUST_FLAG}, or in Python call "
            f"torch.serialization.add_safe_globals([{name}]) first",
        )
    blocked = re.search(r"unsupported GLOBAL ([\w.]+) whose module ([\w.]+) is blocked", text)
    if blocked:
        return UnsafeCheckpointError(
            path,
            f"the file's pickle calls {blocked.group(1)}, which can run code, so safe loading "
            f"(weights_only=True) rejects it; pass {TRUST_FLAG} only if you trust the file",
        )
    detail = re.search(r"WeightsUnpickler error: *\n*(.+)", text)
    reason = detail.group(1).strip() if detail else _first_line(text)
    return CheckpointError(
        path,
        f"safe loading (weights_only=True) failed: {reason}; the pickle is corrupt, or it uses "
        f"a feature safe loading lacks, which {TRUST_FLAG} allows for a file you trust",
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unpickling failed"


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    torch = _import_torch()  # first: without torch, the adapter's import would fail unexplained
    from tbweights.frameworks import torch as torch_adapter

    obj = load_object(path, options)
    # Zip checkpoints are memory-mapped (see load_object): pages of tensors that lie in
    # the file's mappings are dropped after each tensor. Other memory must not be.
    mapped = _is_mapped(path)
    window = PageWindow(within=file_mappings(path) if mapped else None)
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    pairs = weight_tensors(obj, torch_adapter.is_tensor, include_optimizer=options.include_optimizer)
    groups: dict[Any, list[tuple[str, Any]]] = {}
    for name, tensor in pairs:
        key = _storage_key(tensor) or name
        groups.setdefault(key, []).append((name, tensor))
    for members in groups.values():
        name, tensor = members[0]
        role = Role.OPTIMIZER if options.include_optimizer and _looks_like_optimizer(name) else None
        record = torch_adapter.tensor_record(name, tensor, role)
        aliases = tuple(alias for alias, _ in members[1:])  # tied weights: logged once
        load = watch(record.load, window, _span) if mapped else record.load
        yield NamedTensor(record.name, record.shape, record.dtype, load, record.role, aliases)
        window.advance()


def _span(tensor: Any) -> tuple[int, int]:
    return tensor.data_ptr(), tensor.numel() * tensor.element_size()


def _storage_key(tensor: Any) -> tuple[int, int, tuple[int, ...], Any] | None:
    try:
        return (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
    except (RuntimeError, NotImplementedError):
        return None


def _looks_like_optimizer(name: str) -> bool:
    head = name.split(".", 1)[0]
    return head in {"optimizer", "optimizer_states", "optim", "opt", "optimizer_state_dict"}


FORMAT = Format(name="pytorch", sniff=_sniff, read=_read, suffixes=(".pt", ".pth", ".bin", ".ckpt", ".tar"))

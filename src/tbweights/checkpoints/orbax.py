"""Orbax checkpoint folders, as written by `orbax.checkpoint` for JAX and Flax.

A pytree checkpoint (`StandardCheckpointer`, `PyTreeCheckpointer`) is a folder
with a `_METADATA` file (the tree's structure) and the array data, by default in
an OCDBT store (`manifest.ocdbt`, `d/`). A `CheckpointManager` writes one such
folder per item inside each step folder: `100/_CHECKPOINT_METADATA` beside
`100/default/_METADATA`. This module reads a pytree folder or a step folder. A
manager's root, which contains the step folders `0/`, `100/`, ..., is a run of
several checkpoints: `tbweights convert` reads it as a run folder, one step per
step folder, and reading it as one checkpoint raises an error that names that command.

Shapes and dtypes come from Orbax's metadata without reading any array. Values
are restored with Orbax itself, one tensor at a time, as NumPy arrays on the
host; Orbax restores data and runs no code from the checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.flax_names import FLAX_OPTIMIZER_KEYS, flax_role, join_path, linen_layer_type
from tbweights.errors import CheckpointError, import_optional
from tbweights.tensors import NamedTensor, Role

TREE_METADATA = "_METADATA"
STEP_METADATA = "_CHECKPOINT_METADATA"


def item_folders(path: Path) -> list[tuple[str, Path]]:
    """(item name, folder) of each pytree in an Orbax checkpoint folder; the name is '' for a lone tree."""
    if (path / TREE_METADATA).is_file():
        return [("", path)]
    if not (path / STEP_METADATA).is_file():
        return []
    items = sorted(child for child in path.iterdir() if (child / TREE_METADATA).is_file())
    if len(items) == 1:
        return [("", items[0])]
    return [(child.name, child) for child in items]


def manager_steps(path: Path) -> list[Path]:
    """List the step folders of a `CheckpointManager` root (numeric names with `_CHECKPOINT_METADATA`)."""
    if not path.is_dir():
        return []
    steps = [child for child in path.iterdir() if child.name.isdigit() and (child / STEP_METADATA).is_file()]
    return sorted(steps, key=lambda child: int(child.name))


def _sniff(path: Path, head: bytes) -> bool:
    del head  # a folder has no bytes of its own
    return path.is_dir() and (bool(item_folders(path)) or bool(manager_steps(path)))


def _import_orbax() -> Any:
    return import_optional("orbax.checkpoint", "orbax-checkpoint", "jax", "reading Orbax checkpoints")


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    items = item_folders(path)
    if not items:
        steps = manager_steps(path)
        listed = ", ".join(step.name for step in steps[:5]) + (", ..." if len(steps) > 5 else "")
        raise CheckpointError(
            path,
            f"this is an Orbax CheckpointManager folder with the steps {listed}; pass one step "
            f"folder, or convert all steps as one run: tbweights convert {path} --logdir DIR",
        )
    for item, folder in items:
        yield from _item_tensors(folder, item, options)


def _item_tensors(folder: Path, item: str, options: LoadOptions) -> Iterator[NamedTensor]:
    ocp = _import_orbax()
    import jax

    from tbweights.frameworks.jax import key_name

    folder = folder.resolve()  # Orbax finds no metadata under some relative paths
    try:
        with _quiet_orbax():
            metadata = ocp.PyTreeCheckpointer().metadata(folder)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(folder, f"cannot read the Orbax metadata: {error}") from None
    tree = getattr(metadata, "item_metadata", metadata)  # a StepMetadata from orbax 0.11 on
    tree = getattr(tree, "tree", tree)
    if tree is None:
        raise CheckpointError(
            folder,
            f"Orbax could not read this checkpoint's metadata; {TREE_METADATA}, the array metadata "
            "or the data files (manifest.ocdbt, d/) are missing or corrupt",
        )
    prefix = (item,) if item else ()
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = _LeafReader(ocp, folder, treedef, [leaf for _, leaf in flat])
    for index, (key_path, leaf) in enumerate(flat):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            continue  # strings and other non-array leaves
        keys = tuple(key_name(key) for key in key_path)
        # An item named like an optimizer key (`Composite(opt_state=...)`) contains optimizer state too.
        role = Role.OPTIMIZER if item in FLAX_OPTIMIZER_KEYS else flax_role(keys, len(shape))
        if role is Role.OPTIMIZER and not options.include_optimizer:
            continue
        yield NamedTensor(
            name=join_path((*prefix, *keys)),
            shape=tuple(int(d) for d in shape),
            dtype=str(np.dtype(dtype)),
            load=functools.partial(leaves.read, index),
            role=role,
            layer_type=linen_layer_type(keys),
        )


class _LeafReader:
    """Restore single leaves of one Orbax pytree as NumPy arrays.

    Every other leaf is an `ocp.PLACEHOLDER`, which Orbax skips, so memory
    stays near one tensor. A restore of one leaf took about 4 ms for a
    256x256 float32 kernel (an `ocp.PyTreeCheckpointer` over a 50-layer tree,
    orbax-checkpoint 0.12.8, 2-CPU machine).
    """

    def __init__(self, ocp: Any, folder: Path, treedef: Any, metadata: list[Any]) -> None:
        self.ocp = ocp
        self.folder = folder
        self.treedef = treedef
        self.metadata = metadata

    def read(self, index: int) -> np.ndarray:
        import jax

        ocp = self.ocp
        placeholder = getattr(ocp, "PLACEHOLDER", None)
        if placeholder is None:
            # NOTE: Orbax releases without PLACEHOLDER restore the whole tree for each tensor.
            leaf_args = [ocp.RestoreArgs(restore_type=np.ndarray) for _ in self.metadata]
            items = None
        else:
            leaf_args = [placeholder] * len(self.metadata)
            leaf_args[index] = ocp.RestoreArgs(restore_type=np.ndarray)
            items = [placeholder] * len(self.metadata)
            items[index] = self.metadata[index]
        restore_args = jax.tree_util.tree_unflatten(self.treedef, leaf_args)
        item = None if items is None else jax.tree_util.tree_unflatten(self.treedef, items)
        try:
            with _quiet_orbax():
                restored = self.ocp.PyTreeCheckpointer().restore(
                    self.folder, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
                )
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise CheckpointError(self.folder, f"Orbax failed to restore the arrays: {error}") from None
        values = jax.tree_util.tree_leaves(restored, is_leaf=lambda leaf: leaf is placeholder)
        return np.asarray(values[index])


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Hide Orbax's absl warnings about a manager's step metadata, which a lone item folder lacks."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


FORMAT = Format(name="Orbax checkpoint", sniff=_sniff, read=_read)

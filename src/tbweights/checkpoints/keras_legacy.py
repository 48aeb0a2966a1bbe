"""Keras 2 HDF5 files: `model.save("m.h5")` and `model.save_weights("m.h5")`.

Weights live under `model_weights/<layer>/` (a full model) or `<layer>/` at
the root (weights only). The root's `layer_names` attribute gives the layer
order and each layer group's `weight_names` attribute gives its variables in
order, such as `dense_1/kernel:0`. A nested model's variables are listed on
the nested model's group (`inner` lists `d_in/kernel:0`), so the name becomes
`inner/d_in/kernel`, the path Keras 3 would give the same variable. The
`optimizer_weights` group is read only with `LoadOptions.include_optimizer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.hdf5 import HDF5_MAGIC, H5Source, dataset_dtype, h5py_available, string_list_attribute
from tbweights.checkpoints.keras_names import keras_role
from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor, Role

MODEL_WEIGHTS = "model_weights"
OPTIMIZER_WEIGHTS = "optimizer_weights"
# Keras 2 lists variables that belong to the model itself under this pseudo-layer.
TOP_LEVEL = "top_level_model_weights"


def looks_like_keras2(root: Any) -> bool:
    return MODEL_WEIGHTS in root or "layer_names" in root.attrs


def variable_name(layer: str, weight_name: str) -> str:
    """`("inner", "d_in/kernel:0")` -> `inner/d_in/kernel`; `("dense", "dense/bias:0")` -> `dense/bias`."""
    name = weight_name.rsplit(":", 1)[0] if weight_name.rsplit(":", 1)[-1].isdigit() else weight_name
    if layer == TOP_LEVEL or name == layer or name.startswith(f"{layer}/"):
        return name
    return f"{layer}/{name}"


def _sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(HDF5_MAGIC) or not h5py_available():
        return False
    with H5Source(path) as source:
        return looks_like_keras2(source.file)


def _record(source: H5Source, h5_path: str, name: str, role: Role | None = None) -> NamedTensor:
    dataset = source.file[h5_path]
    shape = tuple(int(d) for d in dataset.shape)
    return NamedTensor(
        name=name,
        shape=shape,
        dtype=dataset_dtype(dataset),
        load=lambda: source.dataset_array(h5_path),
        role=role or keras_role(name, len(shape)),
        aliases=(h5_path,),
    )


def _model_tensors(path: Path, source: H5Source) -> Iterator[NamedTensor]:
    root = source.file
    weights_path = MODEL_WEIGHTS if MODEL_WEIGHTS in root else ""
    weights = root[weights_path] if weights_path else root
    layer_names = string_list_attribute(weights, "layer_names")
    if layer_names is None:
        raise CheckpointError(
            path, "the Keras 2 weights group has no layer_names attribute; the file is not a Keras 2 model"
        )
    for layer in layer_names:
        if layer not in weights:
            raise CheckpointError(path, f"layer {layer!r} is listed in layer_names but has no group in the file")
        group = weights[layer]
        for weight_name in string_list_attribute(group, "weight_names") or []:
            h5_path = "/".join(p for p in (weights_path, layer, weight_name) if p)
            if h5_path not in root:
                raise CheckpointError(
                    path, f"weight {weight_name!r} of layer {layer!r} is listed but missing from the file"
                )
            yield _record(source, h5_path, variable_name(layer, weight_name))


def _optimizer_tensors(source: H5Source) -> Iterator[NamedTensor]:
    root = source.file
    if OPTIMIZER_WEIGHTS not in root:
        return
    group = root[OPTIMIZER_WEIGHTS]
    for weight_name in string_list_attribute(group, "weight_names") or []:
        h5_path = f"{OPTIMIZER_WEIGHTS}/{weight_name}"
        if h5_path in root:
            name = "optimizer/" + weight_name.rsplit(":", 1)[0]
            yield _record(source, h5_path, name, Role.OPTIMIZER)


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    with H5Source(path) as source:
        yield from _model_tensors(path, source)
        if options.include_optimizer:
            yield from _optimizer_tensors(source)


FORMAT = Format(name="Keras 2 HDF5 (.h5)", sniff=_sniff, read=_read, suffixes=(".h5", ".hdf5"))

"""Keras 3 weight files (`model.save_weights("m.weights.h5")`), and their walker.

Keras 3 saves each layer's variables under `<saving path>/vars/0`, `vars/1`,
... where the saving path is made of attribute names (`layers`, `cell`, a
subclassed model's `self.encoder`) and numbered snake-case class names
(`dense`, `dense_1`). Recent Keras versions (3.15 was checked) also store the
layer's own name as the `name` attribute of each `vars` group.

Names given here follow Keras's own `variable.path`: the names of the
enclosing layers, then the variable's name, such as `inner/dense/kernel`. A
Functional model adds no name part of its own, while Sequential and
subclassed models add theirs, because Keras builds their layers inside their
name scope. Variable names come from `keras_names` when the layer's class is
known (from the `.keras` config, or from the saving path); otherwise the
position is kept (`encoder/vars/0`) and `NamedTensor.note` explains why.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tbweights.checkpoints import Format, LoadOptions
from tbweights.checkpoints.hdf5 import HDF5_MAGIC, H5Source, dataset_dtype, h5py_available
from tbweights.checkpoints.keras_names import (
    class_key_from_group,
    keras_role,
    to_snake_case,
    variable_names,
)
from tbweights.tensors import NamedTensor, Role

VARS = "vars"
OPTIMIZER = "optimizer"
# Groups whose children are layers rather than one layer; `_layer_checkpoint_dependencies`
# is what Keras 2.13's `.keras` format used in place of `layers`.
_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")
_CONTAINER_PREFIX = "container"
_FUNCTIONAL_CLASSES = frozenset({"Functional"})
_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def _is_group(obj: Any) -> bool:
    return hasattr(obj, "keys") and not hasattr(obj, "dtype")


def _vars_name(group: Any) -> str | None:
    if VARS not in group:
        return None
    name = group[VARS].attrs.get("name")
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    return name if isinstance(name, str) and name else None


def _is_functional(group: Any, config: dict[str, Any] | None) -> bool:
    if config is not None:
        inner = config.get("config") or {}
        return config.get("class_name") in _FUNCTIONAL_CLASSES or "input_layers" in inner
    # Without a config: a Functional model saves its InputLayer among its layers,
    # a Sequential model does not.
    layers = group.get("layers") if hasattr(group, "get") else None
    return layers is not None and any(key.startswith("input_layer") for key in layers)


class KerasWeightsWalker:
    """Turns one open Keras 3 weights HDF5 file into `NamedTensor`s."""

    def __init__(self, source: H5Source, config: dict[str, Any] | None, options: LoadOptions) -> None:
        self.source = source
        self.options = options
        self.root_config = config

    def tensors(self) -> Iterator[NamedTensor]:
        root = self.source.file
        prefix: tuple[str, ...] = ()
        root_name = _vars_name(root) or ((self.root_config or {}).get("config") or {}).get("name")
        if root_name and not _is_functional(root, self.root_config):
            prefix = (root_name,)
        yield from self._node("", root, prefix, self.root_config, is_root=True)

    def _node(
        self, h5_path: str, group: Any, names: tuple[str, ...], config: dict[str, Any] | None, *, is_root: bool = False
    ) -> Iterator[NamedTensor]:
        if VARS in group:
            class_key = (
                to_snake_case(config["class_name"]) if config else class_key_from_group(h5_path.rsplit("/", 1)[-1])
            )
            yield from self._layer_variables(f"{h5_path}/{VARS}".lstrip("/"), group[VARS], names, class_key, config)
        for key in sorted(group.keys(), key=_natural_key):
            child = group[key]
            child_path = f"{h5_path}/{key}".lstrip("/")
            if key == VARS or not _is_group(child):
                continue
            if is_root and key == OPTIMIZER:
                if self.options.include_optimizer:
                    yield from self._optimizer_variables(child_path, child)
                continue
            if key in _CONTAINERS or key.startswith(_CONTAINER_PREFIX):
                yield from self._container(child_path, child, names, config)
            else:
                yield from self._child(child_path, child, key, names, None)

    def _container(
        self, h5_path: str, group: Any, names: tuple[str, ...], config: dict[str, Any] | None
    ) -> Iterator[NamedTensor]:
        by_name, by_saving_key = _config_index(config)
        matched: list[tuple[int, list[Any], str, Any, dict[str, Any] | None]] = []
        for key in group.keys():
            child = group[key]
            if not _is_group(child):
                continue
            layer_name = _vars_name(child)
            child_config = by_name.get(layer_name) if layer_name else None
            if child_config is None:
                child_config = by_saving_key.get(key)
            # Layers in the config's order (the model's order), others after them.
            position = child_config["_position"] if child_config is not None else len(by_name) + len(by_saving_key)
            matched.append((position, _natural_key(key), key, child, child_config))
        for _, _, key, child, child_config in sorted(matched, key=lambda item: (item[0], item[1])):
            yield from self._child(f"{h5_path}/{key}", child, key, names, child_config)

    def _child(
        self, h5_path: str, group: Any, key: str, names: tuple[str, ...], config: dict[str, Any] | None
    ) -> Iterator[NamedTensor]:
        layer_name = _vars_name(group) or ((config or {}).get("config") or {}).get("name") or key
        child_names = names if _is_functional(group, config) else names + (layer_name,)
        yield from self._node(h5_path, group, child_names, config)

    def _layer_variables(
        self, h5_path: str, group: Any, names: tuple[str, ...], class_key: str, config: dict[str, Any] | None
    ) -> Iterator[NamedTensor]:
        keys = sorted((k for k in group.keys() if k.isdigit()), key=int)
        layer_config = (config or {}).get("config") if config else None
        known = variable_names(class_key, len(keys), layer_config)
        layer = "/".join(names)
        for position, key in enumerate(keys):
            dataset = group[key]
            if known is not None:
                name = f"{layer}/{known[position]}".lstrip("/")
                note = ""
            else:
                name = f"{layer}/{VARS}/{key}".lstrip("/")
                note = (
                    f"variable {key} of layer {layer or '(model)'}; the file stores variables by "
                    f"position and tbweights does not know the layer type {class_key!r}"
                )
            yield self._record(f"{h5_path}/{key}", dataset, name, keras_role(name, len(dataset.shape)), note)

    def _optimizer_variables(self, h5_path: str, group: Any) -> Iterator[NamedTensor]:
        if VARS not in group:
            return
        variables = group[VARS]
        for key in sorted((k for k in variables.keys() if k.isdigit()), key=int):
            note = f"optimizer variable {key}; Keras weight files store optimizer variables by position only"
            yield self._record(
                f"{h5_path}/{VARS}/{key}", variables[key], f"{OPTIMIZER}/{VARS}/{key}", Role.OPTIMIZER, note
            )

    def _record(self, h5_path: str, dataset: Any, name: str, role: Role, note: str) -> NamedTensor:
        source = self.source
        return NamedTensor(
            name=name,
            shape=tuple(int(d) for d in dataset.shape),
            dtype=dataset_dtype(dataset),
            load=lambda: source.dataset_array(h5_path),
            role=role,
            aliases=(h5_path,),
            note=note,
        )


def _config_index(config: dict[str, Any] | None) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Index a model config's layers by layer name and by the group name Keras saves them under."""
    layers = ((config or {}).get("config") or {}).get("layers") or []
    by_name: dict[str, dict[str, Any]] = {}
    by_saving_key: dict[str, dict[str, Any]] = {}
    counters: dict[str, int] = {}
    for position, layer in enumerate(layers):
        if not isinstance(layer, dict) or "class_name" not in layer:
            continue
        layer = {**layer, "_position": position}
        name = (layer.get("config") or {}).get("name")
        if isinstance(name, str):
            by_name[name] = layer
        base = to_snake_case(str(layer["class_name"]))
        seen = counters.get(base)
        counters[base] = 0 if seen is None else seen + 1
        by_saving_key[base if seen is None else f"{base}_{seen + 1}"] = layer
    return by_name, by_saving_key


def looks_like_keras3(root: Any) -> bool:
    """True for the group layout of Keras 3 weights (and not Keras 2's `model_weights`)."""
    if "model_weights" in root or "layer_names" in root.attrs:
        return False
    return VARS in root or any(key in root for key in _CONTAINERS)


def _sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(HDF5_MAGIC):
        return False
    if not h5py_available():
        return True  # `_read` then raises an error naming the extra to install
    with H5Source(path) as source:
        return looks_like_keras3(source.file)


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    with H5Source(path) as source:
        yield from KerasWeightsWalker(source, None, options).tensors()


FORMAT = Format(name="Keras 3 weights (.weights.h5)", sniff=_sniff, read=_read, suffixes=(".weights.h5",))

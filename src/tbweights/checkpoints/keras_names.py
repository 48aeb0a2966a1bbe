"""Which Keras variable is which: names for the positional entries of Keras 3 files.

Keras 3 weight files store a layer's variables as `vars/0`, `vars/1`, ... in
the order the layer created them (trainable first, then non-trainable), with no
names. The table below gives that order for the built-in layers; a variable
whose creation depends on a config flag is listed with that flag. The test
`test_keras_checkpoints.py::test_layer_table_matches_keras` builds each layer
with the installed Keras and checks the table against it.
"""

from __future__ import annotations

import re
from typing import Any

from tbweights.tensors import Role, guess_role

# Leaf names of Keras variables that are statistics or RNG state, not trained weights.
BUFFER_LEAVES = frozenset({"moving_mean", "moving_variance", "seed_generator_state"})

_KERNEL_BIAS = (("kernel", None), ("bias", "use_bias"))
_NORMALIZATION = (("gamma", "scale"), ("beta", "center"))
_RECURRENT_CELL = (("kernel", None), ("recurrent_kernel", None), ("bias", "use_bias"))

# Snake-case class name -> (variable name, config flag that must be true or None).
LAYER_VARIABLES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "dense": _KERNEL_BIAS,
    "einsum_dense": (("kernel", None), ("bias", "bias_axes")),
    "conv1d": _KERNEL_BIAS,
    "conv2d": _KERNEL_BIAS,
    "conv3d": _KERNEL_BIAS,
    "conv1d_transpose": _KERNEL_BIAS,
    "conv2d_transpose": _KERNEL_BIAS,
    "conv3d_transpose": _KERNEL_BIAS,
    "depthwise_conv1d": _KERNEL_BIAS,
    "depthwise_conv2d": _KERNEL_BIAS,
    "separable_conv1d": (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias")),
    "separable_conv2d": (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias")),
    "embedding": (("embeddings", None),),
    "batch_normalization": _NORMALIZATION + (("moving_mean", None), ("moving_variance", None)),
    "layer_normalization": _NORMALIZATION,
    "group_normalization": _NORMALIZATION,
    "rms_normalization": (("scale", None),),
    "p_re_lu": (("alpha", None),),
    "simple_rnn_cell": _RECURRENT_CELL,
    "lstm_cell": _RECURRENT_CELL,
    "gru_cell": _RECURRENT_CELL,
    "seed_generator": (("seed_generator_state", None),),
}

_NON_WORD = re.compile(r"\W+")
_CAPITALIZED_WORD = re.compile(r"(.)([A-Z][a-z]+)")
_LOWER_UPPER = re.compile(r"([a-z])([A-Z])")
_COUNTER_SUFFIX = re.compile(r"_\d+$")


def to_snake_case(class_name: str) -> str:
    """`BatchNormalization` -> `batch_normalization`, `PReLU` -> `p_re_lu`, as Keras spells them."""
    name = _NON_WORD.sub("", class_name)
    name = _CAPITALIZED_WORD.sub(r"\1_\2", name)
    name = _LOWER_UPPER.sub(r"\1_\2", name)
    return name.lower()


def class_key_from_group(group_name: str) -> str:
    """`dense_2` -> `dense`: the class part of a group name that Keras numbered."""
    return _COUNTER_SUFFIX.sub("", group_name)


def variable_names(class_key: str, count: int, config: dict[str, Any] | None) -> tuple[str, ...] | None:
    """Names for `count` positional variables of a layer, or None when they are not known.

    With the layer's config, optional variables are kept or dropped by their flag.
    Without it, the table is used only when the count leaves no doubt: all
    variables present, or all but the single optional one.
    """
    table = LAYER_VARIABLES.get(class_key)
    if table is None:
        return None
    if config is not None:
        names = tuple(name for name, flag in table if flag is None or config.get(flag, True))
        return names if len(names) == count else None
    if count == len(table):
        return tuple(name for name, _ in table)
    optional = [name for name, flag in table if flag is not None]
    if len(optional) == 1 and count == len(table) - 1:
        return tuple(name for name, flag in table if flag is None)
    return None


def keras_role(name: str, ndim: int | None) -> Role:
    """`guess_role`, plus the Keras statistics and RNG state that it would call OTHER."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in BUFFER_LEAVES:
        return Role.BUFFER
    return guess_role(name, ndim)

"""Initialization schemes of PyTorch and Keras, the fans they use, and the layer a tensor belongs to.

Fans follow each framework's own rule, because the two store kernels differently:

- PyTorch (`torch.nn.init._calculate_fan_in_and_fan_out`) stores a dense weight
  as (out, in) and a conv kernel as OIHW: fan_in = shape[1] * receptive field,
  fan_out = shape[0] * receptive field, receptive field = prod(shape[2:]).
- Keras (`keras.initializers` `compute_fans`) stores a dense kernel as (in, out)
  and a conv kernel as HWIO: fan_in = shape[-2] * receptive field,
  fan_out = shape[-1] * receptive field, receptive field = prod(shape[:-2]).
  Flax (`jax.nn.initializers.variance_scaling`, default axes) stores kernels the
  same way and computes the same fans, so Flax tensors use the Keras layout.

Every scheme here is described by the distribution of the values it draws: its
mean, its standard deviation and, for uniform and truncated normal draws, the
bound that no value passes.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from tbweights.tensors import NamedTensor, Role

# Keras's truncated normal draws within 2 standard deviations of the requested
# scale and rescales by this factor, the std of a unit normal truncated to [-2, 2],
# so that the values' std equals the requested one (keras.initializers, VarianceScaling).
_TRUNCATED_STD = 0.87962566103423978
# GPT-2 and BERT draw every weight from normal(0, initializer_range=0.02).
_TRANSFORMER_STD = 0.02
_KERAS_EMBEDDING_BOUND = 0.05


class Layout(str, enum.Enum):
    """How a framework orders a kernel's axes, which decides its fans."""

    TORCH = "torch"  # (out, in, *kernel)
    KERAS = "keras"  # (*kernel, in, out)


class LayerKind(str, enum.Enum):
    DENSE = "dense"
    CONV = "conv"
    EMBEDDING = "embedding"
    NORM = "norm"
    ATTENTION = "attention"
    RECURRENT = "recurrent"
    OTHER = "other"


class Distribution(str, enum.Enum):
    UNIFORM = "uniform"
    NORMAL = "normal"
    TRUNCATED_NORMAL = "truncated normal"
    ORTHOGONAL = "orthogonal"
    CONSTANT = "constant"


@dataclass(frozen=True)
class Scheme:
    """One initialization scheme, as the distribution of the values it draws."""

    name: str
    distribution: Distribution
    std: float
    mean: float = 0.0
    bound: float | None = None  # no value lies further than this from the mean
    fan_mode: str = ""  # "fan_in", "fan_out" or "" when no fan is involved

    def typical_max_deviation(self, count: int) -> float:
        """Return the median of the largest |w - mean| among `count` draws."""
        if self.bound is not None:
            return self.bound
        if count < 2:
            return self.std
        # P(max |z| < x) = (1 - 2 Phi(-x))^count = 1/2
        tail = (1.0 - 0.5 ** (1.0 / count)) / 2.0
        return self.std * -NormalDist().inv_cdf(tail)


@dataclass(frozen=True)
class Layer:
    """The layer that owns a tensor, as far as its source or its name and shape tell."""

    kind: LayerKind
    layout: Layout
    framework: str  # "torch", "keras" or "" when inferred from a checkpoint
    label: str  # for the report: `torch.nn.Linear`, or how the layer was inferred
    inferred: bool


_TORCH_KINDS: dict[str, LayerKind] = {
    **dict.fromkeys(["Linear", "LazyLinear"], LayerKind.DENSE),
    **dict.fromkeys(
        [f"{p}{n}d" for p in ("Conv", "ConvTranspose", "LazyConv", "LazyConvTranspose") for n in (1, 2, 3)],
        LayerKind.CONV,
    ),
    **dict.fromkeys(["Embedding", "EmbeddingBag"], LayerKind.EMBEDDING),
    **dict.fromkeys(
        [
            "LayerNorm",
            "GroupNorm",
            "RMSNorm",
            "BatchNorm1d",
            "BatchNorm2d",
            "BatchNorm3d",
            "SyncBatchNorm",
            "InstanceNorm1d",
            "InstanceNorm2d",
            "InstanceNorm3d",
        ],
        LayerKind.NORM,
    ),
    "MultiheadAttention": LayerKind.ATTENTION,
    **dict.fromkeys(["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"], LayerKind.RECURRENT),
}
_KERAS_KINDS: dict[str, LayerKind] = {
    **dict.fromkeys(["Dense", "EinsumDense"], LayerKind.DENSE),
    **dict.fromkeys(
        [
            "Conv1D",
            "Conv2D",
            "Conv3D",
            "Conv1DTranspose",
            "Conv2DTranspose",
            "Conv3DTranspose",
            "DepthwiseConv1D",
            "DepthwiseConv2D",
            "SeparableConv1D",
            "SeparableConv2D",
        ],
        LayerKind.CONV,
    ),
    "Embedding": LayerKind.EMBEDDING,
    **dict.fromkeys(
        ["BatchNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization"], LayerKind.NORM
    ),
    **dict.fromkeys(["SimpleRNN", "LSTM", "GRU", "SimpleRNNCell", "LSTMCell", "GRUCell"], LayerKind.RECURRENT),
}
_FLAX_KINDS: dict[str, LayerKind] = {
    **dict.fromkeys(["Dense", "DenseGeneral", "Linear", "LinearGeneral", "Einsum"], LayerKind.DENSE),
    **dict.fromkeys(["Conv", "ConvTranspose", "ConvLocal"], LayerKind.CONV),
    "Embed": LayerKind.EMBEDDING,
    **dict.fromkeys(["LayerNorm", "BatchNorm", "GroupNorm", "RMSNorm"], LayerKind.NORM),
}
_KERAS_LEAVES = frozenset(
    {
        "kernel",
        "recurrent_kernel",
        "depthwise_kernel",
        "pointwise_kernel",
        "embeddings",
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    }
)
_EMBEDDING_NAME = re.compile(r"embed|(^|[._/])(wte|wpe|tok_embeddings|word_embeddings)([._/]|$)", re.I)


def leaf_name(name: str) -> str:
    """`encoder.fc1.weight` -> `weight`, `dense/kernel:0` -> `kernel`."""
    return re.split(r"[./]", name.split(":", 1)[0])[-1]


def layer_prefix(name: str) -> str:
    """Return the owner's path: `encoder.fc1` for `encoder.fc1.weight`, '' for a top-level tensor."""
    stem = name.split(":", 1)[0]
    cut = max(stem.rfind("."), stem.rfind("/"))
    return stem[: cut + 1] if cut >= 0 else ""


def fans(shape: Sequence[int], layout: Layout) -> tuple[int, int]:
    """(fan_in, fan_out) by the framework's rule; a 1-D shape has fan_in = fan_out = its size."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if layout is Layout.TORCH:
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def orthogonal_matrix_shape(shape: Sequence[int], layout: Layout) -> tuple[int, int]:
    """Return the shape of the 2-D matrix that `orthogonal_` (PyTorch) or `Orthogonal` (Keras)
    makes orthogonal."""
    if layout is Layout.TORCH:
        return shape[0], math.prod(shape[1:])
    return math.prod(shape[:-1]), shape[-1]


def describe_layer(tensor: NamedTensor, shapes: Mapping[str, tuple[int, ...]]) -> Layer:
    """Describe a tensor's layer: from its `layer_type` when the source knew it, else inferred."""
    leaf = leaf_name(tensor.name)
    if tensor.layer_type:
        framework, _, class_name = tensor.layer_type.rpartition(".")
        if tensor.layer_type.startswith("torch.") and class_name in _TORCH_KINDS:
            return Layer(_TORCH_KINDS[class_name], Layout.TORCH, "torch", tensor.layer_type, False)
        if tensor.layer_type.startswith(("keras.", "tf_keras.", "tensorflow.")) and class_name in _KERAS_KINDS:
            return Layer(_KERAS_KINDS[class_name], Layout.KERAS, "keras", tensor.layer_type, False)
        if tensor.layer_type.startswith("flax.") and class_name in _FLAX_KINDS:
            return Layer(_FLAX_KINDS[class_name], Layout.KERAS, "flax", tensor.layer_type, False)
    keras_names = leaf in _KERAS_LEAVES or ":" in tensor.name or "/" in tensor.name
    layout = Layout.KERAS if keras_names else Layout.TORCH
    owner = f" in {tensor.layer_type}" if tensor.layer_type else ""
    kind, why = _infer_kind(tensor, shapes)
    return Layer(kind, layout, "", f"{kind.value} (inferred: {why}{owner}; {layout.value} layout)", True)


def _infer_kind(tensor: NamedTensor, shapes: Mapping[str, tuple[int, ...]]) -> tuple[LayerKind, str]:
    ndim = len(tensor.shape)
    if tensor.role is Role.BUFFER:
        return LayerKind.OTHER, "buffer"
    if ndim >= 2 and _EMBEDDING_NAME.search(tensor.name):
        return LayerKind.EMBEDDING, f"{ndim}-D, 'embed' in the name"
    if "weight_hh" in tensor.name or "recurrent_kernel" in tensor.name:
        return LayerKind.RECURRENT, "recurrent weight name"
    if ndim == 2:
        return LayerKind.DENSE, "2-D weight"
    if 3 <= ndim <= 5:
        return LayerKind.CONV, f"{ndim}-D kernel"
    if ndim == 1:
        sibling = owner_weight_shape(tensor.name, shapes)
        if tensor.role is Role.BIAS and sibling is not None and len(sibling) >= 2:
            return (LayerKind.CONV if len(sibling) > 2 else LayerKind.DENSE), f"bias beside a {len(sibling)}-D weight"
        if tensor.role in (Role.WEIGHT, Role.BIAS):
            return LayerKind.NORM, "1-D scale or shift"
    return LayerKind.OTHER, f"{ndim}-D tensor"


def owner_weight_shape(name: str, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """Find the shape of the weight or kernel beside a bias (`fc1.weight` for `fc1.bias`)."""
    prefix = layer_prefix(name)
    suffix = ":0" if name.endswith(":0") else ""
    for leaf in ("weight", "kernel"):
        shape = shapes.get(f"{prefix}{leaf}{suffix}")
        if shape is not None:
            return shape
    return None


def recurrent_hidden_size(name: str, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """PyTorch RNNs: the hidden size, read from `weight_hh_l0` (gates * hidden, hidden) of the same layer."""
    prefix = layer_prefix(name)
    for other, shape in shapes.items():
        if other.startswith(prefix) and "weight_hh" in other[len(prefix) :] and len(shape) == 2:
            return shape[1]
    return None


def _uniform(name: str, bound: float, fan_mode: str = "") -> Scheme:
    return Scheme(name, Distribution.UNIFORM, bound / math.sqrt(3.0), bound=bound, fan_mode=fan_mode)


def _normal(name: str, std: float, fan_mode: str = "") -> Scheme:
    return Scheme(name, Distribution.NORMAL, std, fan_mode=fan_mode)


def _truncated(name: str, std: float, fan_mode: str = "") -> Scheme:
    """Keras's truncated normal: values within 2 requested-stds, rescaled to the requested std."""
    return Scheme(name, Distribution.TRUNCATED_NORMAL, std, bound=2.0 * std / _TRUNCATED_STD, fan_mode=fan_mode)


def torch_default(fan_in: int) -> Scheme:
    """`nn.Linear` / `nn.Conv*` weights and biases: kaiming_uniform(a=sqrt(5)), which is U(+-1/sqrt(fan_in))."""
    return _uniform("PyTorch default U(±1/sqrt(fan_in))", 1.0 / math.sqrt(fan_in), "fan_in")


def random_schemes(shape: Sequence[int], layout: Layout) -> list[Scheme]:
    """List the common fan-based schemes for a kernel of this shape, and normal(0, 0.02)."""
    fan_in, fan_out = fans(shape, layout)
    if fan_in == 0 or fan_out == 0:
        return []
    glorot = 2.0 / (fan_in + fan_out)
    schemes = [
        torch_default(fan_in),
        _uniform("xavier_uniform / glorot_uniform", math.sqrt(3.0 * glorot)),
        _normal("xavier_normal", math.sqrt(glorot)),
        _truncated("glorot_normal (Keras, truncated)", math.sqrt(glorot)),
        _normal("normal(0, 0.02) (GPT-2/BERT)", _TRANSFORMER_STD),
    ]
    modes = [("fan_in", fan_in)] if fan_in == fan_out else [("fan_in", fan_in), ("fan_out", fan_out)]
    for mode, fan in modes:
        # He and LeCun are the fan_in forms; the fan_out forms carry only Kaiming's name.
        he = " / he_uniform" if mode == "fan_in" else ""
        lecun_uniform = "lecun_uniform / " if mode == "fan_in" else ""
        lecun_normal = "lecun_normal / " if mode == "fan_in" else ""
        he_normal = "he_normal" if mode == "fan_in" else "variance_scaling(2.0)"
        lecun_truncated = "lecun_normal" if mode == "fan_in" else "variance_scaling(1.0)"
        schemes += [
            _uniform(f"kaiming_uniform ({mode}, relu){he}", math.sqrt(6.0 / fan), mode),
            _normal(f"kaiming_normal ({mode}, relu)", math.sqrt(2.0 / fan), mode),
            _truncated(f"{he_normal} ({mode}, Keras, truncated)", math.sqrt(2.0 / fan), mode),
            _uniform(f"{lecun_uniform}kaiming_uniform ({mode}, linear)", math.sqrt(3.0 / fan), mode),
            _normal(f"{lecun_normal}kaiming_normal ({mode}, linear)", math.sqrt(1.0 / fan), mode),
            _truncated(f"{lecun_truncated} ({mode}, Keras, truncated)", math.sqrt(1.0 / fan), mode),
        ]
    return schemes


def embedding_schemes() -> list[Scheme]:
    return [
        _normal("PyTorch Embedding default normal(0, 1)", 1.0),
        _uniform("Keras Embedding default U(±0.05)", _KERAS_EMBEDDING_BOUND),
    ]


def orthogonal_scheme(shape: Sequence[int], layout: Layout, gain: float) -> Scheme:
    """Orthonormal rows or columns scaled by `gain`: the mean square is gain^2 / max(rows, cols)."""
    rows, cols = orthogonal_matrix_shape(shape, layout)
    return Scheme(f"orthogonal (gain {gain:.3g})", Distribution.ORTHOGONAL, gain / math.sqrt(max(rows, cols)))


def constant_scheme(value: float) -> Scheme:
    names = {0.0: "zeros", 1.0: "ones"}
    return Scheme(names.get(value, f"constant {value:.6g}"), Distribution.CONSTANT, 0.0, mean=value, bound=0.0)


def framework_default(layer: Layer, tensor: NamedTensor, shapes: Mapping[str, tuple[int, ...]]) -> Scheme | None:
    """Return the scheme the layer's framework applies when the user sets none, if known."""
    ndim = len(tensor.shape)
    bias = tensor.role is Role.BIAS or leaf_name(tensor.name).endswith("bias")
    if layer.kind is LayerKind.NORM:
        return constant_scheme(0.0 if bias or leaf_name(tensor.name) == "beta" else 1.0)
    if layer.framework == "flax":
        return _flax_default(layer, tensor, bias)
    if layer.framework == "keras" or (layer.inferred and layer.layout is Layout.KERAS):
        return _keras_default(layer, tensor, bias)
    if layer.kind in (LayerKind.DENSE, LayerKind.CONV):
        if ndim >= 2:
            return torch_default(fans(tensor.shape, Layout.TORCH)[0])
        weight = owner_weight_shape(tensor.name, shapes)
        if weight is not None and len(weight) >= 2:
            return torch_default(fans(weight, Layout.TORCH)[0])
        return None
    if layer.kind is LayerKind.EMBEDDING:
        return embedding_schemes()[0]
    if layer.kind is LayerKind.ATTENTION:
        if bias:
            return constant_scheme(0.0)
        return random_schemes(tensor.shape, Layout.TORCH)[1] if ndim >= 2 else None
    if layer.kind is LayerKind.RECURRENT:
        hidden = recurrent_hidden_size(tensor.name, shapes)
        return _uniform("PyTorch RNN default U(±1/sqrt(hidden_size))", 1.0 / math.sqrt(hidden)) if hidden else None
    return None


def _keras_default(layer: Layer, tensor: NamedTensor, bias: bool) -> Scheme | None:
    if bias:
        return constant_scheme(0.0)
    if layer.kind is LayerKind.EMBEDDING:
        return embedding_schemes()[1]
    if "recurrent_kernel" in tensor.name:
        return orthogonal_scheme(tensor.shape, Layout.KERAS, 1.0)
    if len(tensor.shape) >= 2 and layer.kind in (LayerKind.DENSE, LayerKind.CONV, LayerKind.RECURRENT):
        return random_schemes(tensor.shape, Layout.KERAS)[1]
    return None


def _flax_default(layer: Layer, tensor: NamedTensor, bias: bool) -> Scheme | None:
    """Flax's defaults: `lecun_normal` kernels (truncated like Keras's), zero biases, and
    embeddings from normal(0, 1/sqrt(features)) (`variance_scaling(1, fan_in, normal, out_axis=0)`)."""
    if bias:
        return constant_scheme(0.0)
    if layer.kind is LayerKind.EMBEDDING and len(tensor.shape) == 2 and tensor.shape[-1] > 0:
        return _normal("Flax Embed default normal(0, 1/sqrt(features))", 1.0 / math.sqrt(tensor.shape[-1]))
    if len(tensor.shape) >= 2 and layer.kind in (LayerKind.DENSE, LayerKind.CONV):
        fan_in = fans(tensor.shape, Layout.KERAS)[0]
        if fan_in > 0:
            return _truncated("lecun_normal (Flax default, truncated)", math.sqrt(1.0 / fan_in), "fan_in")
    return None

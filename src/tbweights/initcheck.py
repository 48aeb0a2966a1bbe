"""Check that each tensor looks like what a common initialization scheme draws.

For every tensor the check finds the closest scheme among those that fit its
layer and shape (`tbweights.initschemes`): PyTorch's and Keras's defaults,
Xavier/Glorot, Kaiming/He (fan_in and fan_out), LeCun, orthogonal, normal(0, 0.02),
zeros and ones. "Closest" weighs the ratio of the measured to the expected
standard deviation and, for tensors of 256 values or more, how far the largest
|w - mean| lies in standard deviations, which separates uniform, truncated
normal and normal draws. The verdict is:

- `broken`: NaN or Inf values, or all zeros (or any constant) where every
  common scheme draws random values, or a std more than `BROKEN_FACTOR` times
  off the closest scheme's.
- `suspicious`: a std off by more than sampling noise plus `STD_SLACK`, a mean
  far from 0, values beyond the scheme's bound, fan_out mode on a dense layer,
  or a norm layer's scale or shift that is not constant.
- `consistent`: none of the above.
- `unchecked`: no scheme applies (integer tensors, buffers, 1-D tensors with no
  weight beside them to give a fan-in).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tbweights.errors import TbweightsError
from tbweights.frameworks import WalkOptions, named_tensors
from tbweights.initschemes import (
    Distribution,
    Layer,
    LayerKind,
    Layout,
    Scheme,
    constant_scheme,
    describe_layer,
    embedding_schemes,
    fans,
    framework_default,
    leaf_name,
    orthogonal_matrix_shape,
    orthogonal_scheme,
    owner_weight_shape,
    random_schemes,
    torch_default,
)
from tbweights.stats import TensorStats, as_numpy, compute_stats
from tbweights.summaries import code_span, escape_markdown, fmt, markdown_table, name_cell
from tbweights.tensors import NamedTensor, Role

if TYPE_CHECKING:
    from tbweights.checkpoints import LoadOptions

# A std further than this factor from the closest scheme's is `broken`. GPT-2's
# residual projections, normal(0, 0.02 / sqrt(2 * n_layer)), stay under it
# (about 5x and 10x below 0.02 for 12 and 48 layers) and are reported `suspicious`.
BROKEN_FACTOR = 10.0
# A suspicious tensor whose std is this far from its layer's default reports that ratio too.
DEFAULT_NOTE_FACTOR = 3.0
# Beyond sampling noise, a std within this factor of the scheme's is `consistent`.
STD_SLACK = 1.1
# The distribution shape (uniform, truncated, normal) only counts from this many values on.
_SHAPE_MIN_COUNT = 256
# Orthogonality is tested with a Gram matrix only when rows * cols * min(rows, cols) stays below this.
_GRAM_MAX_WORK = 1 << 31
_ORTHOGONAL_TOLERANCE = 1e-3
# Errors that make one tensor unreadable; the others are still checked.
_TENSOR_ERRORS = (TbweightsError, TypeError, ValueError, RuntimeError, OSError, MemoryError)


class Verdict(str, enum.Enum):
    CONSISTENT = "consistent"
    SUSPICIOUS = "suspicious"
    BROKEN = "broken"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class InitFinding:
    """The check of one tensor. Bounds are (low, high); None where a scheme has none (normal draws)."""

    name: str
    shape: tuple[int, ...]
    layer: str
    layer_inferred: bool
    fan_in: int | None
    fan_out: int | None
    scheme: str | None
    default_scheme: str | None
    expected_std: float | None
    expected_bounds: tuple[float, float] | None
    measured_std: float | None
    measured_bounds: tuple[float, float] | None
    verdict: Verdict
    reason: str
    # Why the tensor could not be read; None when it was checked.
    error: str | None = None


@dataclass
class InitReport:
    """The findings of one check, in the order the tensors came."""

    findings: list[InitFinding] = field(default_factory=list)

    def __getitem__(self, name: str) -> InitFinding:
        for finding in self.findings:
            if finding.name == name:
                return finding
        raise KeyError(name)

    def counts(self) -> dict[Verdict, int]:
        totals = dict.fromkeys(Verdict, 0)
        for finding in self.findings:
            totals[finding.verdict] += 1
        return totals

    @property
    def ok(self) -> bool:
        """True when no tensor is broken."""
        return all(f.verdict is not Verdict.BROKEN for f in self.findings)

    def summary_line(self) -> str:
        counts = self.counts()
        return ", ".join(f"{counts[v]} {v.value}" for v in Verdict)


# The columns of the TensorBoard table (`init_check_markdown`). Shape, fans and bounds are
# left to `InitFinding` and `tbweights show --check-init`, and the reasons go in a list under
# the table. A wider table would not fit a text card in a 1280-pixel window, and TensorBoard
# would then split its words.
MARKDOWN_COLUMNS = ("name", "layer", "closest scheme", "expected std", "measured std", "verdict")


def init_check_markdown(report: InitReport) -> str:
    """Render the check for TensorBoard's text dashboard: a Markdown table, then the reasons."""
    rows = [
        [
            name_cell(f.name),
            _layer_cell(f),
            escape_markdown(f.scheme or ""),
            fmt(f.expected_std),
            fmt(f.measured_std),
            f.verdict.value,
        ]
        for f in report.findings
    ]
    text = markdown_table(MARKDOWN_COLUMNS, rows)
    if any(f.layer_inferred for f in report.findings):
        text += "\n\n\\* layer inferred from the tensor's name and shape"
    reasons = [
        f"- {code_span(f.name)} ({f.verdict.value}): {escape_markdown(f.reason)}" for f in report.findings if f.reason
    ]
    if reasons:
        text += "\n\n" + "\n".join(reasons)
    return text


def _layer_cell(finding: InitFinding) -> str:
    """Shorten the layer to its class name (`Linear`) or, when inferred, its kind and a star (`dense*`)."""
    if finding.layer_inferred:
        # An inferred label reads `dense (inferred: 2-D weight; torch layout)` (`describe_layer`).
        return escape_markdown(finding.layer.partition(" (")[0]) + "\\*"
    return escape_markdown(finding.layer.rpartition(".")[2])


def check_tensor(
    tensor: NamedTensor,
    stats: TensorStats,
    shapes: Mapping[str, tuple[int, ...]],
    values: Any = None,
) -> InitFinding:
    """Check one tensor; `shapes` (name -> shape of every tensor) gives a bias its weight's fan-in.

    `values`, the loaded tensor, lets the check test orthogonality; without it
    orthogonal init is not among the candidates.
    """
    layer = describe_layer(tensor, shapes)
    default = framework_default(layer, tensor, shapes)
    fan_in, fan_out = fans(tensor.shape, layer.layout) if len(tensor.shape) >= 2 else (None, None)
    base = _Finding(tensor, stats, layer, default, fan_in, fan_out)
    if stats.nonfinite:
        return base.make(None, Verdict.BROKEN, f"{stats.nan} NaN, {stats.posinf} +Inf, {stats.neginf} -Inf values")
    if stats.finite == 0 or tensor.role is Role.BUFFER or not _is_float(tensor.dtype):
        return base.make(None, Verdict.UNCHECKED, _unchecked_reason(tensor, stats))
    if stats.min == stats.max:
        return _check_constant(base, float(stats.min or 0.0))
    if layer.kind is LayerKind.NORM:
        expected = default.name if default else "a constant"
        return base.make(default, Verdict.SUSPICIOUS, f"a norm layer's scale or shift starts as {expected}, not random")
    candidates = _candidates(tensor, layer, default, shapes, values)
    if not candidates:
        return base.make(None, Verdict.UNCHECKED, "no fan-in known: a 1-D tensor with no weight or kernel beside it")
    ranked = sorted(candidates, key=lambda scheme: _distance(scheme, stats))
    if default in ranked and _std_within_noise(default, stats):
        # Keep the default if it fits and the std alone cannot tell it from the closest
        # scheme: too few values, or values beyond the closest scheme's own bound.
        if stats.count < _SHAPE_MIN_COUNT or (_beyond_bound(ranked[0], stats) and not _beyond_bound(default, stats)):
            ranked.remove(default)
            ranked.insert(0, default)
    return _judge(base, ranked[0], _equivalents(ranked))


@dataclass(frozen=True)
class _Finding:
    """The parts shared by every finding of one tensor; `make` adds the scheme and the verdict."""

    tensor: NamedTensor
    stats: TensorStats
    layer: Layer
    default: Scheme | None
    fan_in: int | None
    fan_out: int | None

    def make(self, scheme: Scheme | None, verdict: Verdict, reason: str) -> InitFinding:
        stats = self.stats
        measured = None if stats.min is None or stats.max is None else (stats.min, stats.max)
        bounds = None
        if scheme is not None and scheme.bound is not None:
            bounds = (scheme.mean - scheme.bound, scheme.mean + scheme.bound)
        return InitFinding(
            name=self.tensor.name,
            shape=self.tensor.shape,
            layer=self.layer.label,
            layer_inferred=self.layer.inferred,
            fan_in=self.fan_in,
            fan_out=self.fan_out,
            scheme=scheme.name if scheme else None,
            default_scheme=self.default.name if self.default else None,
            expected_std=scheme.std if scheme else None,
            expected_bounds=bounds,
            measured_std=stats.std,
            measured_bounds=measured,
            verdict=verdict,
            reason=reason,
        )


def _is_float(dtype: str) -> bool:
    return "float" in dtype


def _unchecked_reason(tensor: NamedTensor, stats: TensorStats) -> str:
    if stats.finite == 0:
        return "no values"
    if tensor.role is Role.BUFFER:
        return "a buffer, not a trained weight"
    return f"{tensor.dtype} values are not drawn by an initializer"


def _expects_random(tensor: NamedTensor, layer: Layer) -> bool:
    bias = tensor.role is Role.BIAS or leaf_name(tensor.name).endswith("bias")
    return len(tensor.shape) >= 2 and not bias and layer.kind not in (LayerKind.NORM, LayerKind.OTHER)


def _check_constant(base: _Finding, value: float) -> InitFinding:
    scheme = constant_scheme(value)
    if _expects_random(base.tensor, base.layer):
        what = "all zeros" if value == 0.0 else f"every value is {value:.6g}"
        return base.make(
            scheme,
            Verdict.BROKEN,
            f"{what}, but every common scheme draws this weight at random, so all its units compute the same output",
        )
    if base.default is not None and base.default.distribution is Distribution.CONSTANT:
        if base.default.mean == value:
            return base.make(scheme, Verdict.CONSISTENT, "")
        return base.make(scheme, Verdict.SUSPICIOUS, f"the layer's default is {base.default.name}")
    if value == 0.0:
        return base.make(scheme, Verdict.CONSISTENT, "")
    return base.make(scheme, Verdict.SUSPICIOUS, f"every value is {value:.6g}; biases usually start at zero")


def _candidates(
    tensor: NamedTensor,
    layer: Layer,
    default: Scheme | None,
    shapes: Mapping[str, tuple[int, ...]],
    values: Any,
) -> list[Scheme]:
    """List the schemes to compare with, the layer's default first so that it wins ties."""
    schemes = [default] if default is not None and default.distribution is not Distribution.CONSTANT else []
    if len(tensor.shape) >= 2:
        gain = _orthogonal_gain(values, tensor.shape, layer) if values is not None else None
        if gain is not None:
            return [orthogonal_scheme(tensor.shape, layer.layout, gain)]
        schemes += random_schemes(tensor.shape, layer.layout)
        if layer.kind is LayerKind.EMBEDDING or (layer.inferred and len(tensor.shape) == 2):
            schemes += embedding_schemes()  # a 2-D tensor of a checkpoint may be an embedding
    elif layer.kind in (LayerKind.DENSE, LayerKind.CONV, LayerKind.ATTENTION):
        weight = owner_weight_shape(tensor.name, shapes)
        if weight is not None and len(weight) >= 2 and not schemes and layer.layout is Layout.TORCH:
            schemes.append(torch_default(fans(weight, layer.layout)[0]))
    unique = {scheme.name: scheme for scheme in reversed(schemes)}  # the first of equal names wins
    return [scheme for scheme in schemes if unique[scheme.name] is scheme]


def _orthogonal_gain(values: Any, shape: tuple[int, ...], layer: Layer) -> float | None:
    """Return the gain if the tensor, flattened as `orthogonal_` does, has orthogonal rows or columns."""
    rows, cols = orthogonal_matrix_shape(shape, layer.layout)
    if rows * cols * min(rows, cols) > _GRAM_MAX_WORK:
        return None  # NOTE: large orthogonal kernels are then matched by std only, like LeCun normal.
    matrix = as_numpy(values).reshape(rows, cols)
    if rows > cols:
        matrix = matrix.T
    # A cheap test on the first 8 vectors rejects most tensors before the whole Gram matrix.
    for part in (matrix[:8], matrix):
        part = np.asarray(part, dtype=np.float64)
        gram = part @ part.T
        scale = float(np.mean(np.diag(gram)))
        if scale <= 0.0:
            return None
        if np.max(np.abs(gram / scale - np.eye(len(part)))) > _ORTHOGONAL_TOLERANCE:
            return None
    return math.sqrt(scale)


def _distance(scheme: Scheme, stats: TensorStats) -> float:
    """Measure how far the values are from a scheme: log std ratio plus log spread ratio."""
    std = stats.std or 0.0
    distance = abs(math.log(std / scheme.std))
    if stats.count >= _SHAPE_MIN_COUNT and scheme.distribution is not Distribution.CONSTANT:
        spread = _max_deviation(stats) / std
        expected = scheme.typical_max_deviation(stats.finite) / scheme.std
        distance += abs(math.log(spread / expected))
    return distance


def _beyond_bound(scheme: Scheme, stats: TensorStats) -> bool:
    """Tell whether a value lies outside the scheme's hard bound (uniform, truncated normal)."""
    if scheme.bound is None:
        return False
    reach = max((stats.max or 0.0) - scheme.mean, scheme.mean - (stats.min or 0.0))
    return reach > scheme.bound * (1.0 + 1e-6)


def _equivalents(ranked: Sequence[Scheme]) -> list[str]:
    """Other schemes that draw the same distribution for this shape.

    Kaiming fan_out (relu) equals LeCun fan_in when fan_out = 2 fan_in, for example.
    """
    best = ranked[0]
    return [
        s.name
        for s in ranked[1:]
        if s.distribution is best.distribution and math.isclose(s.std, best.std, rel_tol=1e-9)
    ]


def _max_deviation(stats: TensorStats) -> float:
    mean = stats.mean or 0.0
    return max((stats.max or 0.0) - mean, mean - (stats.min or 0.0))


def _noise(stats: TensorStats) -> float:
    """Three standard errors of a sample std, relative: about 3 / sqrt(2 n) for normal draws."""
    return 3.0 / math.sqrt(2.0 * stats.finite)


def _std_within_noise(scheme: Scheme, stats: TensorStats) -> bool:
    return abs(math.log((stats.std or 0.0) / scheme.std)) <= math.log(STD_SLACK) + _noise(stats)


def _judge(base: _Finding, closest: Scheme, equivalents: Sequence[str]) -> InitFinding:
    stats = base.stats
    std = stats.std or 0.0
    ratio = std / closest.std
    noise = _noise(stats)
    if ratio > BROKEN_FACTOR or ratio < 1.0 / BROKEN_FACTOR:
        return base.make(
            closest,
            Verdict.BROKEN,
            f"std is {ratio:.3g}x the closest scheme's, more than {BROKEN_FACTOR:g}x off every common scheme",
        )
    problems = []
    if not _std_within_noise(closest, stats):
        problems.append(f"std is {ratio:.3g}x the closest scheme's")
    mean = stats.mean or 0.0
    if abs(mean) > max(0.2 * std, 6.0 * std / math.sqrt(stats.finite)):
        problems.append(f"mean {mean:.3g} is far from 0 ({abs(mean) / std:.2g} stds)")
    if closest.bound is not None and _max_deviation(stats) > closest.bound * (1.0 + noise):
        reach = _max_deviation(stats)
        problems.append(f"values reach {reach:.3g} from the mean, beyond the scheme's bound {closest.bound:.3g}")
    if closest.fan_mode == "fan_out" and base.layer.kind is LayerKind.DENSE and base.fan_in != base.fan_out:
        problems.append(
            "matches fan_out mode: usual for conv kernels (torchvision's ResNet), but on a dense "
            "layer often a swap of fan_in and fan_out (PyTorch stores (out, in), Keras (in, out))"
        )
    if problems and base.default is not None and base.default.name != closest.name:
        # The closest scheme can hide a gross scaling error, so report the ratio to the layer's default.
        default_ratio = std / base.default.std
        if default_ratio >= DEFAULT_NOTE_FACTOR or default_ratio <= 1.0 / DEFAULT_NOTE_FACTOR:
            problems.append(f"std is {default_ratio:.3g}x the layer's default ({base.default.name})")
    if problems:
        return base.make(closest, Verdict.SUSPICIOUS, "; ".join(problems))
    notes = []
    if equivalents:
        notes.append(f"same distribution as {', '.join(equivalents)}")
    if base.default is not None and base.default.name != closest.name and base.default.name not in equivalents:
        notes.append(f"not the {base.layer.label.split(' ')[0]} default ({base.default.name})")
    return base.make(closest, Verdict.CONSISTENT, "; ".join(notes))


def check_tensors(items: Iterable[tuple[NamedTensor, TensorStats, Any]]) -> InitReport:
    """Check (tensor, stats, values) triples; `values` may be None (no orthogonality test)."""
    items = list(items)
    shapes = {tensor.name: tensor.shape for tensor, _, _ in items}
    return InitReport([check_tensor(tensor, stats, shapes, values) for tensor, stats, values in items])


def check_named_tensors(
    tensors: Iterable[NamedTensor],
    select: Callable[[str], bool] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> InitReport:
    """Load and check the tensors `select` accepts, one at a time.

    A bias finds its weight's fan-in through `shapes`, the shape of every tensor by
    name. Without it the stream is listed first to collect them. That suits live
    models, but not readers that release a shard once the stream has moved past it.
    """
    if shapes is None:
        tensors = list(tensors)
        shapes = {tensor.name: tensor.shape for tensor in tensors}
    report = InitReport()
    for tensor in tensors:
        if select is not None and not select(tensor.name):
            continue
        try:
            values = tensor.load()
            stats = compute_stats(values, first=0)
        except _TENSOR_ERRORS as error:
            report.findings.append(_unreadable(tensor, str(error) or type(error).__name__))
            continue
        report.findings.append(check_tensor(tensor, stats, shapes, values))
    return report


def _unreadable(tensor: NamedTensor, reason: str) -> InitFinding:
    return InitFinding(
        name=tensor.name,
        shape=tensor.shape,
        layer=tensor.layer_type or "",
        layer_inferred=False,
        fan_in=None,
        fan_out=None,
        scheme=None,
        default_scheme=None,
        expected_std=None,
        expected_bounds=None,
        measured_std=None,
        measured_bounds=None,
        verdict=Verdict.UNCHECKED,
        reason=f"not readable: {reason}",
        error=reason,
    )


def check_init(model: Any, *, include_buffers: bool = False) -> InitReport:
    """Check the initialization of a live model, state dict or mapping of arrays."""
    return check_named_tensors(named_tensors(model, WalkOptions(include_buffers=include_buffers)))


def check_checkpoint(
    path: str | os.PathLike[str],
    load_options: LoadOptions | None = None,
    select: Callable[[str], bool] | None = None,
) -> InitReport:
    """Check the tensors of a checkpoint file; layers are inferred from names and shapes."""
    from tbweights.checkpoints import read_checkpoint

    # Two passes: the first reads shapes only, the second loads one tensor at a time,
    # so sharded readers never need a shard they have already released.
    shapes = {tensor.name: tensor.shape for tensor in read_checkpoint(path, load_options)}
    return check_named_tensors(read_checkpoint(path, load_options), select, shapes)

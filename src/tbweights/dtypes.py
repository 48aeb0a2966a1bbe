"""Turn any tensor into a NumPy array the statistics kernel can summarize.

The kernel reads real numbers: floats (including the `ml_dtypes` floats NumPy
lacks), integers and bool. This module brings everything else to that form, or
raises a `TensorError` that gives the reason it cannot:

- complex: the statistics and histogram are those of the magnitude |z|; the
  first values stay complex (`complex_magnitude`, `first_source`);
- torch quantized tensors are dequantized, sparse tensors made dense (so their
  implicit zeros are counted), tensors on other devices copied to the CPU;
- torch `complex32` is widened to `complex64`, dtypes without a NumPy twin are
  read through a same-width integer view;
- `ml_dtypes` int2, int4, uint2 and uint4 arrays are widened to int8 or uint8;
- a replicated `DTensor` is read from this rank's copy;
- tensors on the `meta` device, uninitialized lazy parameters, sharded
  `DTensor`s, nested tensors and packed 4-bit floats have no values here to
  summarize and raise `TensorError`.

The rules are listed for users in `docs/dtypes.md`.
"""

from __future__ import annotations

import sys
from typing import Any

import ml_dtypes
import numpy as np

from tbweights.errors import TensorError

DEFAULT_NAME = "tensor"

# ml_dtypes floats that NumPy lacks, upcast chunk by chunk to float32.
SMALL_FLOATS = frozenset(
    np.dtype(getattr(ml_dtypes, name))
    for name in (
        "bfloat16",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        # Newer ml_dtypes releases add more 8-, 6- and 4-bit floats.
        "float8_e4m3",
        "float8_e3m4",
        "float8_e4m3b11fnuz",
        "float8_e8m0fnu",
        "float6_e2m3fn",
        "float6_e3m2fn",
        "float4_e2m1fn",
    )
    if hasattr(ml_dtypes, name)
) | {np.dtype(np.float16)}

# ml_dtypes' sub-byte integers (JAX's jnp.int4, ...), stored one value per byte and
# widened to the 8-bit integer of the same sign for the kernel.
SMALL_INTS = {
    np.dtype(getattr(ml_dtypes, name)): np.dtype(np.int8 if name.startswith("int") else np.uint8)
    for name in ("int2", "int4", "uint2", "uint4")
    if hasattr(ml_dtypes, name)
}

# torch dtypes NumPy lacks, read through a same-width integer view: (torch name,
# integer view, ml_dtypes name). Looked up by name so older torch and ml_dtypes
# releases, which lack some of them, still work.
_TORCH_VIEWS = (
    ("bfloat16", "int16", "bfloat16"),
    ("float8_e4m3fn", "uint8", "float8_e4m3fn"),
    ("float8_e5m2", "uint8", "float8_e5m2"),
    ("float8_e4m3fnuz", "uint8", "float8_e4m3fnuz"),
    ("float8_e5m2fnuz", "uint8", "float8_e5m2fnuz"),
    ("float8_e8m0fnu", "uint8", "float8_e8m0fnu"),
)


def is_summarizable(dtype: np.dtype) -> bool:
    """Tell whether the kernel reads `dtype` directly (real floats, integers, bool)."""
    return dtype.kind in "fiub" or dtype in SMALL_FLOATS


def check_numpy(array: np.ndarray, name: str = DEFAULT_NAME) -> None:
    """Raise `TensorError` for NumPy dtypes that hold no numbers to summarize."""
    if is_summarizable(array.dtype) or array.dtype.kind == "c":
        return
    raise TensorError(
        name,
        f"values of dtype {array.dtype} are not numbers; tbweights summarizes float, integer, bool and complex tensors",
        dtype=str(array.dtype),
        shape=tuple(array.shape),
    )


def complex_magnitude(flat: np.ndarray) -> np.ndarray:
    """|z| of a complex array in the matching real precision, else `flat` unchanged.

    NOTE: this is one copy of half the input's size; the kernel's chunked
    upcasting does not apply to complex input.
    """
    if flat.dtype.kind != "c":
        return flat
    magnitude: np.ndarray = np.abs(flat)
    return magnitude


def to_numpy(values: Any, name: str = DEFAULT_NAME) -> np.ndarray:
    """A NumPy array of `values` (NumPy array, torch tensor or array-like) that the
    kernel accepts: real or complex numbers; `TensorError` otherwise."""
    if isinstance(values, np.ndarray):
        array = values
    else:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(values, torch.Tensor):
            array = torch_to_numpy(values, name)
        else:
            array = np.asarray(values)
    widened = SMALL_INTS.get(array.dtype)
    if widened is not None:
        array = array.astype(widened)  # one copy of the same size, since ml_dtypes stores a value per byte
    check_numpy(array, name)
    return array


def torch_to_numpy(tensor: Any, name: str = DEFAULT_NAME) -> np.ndarray:
    """A NumPy view of a torch tensor, or a copy where its device, layout or dtype
    forces one (other devices, quantized, sparse, non-contiguous, complex32)."""
    torch = sys.modules["torch"]
    tensor = plain_torch_tensor(tensor, name)
    view = _torch_view(torch, tensor.dtype)
    if view is not None:
        integer_type, numpy_type = view
        viewed: np.ndarray = tensor.view(integer_type).numpy().view(numpy_type)
        return viewed
    try:
        array: np.ndarray = tensor.numpy()
    except (TypeError, RuntimeError) as error:
        raise TensorError(
            name,
            f"NumPy cannot hold dtype {_torch_dtype_name(tensor.dtype)} ({error})",
            dtype=_torch_dtype_name(tensor.dtype),
            shape=tuple(tensor.shape),
        ) from None
    return array


def plain_torch_tensor(tensor: Any, name: str = DEFAULT_NAME) -> Any:
    """Return a detached, dense, contiguous CPU tensor with the same values, or raise `TensorError`."""
    torch = sys.modules["torch"]
    _reject_valueless(torch, tensor, name)
    tensor = tensor.detach()
    tensor = _local_dtensor(tensor, name)
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype == torch.complex32:
        tensor = tensor.to(torch.complex64)
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    return tensor


def _reject_valueless(torch: Any, tensor: Any, name: str) -> None:
    """Raise `TensorError` for tensors that hold no values this process can read."""
    if torch.nn.parameter.is_lazy(tensor):
        raise TensorError(
            name,
            "is an uninitialized lazy parameter and has no shape or values yet; "
            "run one forward pass before logging the model",
        )
    dtype = _torch_dtype_name(tensor.dtype)
    if getattr(tensor, "is_nested", False):  # before .shape, which a nested tensor raises on
        raise TensorError(name, "is a nested tensor; log its components one by one", dtype=dtype)
    shape = tuple(tensor.shape)
    if tensor.device.type == "meta":
        raise TensorError(
            name,
            "is on the meta device and has no values (the model was built without "
            "allocating memory); load real weights, e.g. module.to_empty(device='cpu') "
            "then load_state_dict, before logging",
            dtype=dtype,
            shape=shape,
        )
    if dtype.startswith("float4_"):
        raise TensorError(
            name,
            "packs two 4-bit floats per element, which torch cannot upcast; unpack it to a wider dtype first",
            dtype=dtype,
            shape=shape,
        )


def _local_dtensor(tensor: Any, name: str) -> Any:
    """The full value of a replicated (or single-rank) `DTensor`; `TensorError` for a
    sharded one."""
    distributed = sys.modules.get("torch.distributed.tensor")
    dtensor_type = getattr(distributed, "DTensor", None)
    if dtensor_type is None or not isinstance(tensor, dtensor_type):
        return tensor
    if tensor.device_mesh.size() == 1 or all(p.is_replicate() for p in tensor.placements):
        return tensor.to_local()
    # Gathering a sharded DTensor (`full_tensor()`) is a collective that every rank
    # must join, so doing it here would hang a job that logs on one rank only.
    raise TensorError(
        name,
        f"is a DTensor sharded as {tuple(tensor.placements)}; log the model with "
        "tbweights.distributed.log_weights_distributed called on every rank, which "
        "summarizes each shard where it lives",
        dtype=_torch_dtype_name(tensor.dtype),
        shape=tuple(tensor.shape),
    )


def _torch_view(torch: Any, dtype: Any) -> tuple[Any, Any] | None:
    for torch_name, integer_name, numpy_name in _TORCH_VIEWS:
        if dtype == getattr(torch, torch_name, None) and hasattr(ml_dtypes, numpy_name):
            return getattr(torch, integer_name), getattr(ml_dtypes, numpy_name)
    return None


def _torch_dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")

"""Find the model weights inside a training checkpoint's nested dictionaries.

Training scripts save the weights beside everything else: `{"epoch": 3,
"state_dict": {...}, "optimizer": {...}}`, Lightning's `state_dict` and
`optimizer_states`, `{"model": {...}}`, DataParallel's `module.` prefix. The
weights subtree is taken when one of the usual keys holds it; optimizer and
scheduler state are left out unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

# Keys under which training loops store the model's weights, in order of preference.
WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
OPTIMIZER_KEYS = frozenset(
    {
        "optimizer",
        "optimizers",
        "optimizer_states",
        "optimizer_state_dict",
        "optim",
        "opt",
        "scheduler",
        "schedulers",
        "lr_scheduler",
        "lr_schedulers",
        "scaler",
        "grad_scaler",
    }
)

# Lightning's training-loop and callback state (such as ModelCheckpoint's best score),
# left out even with include_optimizer.
BOOKKEEPING_KEYS = frozenset({"callbacks", "loops"})


def flatten(tree: Any, is_tensor: Callable[[Any], bool], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, tensor) for every tensor leaf of nested mappings, lists and tuples."""
    if is_tensor(tree):
        yield prefix.rstrip("."), tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from flatten(value, is_tensor, f"{prefix}{key}.")
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from flatten(value, is_tensor, f"{prefix}{index}.")


def _is_state_dict(tree: Any, is_tensor: Callable[[Any], bool]) -> bool:
    return isinstance(tree, Mapping) and bool(tree) and any(is_tensor(v) for v in tree.values())


def _find_weights(tree: Mapping[str, Any], is_tensor: Callable[[Any], bool]) -> tuple[str, Any] | None:
    for key in WEIGHT_KEYS:
        sub = tree.get(key)
        if _is_state_dict(sub, is_tensor):
            return key, sub
        if isinstance(sub, Mapping):  # {"model": {"state_dict": {...}}}
            inner = _find_weights(sub, is_tensor)
            if inner is not None:
                return f"{key}.{inner[0]}", inner[1]
    return None


def _strip_module_prefix(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Drop DataParallel's `module.` when every name carries it."""
    if pairs and all(name.startswith("module.") for name, _ in pairs):
        return [(name[len("module.") :], value) for name, value in pairs]
    return pairs


def weight_tensors(
    tree: Any, is_tensor: Callable[[Any], bool], include_optimizer: bool = False
) -> list[tuple[str, Any]]:
    """The named weight tensors of a loaded checkpoint object."""
    if not isinstance(tree, Mapping):
        return list(flatten(tree, is_tensor, "tensor." if is_tensor(tree) else ""))
    found = (
        None
        if _is_state_dict(tree, is_tensor) and not _only_nested(tree, is_tensor)
        else _find_weights(tree, is_tensor)
    )
    if found is not None:
        key, sub = found
        pairs = _strip_module_prefix(list(flatten(sub, is_tensor)))
        if include_optimizer:
            pairs += [
                (n, v)
                for n, v in flatten(tree, is_tensor)
                if not n.startswith(key + ".") and n.split(".", 1)[0] not in BOOKKEEPING_KEYS
            ]
        return pairs
    pairs = []
    for key, value in tree.items():
        if str(key) in OPTIMIZER_KEYS and not include_optimizer:
            continue
        pairs.extend(flatten(value, is_tensor, f"{key}."))
    return _strip_module_prefix(pairs)


def _only_nested(tree: Mapping[str, Any], is_tensor: Callable[[Any], bool]) -> bool:
    """True when the tensors at this level are bookkeeping beside a nested weights key."""
    return any(key in tree and isinstance(tree[key], Mapping) for key in WEIGHT_KEYS)

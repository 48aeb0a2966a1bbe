"""Readable names for the entries of a TensorFlow object-based checkpoint.

A TF2 checkpoint stores each variable once, under the first path that a
breadth-first walk of the saved objects reached. That path is often not the
model's: with a Keras 3 model, `tf.train.Checkpoint(model=m, optimizer=o)` saves
the kernels under `optimizer/_trainable_variables/0/...` because the optimizer
holds them too. The `_CHECKPOINTABLE_OBJECT_GRAPH` entry (a serialized
`TrackableObjectGraph`) records every object, its children and each variable's
own name (`full_name`, which is `dense_1/kernel` for Keras 3 variables), so the
names here come from that graph:

- an entry is an optimizer entry when every path to it passes through an
  optimizer object, or when it is an optimizer slot (`.OPTIMIZER_SLOT`);
- a model variable is named by its `full_name` when those names are unique
  across the checkpoint, and by its object path otherwise (several unnamed
  `tf.Variable`s all have the `full_name` `Variable`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tensorboard.compat.proto import trackable_object_graph_pb2

from tbweights.checkpoints.keras_names import keras_role
from tbweights.tensors import Role

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
SLOT_MARKER = "/.OPTIMIZER_SLOT/"
GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
SAVE_COUNTER = "save_counter"

# Child names that mark an optimizer object: `_iterations` (Keras 3 and the
# tf_keras optimizers of TF 2.11+), `iter` beside `learning_rate` (tf_keras
# OptimizerV2).
_OPTIMIZER_CHILDREN = ("_iterations",)
_LEGACY_OPTIMIZER_CHILDREN = ("iter", "learning_rate")

@dataclass(frozen=True)
class EntryName:
    """Presentation of one checkpoint key: its name, role and other names."""

    name: str
    role: Role
    aliases: tuple[str, ...] = ()
    bookkeeping: bool = False


def strip_key(key: str) -> str:
    """`dense/kernel/.ATTRIBUTES/VARIABLE_VALUE` -> `dense/kernel`."""
    return key.removesuffix(VALUE_SUFFIX)


def _is_optimizer(node: trackable_object_graph_pb2.TrackableObjectGraph.TrackableObject) -> bool:
    if len(node.slot_variables) > 0:
        return True
    children = {child.local_name for child in node.children}
    if any(name in children for name in _OPTIMIZER_CHILDREN):
        return True
    return all(name in children for name in _LEGACY_OPTIMIZER_CHILDREN)


def _paths(
    graph: trackable_object_graph_pb2.TrackableObjectGraph, blocked: set[int]
) -> dict[int, tuple[str, ...]]:
    """Find the first breadth-first path from the root to each node, not entering `blocked` nodes."""
    paths: dict[int, tuple[str, ...]] = {0: ()}
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        if node_id in blocked and node_id != 0:
            continue
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths and child.node_id < len(graph.nodes):
                paths[child.node_id] = paths[node_id] + (child.local_name,)
                queue.append(child.node_id)
    return paths


def names_from_graph(serialized: bytes, shapes: dict[str, tuple[int, ...]]) -> dict[str, EntryName]:
    """Map each checkpoint key that the object graph describes to its readable name.

    `shapes` maps checkpoint keys to tensor shapes (used to guess roles).
    Raises `google.protobuf.message.DecodeError` when `serialized` is not a graph.
    """
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(serialized)
    if not graph.nodes:
        return {}
    optimizers = {i for i, node in enumerate(graph.nodes) if i != 0 and _is_optimizer(node)}
    model_paths = _paths(graph, blocked=optimizers)
    all_paths = _paths(graph, blocked=set())
    slot_nodes = {
        slot.slot_variable_node_id for i in optimizers for slot in graph.nodes[i].slot_variables
    }

    # (checkpoint key, object path, full name, kind) for every variable value.
    found: list[tuple[str, str, str, str]] = []
    for node_id, node in enumerate(graph.nodes):
        for attribute in node.attributes:
            key = attribute.checkpoint_key
            if not key.endswith(VALUE_SUFFIX):
                continue
            if node_id in model_paths and node_id not in slot_nodes and SLOT_MARKER not in key:
                path = "/".join(model_paths[node_id])
                kind = "counter" if model_paths[node_id] == (SAVE_COUNTER,) else "model"
            else:
                path = "/".join(all_paths.get(node_id, ())) or strip_key(key)
                kind = "optimizer"
            found.append((key, path, attribute.full_name.split(":", 1)[0], kind))

    full_names = [full for _, _, full, _ in found]
    use_full_names = all(full_names) and len(set(full_names)) == len(full_names)
    names: dict[str, EntryName] = {}
    for key, path, full, kind in found:
        name = full if use_full_names else path
        aliases = tuple(dict.fromkeys(a for a in (strip_key(key), path, full) if a and a != name))
        ndim = len(shapes.get(key, ()))
        if kind == "model":
            names[key] = EntryName(name, keras_role(name, ndim), aliases)
        elif kind == "counter":
            names[key] = EntryName(name, Role.OTHER, aliases, bookkeeping=True)
        else:
            names[key] = EntryName(name, Role.OPTIMIZER, aliases, bookkeeping=True)
    return names


# Slot-name suffixes that TF1 optimizers add to a variable's name, and TF1
# bookkeeping variables; used only for checkpoints without an object graph.
_TF1_SLOT_SUFFIXES = ("/Adam", "/Adam_1", "/Momentum", "/RMSProp", "/RMSProp_1", "/Adagrad", "/Ftrl", "/Ftrl_1")
_TF1_BOOKKEEPING = frozenset({"global_step", "beta1_power", "beta2_power"})


def name_without_graph(key: str, ndim: int) -> EntryName:
    """Name a key of a name-based (TF1 `Saver`) checkpoint, which has no object graph."""
    # NOTE: the optimizer detection here recognises only the slot names of
    # the built-in TF1 optimizers listed above.
    if key in _TF1_BOOKKEEPING:
        return EntryName(key, Role.OTHER, bookkeeping=True)
    if key.endswith(_TF1_SLOT_SUFFIXES):
        return EntryName(key, Role.OPTIMIZER, bookkeeping=True)
    return EntryName(key, keras_role(key, ndim))

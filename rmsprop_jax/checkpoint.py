"""Orbax checkpoints of params and optimizer state that refuse to restore into the wrong layout.

Orbax restores into a target's shapes and shardings, and reports a different tree
structure or shape. It casts a different dtype silently: a float32 state restores into
a ``state_dtype="bfloat16"`` target without a word. :func:`restore` compares the saved
tree with the target first (structure, shape and dtype of every leaf) and raises a
``ValueError`` naming each mismatch. Needs ``orbax-checkpoint`` (not a core dependency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np


def _key(path: tuple[Any, ...]) -> str:
    """A leaf's path as ``a/b/0``, the same for a NamedTuple field and a dict key of that name."""
    parts = []
    for entry in path:
        for attribute in ("name", "key", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _leaves(tree: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_key(path): (tuple(leaf.shape), np.dtype(leaf.dtype)) for path, leaf in flat}


def mismatches(saved: Any, target: Any) -> list[str]:
    """Every difference between two trees of arrays (or shape-dtype structs / metadata).

    Returns:
      One line per leaf present in only one tree, or present in both with another
      shape or dtype; empty when they match.
    """
    ours, theirs = _leaves(saved), _leaves(target)
    lines = [f"{key}: in the checkpoint, not in the target" for key in sorted(ours.keys() - theirs.keys())]
    lines += [f"{key}: in the target, not in the checkpoint" for key in sorted(theirs.keys() - ours.keys())]
    for key in sorted(ours.keys() & theirs.keys()):
        (shape, dtype), (want_shape, want_dtype) = ours[key], theirs[key]
        if shape != want_shape:
            lines.append(f"{key}: shape {shape} in the checkpoint, {want_shape} in the target")
        if dtype != want_dtype:
            lines.append(f"{key}: dtype {dtype} in the checkpoint, {want_dtype} in the target")
    return lines


def save(path: str | Path, item: Any) -> None:
    """Saves a pytree of arrays (params, optimizer state, or both) with Orbax; waits for it."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).resolve(), item)
    checkpointer.wait_until_finished()


def restore(path: str | Path, target: Any) -> Any:
    """Restores ``path`` into ``target``'s tree, shapes, dtypes and shardings.

    Args:
      path: A directory written by :func:`save` (or Orbax's ``StandardCheckpointer``).
      target: A pytree like the saved one: arrays or ``jax.ShapeDtypeStruct`` leaves,
        whose shardings the restored arrays take (so a sharded state restores sharded).

    Returns:
      The restored pytree.

    Raises:
      ValueError: When the saved tree differs from ``target`` in structure, in a
        leaf's shape or in a leaf's dtype (for example another variant, another
        preset, or another ``state_dtype``); the message lists every difference.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> import rmsprop_jax
      >>> from rmsprop_jax import checkpoint
      >>> tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9)
      >>> state = tx.init({"w": jnp.ones(3)})
      >>> directory = tempfile.mkdtemp() + "/state"
      >>> checkpoint.save(directory, state)
      >>> restored = checkpoint.restore(directory, state)
      >>> checkpoint.restore(directory, rmsprop_jax.rmsprop(1e-3).init({"w": jnp.ones(3)}))
      Traceback (most recent call last):
      ...
      ValueError: the checkpoint at ... does not match the target:
        trace/w: in the checkpoint, not in the target
    """
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    checkpointer = ocp.StandardCheckpointer()
    saved = checkpointer.metadata(path).item_metadata
    problems = mismatches(saved, target)
    if problems:
        raise ValueError(f"the checkpoint at {path} does not match the target:\n  " + "\n  ".join(problems))
    return checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, target))

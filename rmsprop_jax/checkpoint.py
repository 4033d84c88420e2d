"""Orbax checkpoints of params and optimizer state that refuse to restore into the wrong layout.

Orbax restores into a target's shapes and shardings, and reports a different tree
structure or shape. It casts a different dtype silently: a float32 state restores into
a ``state_dtype="bfloat16"`` target without a word. :func:`restore` compares the saved
tree with the target first (structure, shape and dtype of every leaf) and raises a
``ValueError`` naming each mismatch. Needs ``orbax-checkpoint`` (not a core dependency;
it is imported only when a function here runs).

:func:`save` writes one checkpoint to one new directory. For a run's step-numbered
checkpoints (resume from the latest, keep the last N) use Orbax's own
``orbax.checkpoint.CheckpointManager`` and hand it to :func:`restore`, which then
restores its latest step (or ``step=``) with the same checks.
"""

from __future__ import annotations

__all__ = ["mismatches", "restore", "save"]

import json
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from rmsprop_jax import _layouts as layouts
from rmsprop_jax import _storage_kinds as kinds

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


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


def _shape_and_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """An array's (or array metadata's) shape and dtype; a Python number's as Orbax saves it."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    return (), np.asarray(leaf).dtype


def _leaves(tree: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_key(path): _shape_and_dtype(leaf) for path, leaf in flat}


def _check_savable(item: Any) -> None:
    """Refuses leaves that Orbax cannot restore as they were: only arrays and real numbers go in."""
    flat, _ = jax.tree_util.tree_flatten_with_path(item)
    for path, leaf in flat:
        is_array = isinstance(leaf, (jax.Array, np.ndarray, np.generic))
        is_number = isinstance(leaf, numbers.Real)
        if not (is_array or is_number):
            raise ValueError(
                f"cannot checkpoint leaf {_key(path) or '<root>'}: a {type(leaf).__name__}, not an array or a "
                "real number (keep only arrays and numbers in the tree; store other data beside the checkpoint)"
            )


def mismatches(saved: Any, target: Any) -> list[str]:
    """Every difference between two trees of arrays (or shape-dtype structs / metadata).

    Returns:
      One line per leaf present in only one tree, or present in both with another
      shape or dtype; empty when they match.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> from rmsprop_jax import checkpoint
      >>> params = {"w": jnp.ones(3)}
      >>> float32 = rmsprop_jax.rmsprop(1e-3).init(params)
      >>> bfloat16 = rmsprop_jax.rmsprop(1e-3, state_dtype="bfloat16").init(params)
      >>> checkpoint.mismatches(float32, bfloat16)
      ['count: in the target, not in the checkpoint', 'nu/w: dtype float32 in the checkpoint, bfloat16 in the target']
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
    """Saves a pytree of arrays and numbers (params, optimizer state, a step) with Orbax; waits for it.

    Args:
      path: A directory that does not exist yet; it is created.
      item: A pytree whose leaves are arrays (sharded ones included) or real
        Python or numpy numbers; :func:`restore` gives them back as saved.

    Raises:
      ValueError: ``path`` exists already (one checkpoint per directory: for a
        run's step-numbered checkpoints use ``orbax.checkpoint.CheckpointManager``),
        or a leaf is neither an array nor a number (the message names it).

    Example:
      >>> import tempfile
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> from rmsprop_jax import checkpoint
      >>> params = {"w": jnp.ones(3)}
      >>> tree = {"params": params, "opt_state": rmsprop_jax.rmsprop(1e-3).init(params), "step": 100}
      >>> directory = tempfile.mkdtemp() + "/step_100"
      >>> checkpoint.save(directory, tree)
      >>> checkpoint.restore(directory, tree)["step"]
      100
    """
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    _check_savable(item)
    if path.exists():
        raise ValueError(
            f"cannot save to {path}: it exists already. Save each checkpoint to a new directory, or keep a "
            "run's checkpoints with orbax.checkpoint.CheckpointManager (see rmsprop_jax.checkpoint.restore)"
        )
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, item)
    checkpointer.wait_until_finished()


def _layout_differs(problem: str) -> bool:
    """Whether a mismatch line names the packed layout of ``pack_small_leaves`` (``nu/stacked/3_5``,
    ``nu/per_leaf/w``)."""
    parts = problem.split(":", 1)[0].split("/")
    names = layouts.field_names()
    return any(a in names and b is not None for a, b in zip(parts, [*parts[1:], None], strict=True))


def _storage_differs(problem: str) -> bool:
    """Whether a mismatch line is one that another ``state_dtype`` makes (8-bit codes, or a dtype)."""
    key = problem.split(":", 1)[0]
    return key.endswith(tuple(f"/{name}" for name in kinds.field_names())) or ": dtype " in problem


def _blocks_differ(problems: list[str]) -> bool:
    """Whether only 8-bit scales differ in shape: the same codes cut into other blocks (the params'
    sharding, which chooses an 8-bit leaf's blocks, changed since the save)."""
    layout_fields = tuple(f"/{name}" for name in kinds.layout_field_names())
    return bool(problems) and all(
        line.split(":", 1)[0].endswith(layout_fields) and ": shape " in line for line in problems
    )


def _checked(where: str | Path, saved: Any, target: Any) -> Any:
    """``target`` as shape-dtype structs, after refusing any mismatch with ``saved``."""
    import orbax.checkpoint as ocp

    problems = mismatches(saved, target)
    if problems:
        message = f"the checkpoint at {where} does not match the target:\n  " + "\n  ".join(problems)
        if _blocks_differ(problems):
            message += (
                "\nThe 8-bit block layout differs: the same codes, cut into other blocks. An 8-bit leaf's blocks "
                "follow its shape (and its shards, where they are split more than 8 ways or unevenly), so the "
                "checkpoint was written by an earlier version of rmsprop_jax or under another such sharding. "
                "Restore into a target built as the checkpoint's was (tx.init of params sharded as then, or "
                "jax.eval_shape of it), then move the state with rmsprop_jax.convert_state(restored_state, "
                "new_tx.init(params))."
            )
        elif any(_layout_differs(line) for line in problems):
            message += (
                "\nThe packed layout differs: the checkpoint and the target keep the optimizer state in different "
                "layouts (pack_small_leaves on in one and off in the other, or other groups). Restore into an "
                "optimizer built as the checkpoint's was (same pack_small_leaves, params and mask), then move the "
                "state with rmsprop_jax.convert_state(restored_state, new_tx.init(params))."
            )
        elif any(_storage_differs(line) for line in problems):
            message += (
                "\nThe optimizer state looks saved with another state_dtype (8-bit codes and scales, or another "
                "float dtype): restore into an optimizer built with the checkpoint's state_dtype, then move the "
                "state with rmsprop_jax.convert_state(restored_state, new_tx.init(params))."
            )
        raise ValueError(message)
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, target)


def restore(path: str | Path | ocp.CheckpointManager, target: Any, *, step: int | None = None) -> Any:
    """Restores ``path`` into ``target``'s tree, shapes, dtypes and shardings.

    Args:
      path: A directory written by :func:`save` (or Orbax's ``StandardCheckpointer``),
        or an ``orbax.checkpoint.CheckpointManager`` created with
        ``item_handlers=ocp.StandardCheckpointHandler()`` whose steps were saved
        with ``args=ocp.args.StandardSave(tree)``.
      target: A pytree like the saved one: arrays or ``jax.ShapeDtypeStruct`` leaves,
        whose shardings the restored arrays take (so a sharded state restores sharded),
        and numbers where numbers were saved.
      step: With a ``CheckpointManager``, the step to restore; default its latest.

    Returns:
      The restored pytree.

    Raises:
      ValueError: When the saved tree differs from ``target`` in structure, in a
        leaf's shape or in a leaf's dtype (for example another variant, another
        preset, another ``state_dtype``, or 8-bit blocks cut for another sharding); the
        message lists every difference and says which it is. When ``path`` holds no
        checkpoint (missing, a file, an empty directory), or a damaged one (truncated or
        corrupted files: "cannot be read"). Also when a ``CheckpointManager`` holds no
        checkpoint (or not ``step``).

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

    if isinstance(path, ocp.CheckpointManager):
        manager = path
        chosen = manager.latest_step() if step is None else step
        if chosen is None:
            raise ValueError(f"{manager.directory} holds no checkpoint yet")
        if chosen not in manager.all_steps():
            raise ValueError(
                f"{manager.directory} holds no checkpoint of step {step} (steps held: {manager.all_steps()})"
            )
        where = f"{manager.directory}, step {chosen}"
        try:
            metadata = manager.item_metadata(chosen)
        except Exception as error:
            raise _damaged(where, error) from error
        if metadata is None:  # a manager that has not saved yet cannot tell how the item was written
            raise ValueError(
                "the CheckpointManager cannot read its checkpoints' metadata: create it with "
                "item_handlers=orbax.checkpoint.StandardCheckpointHandler()"
            )
        tree = getattr(metadata, "tree", None)
        if tree is None or (not jax.tree.leaves(tree) and jax.tree.leaves(target)):
            raise _damaged(where, "its metadata is missing or unreadable")
        abstract = _checked(where, tree, target)
        try:
            return manager.restore(chosen, args=ocp.args.StandardRestore(abstract))
        except Exception as error:
            raise _damaged(where, error) from error
    if step is not None:
        raise ValueError("step= needs a CheckpointManager; a path holds a single checkpoint")
    path = Path(path).resolve()
    _check_present(path)
    checkpointer = ocp.StandardCheckpointer()
    try:
        saved = checkpointer.metadata(path).item_metadata
    except Exception as error:  # Orbax and tensorstore raise many kinds for a damaged file
        raise _damaged(path, error) from error
    if saved is None or (not jax.tree.leaves(saved) and jax.tree.leaves(target)):
        raise _damaged(path, "its metadata is missing or unreadable")
    abstract = _checked(path, saved, target)
    try:
        return checkpointer.restore(path, abstract)
    except Exception as error:
        raise _damaged(path, error) from error


def _check_present(path: Path) -> None:
    """Refuses a path that holds no checkpoint, saying which way."""
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}: the path does not exist")
    if not path.is_dir():
        raise ValueError(f"no checkpoint at {path}: it is a file, and a checkpoint is a directory")
    if not any(path.iterdir()):
        raise ValueError(f"no checkpoint at {path}: the directory is empty")
    if not (path / "_METADATA").exists():
        raise ValueError(f"no checkpoint at {path}: it holds no Orbax checkpoint (no _METADATA file)")
    try:
        json.loads((path / "_METADATA").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise _damaged(path, f"its _METADATA file is not valid JSON ({error})") from None


def _damaged(where: str | Path, error: object) -> ValueError:
    detail = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return ValueError(
        f"the checkpoint at {where} cannot be read: it is damaged or truncated ({detail.splitlines()[0][:300]}). "
        "Restore an earlier checkpoint."
    )

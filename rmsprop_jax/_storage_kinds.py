"""The registry of storage kinds: every ``state_dtype`` value's kind, in one place.

Each kind lives in its own module (:mod:`rmsprop_jax._storage_float`, :mod:`rmsprop_jax._storage_8bit`,
:mod:`rmsprop_jax._storage_4bit`) and implements :class:`rmsprop_jax._storage_protocol.StorageKind`.
Everything outside those modules asks this one: which kind a ``state_dtype`` value is, a param's
storages, the storage a stored array was kept in (read from the array: a state records nothing
else), what a kind implies for the options, and the names of its arrays (checkpoint messages, NNX).
A new kind is one more module and one more entry in :data:`KINDS` (the docs' contributing guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from rmsprop_jax._storage_4bit import FOUR_BIT_KIND
from rmsprop_jax._storage_8bit import EIGHT_BIT_KIND
from rmsprop_jax._storage_float import FLOAT
from rmsprop_jax._storage_protocol import Storage, StorageKind, Stored

KINDS: tuple[StorageKind, ...] = (FLOAT, EIGHT_BIT_KIND, FOUR_BIT_KIND)
"""Every kind; the float kind first (the default, and every other kind's fallback)."""

ResolvedStateDtype = Any
"""A validated ``state_dtype`` value: ``None``, a float dtype, or another kind's value (``"8bit"``)."""

PAIRS: tuple[type, ...] = tuple(kind.pair for kind in KINDS if kind.pair is not None)
"""The NamedTuples a stored array may be (8-bit codes and scales)."""


def resolve(argument: str, value: Any) -> ResolvedStateDtype:
    """A ``state_dtype`` value validated by its kind.

    Raises:
      ValueError: naming ``argument``, for a value no kind accepts (listing every kind's spellings), or
        one its kind refuses (float64 while ``jax_enable_x64`` is off).
    """
    for kind in KINDS:
        if kind.accepts(value):
            return kind.resolve(argument, value)
    choices = ", ".join(spelling for kind in KINDS for spelling in kind.spellings)
    raise ValueError(f"Invalid {argument} value: {value!r} ({argument} must be one of {choices})")


def kind_of(resolved: ResolvedStateDtype) -> StorageKind:
    return next(kind for kind in KINDS if kind.owns(resolved))


def rounds(resolved: ResolvedStateDtype) -> bool:
    """Whether a state of ``resolved`` rounds stochastically (and keeps a step count to key it)."""
    return kind_of(resolved).rounds(resolved)


def for_param(param: jax.Array, resolved: ResolvedStateDtype, signed: bool) -> Storage:
    """The storage of one state array of ``param`` (``signed``: ``mu`` or the momentum buffer, else ``nu``)."""
    return kind_of(resolved).for_param(param, resolved, signed)


def read(stored: Stored, signed: bool) -> Storage | None:
    """The storage a stored array was kept in, read from the array (``None`` for something else)."""
    for kind in reversed(KINDS):  # the float kind, which takes any array, last
        storage = kind.read(stored, signed)
        if storage is not None:
            return storage
    return None


def param_shaped(stored: Stored) -> Any:
    """The stored array shaped and sharded like its param (an 8-bit pair's codes)."""
    for kind in KINDS:
        if kind.pair is not None and isinstance(stored, kind.pair):
            return kind.param_shaped(stored)
    return stored


def check_options(
    resolved: ResolvedStateDtype, centered: bool, bias_correction: bool, names: Mapping[str, str]
) -> None:
    kind_of(resolved).check_options(resolved, centered, bias_correction, names)


def check_mappable(resolved: ResolvedStateDtype) -> None:
    kind_of(resolved).check_mappable(resolved)


def disagreement(
    storage: Storage, wanted: ResolvedStateDtype, path: str, chosen: str, shape: tuple[int, ...]
) -> str | None:
    """Why a leaf's stored array is not what ``wanted`` asks (the error ``update`` raises), or ``None``.
    ``wanted``'s kind may admit another kind's storage for a leaf of ``shape`` (``admits``: the 4-bit
    kind keeps 8 bits where 4 do not fit)."""
    admits = getattr(kind_of(wanted), "admits", None)
    if admits is not None and admits(storage, shape):
        return None
    for kind in KINDS:
        why = kind.disagreement(storage, wanted, path, chosen)
        if why is not None:
            return why
    return None


def reach_kinds() -> tuple[Any, ...]:
    """The kinds whose reach :func:`rmsprop_jax.state_report` reports per leaf (a column each)."""
    return tuple(kind for kind in KINDS if hasattr(kind, "reach"))


def pair_kind(value: Any) -> Any:
    """The kind whose pair ``value`` is (or NNX's mapping of one), else ``None``."""
    for kind in KINDS:
        pair = kind.pair
        if pair is None:
            continue
        if isinstance(value, pair) or (isinstance(value, Mapping) and set(value.keys()) == set(pair._fields)):
            return kind
    return None


def field_names() -> tuple[str, ...]:
    """The names of every kind's pair fields (``"codes"``, ``"scales"``): how a checkpoint path names them."""
    return tuple(name for kind in KINDS if kind.pair is not None for name in kind.pair._fields)


def layout_field_names() -> tuple[str, ...]:
    """The pair fields whose shape follows the params' sharding (8-bit scales)."""
    return tuple(kind.layout_field for kind in KINDS if kind.layout_field is not None)

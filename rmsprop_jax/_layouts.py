"""The registry of layouts: which layout plans a state, and which one a stored field is in.

Each layout lives in its own module (:mod:`rmsprop_jax._layout_per_leaf`,
:mod:`rmsprop_jax._layout_stacked`) and implements :class:`rmsprop_jax._layout_protocol.Layout`.
Everything outside those modules asks this one: the layout ``pack_small_leaves`` chooses, the
layout a field's containers say it is in (a state records nothing else), and the names the
layouts add to a state array's path (checkpoint messages).
"""

from __future__ import annotations

from typing import Any

from rmsprop_jax._layout_per_leaf import PER_LEAF
from rmsprop_jax._layout_protocol import Layout, PackingPlan

# The stacked layout, with what this module re-exports of it: the caps the options carry (DEFAULT_THRESHOLDS,
# Thresholds) and the size rule the report explains (largest_packed).
from rmsprop_jax._layout_stacked import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS
from rmsprop_jax._layout_stacked import STACKED
from rmsprop_jax._layout_stacked import Thresholds as Thresholds
from rmsprop_jax._layout_stacked import largest_packed as largest_packed

LAYOUTS: tuple[Layout, ...] = (STACKED, PER_LEAF)
"""Every layout, the one that holds any field (per leaf) last: :func:`of_field` asks them in order."""

PACKING: Layout = STACKED
"""The layout ``pack_small_leaves=True`` plans with (``state_report`` asks it why a leaf is alone)."""

UNPACKED: Layout = PER_LEAF
"""The layout of every other state (and of a plan whose groups are all single leaves)."""


def chosen(pack_small_leaves: bool) -> Layout:
    """The layout that plans a state built with ``pack_small_leaves``."""
    return PACKING if pack_small_leaves else UNPACKED


def settled(layout: Layout, plan: PackingPlan) -> Layout:
    """The layout ``plan``'s fields are written in: a plan of single leaves is per leaf, whoever made it
    (so that the plan ``init`` makes and the plan read back from its state are equal)."""
    return layout if plan.packs else UNPACKED


def of_field(field: Any) -> Layout:
    """The layout a stored field is in, from its containers."""
    return next(layout for layout in LAYOUTS if layout.holds(field))


def field_names() -> tuple[str, ...]:
    """Every name a layout's containers add to a state array's path."""
    return tuple(name for layout in LAYOUTS for name in layout.field_names)

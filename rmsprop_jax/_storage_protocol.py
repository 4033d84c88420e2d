"""What a storage of one state array is, and what a kind of storage is: the protocols.

A **storage** (:class:`Storage`) keeps one state array of one leaf: a float dtype
(:mod:`rmsprop_jax._storage_float`), or 8-bit codes with block scales
(:mod:`rmsprop_jax._storage_8bit`). The step's arithmetic (:mod:`rmsprop_jax._leaf_update`) sees
it only through this protocol: ``load`` returns the stored values in the compute dtype, ``keep``
stores a new value and returns the value the rest of the step uses. ``keep`` may be given
:class:`Bounds`: a *majorant*, an upper bound of the new value's magnitudes written in terms of the
magnitudes of what it was computed from (a lossy storage evaluates it per block, from stored scales
and fused reductions over the step's inputs, so that its encode needs no reduction over the new
value), and a *bulk*, a lower bound of the largest new magnitude in each half of a block, with the
array as stored before the step. An exact storage ignores both.

A **kind** (:class:`StorageKind`) is what a ``state_dtype`` value names: it resolves the values it
accepts, gives each param's arrays their storage, recognizes its own stored arrays (a state records
nothing else), and says what its lossiness implies for the options. The kinds are registered in
one place, :mod:`rmsprop_jax._storage_kinds`; no other module names one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from rmsprop_jax._state import Field

Stored = Any
"""One state array as the state keeps it: an array, or a kind's pair of arrays (8-bit codes and scales)."""

Scalar = float | jax.Array
"""A hyperparameter's value: a Python number, or an array (traced under ``inject_hyperparams``)."""


class Magnitudes(NamedTuple):
    """What a majorant or a bulk is written with: bounds of magnitudes, at the storage's granularity.

    For a block storage each bound is one number per block: :attr:`of_state` reads a stored
    array's block scales, :attr:`of_value` reduces an input of the step over each block (a
    reduction XLA fuses into the step where the input is one of the step's arguments). A bulk
    is written per half block (one more axis of 2), with :attr:`halves_of_state` (of the array
    being stored, as it was before the step; another array's halves are read from its loaded
    value) and :attr:`halves_of_value`, each half's largest magnitude.
    """

    of_state: Callable[[Stored], Any]
    of_value: Callable[[jax.Array], Any]
    halves_of_state: Callable[[Stored], Any]
    halves_of_value: Callable[[jax.Array], Any]


Majorant = Callable[[Magnitudes], Any]
"""An upper bound of a new state value's magnitudes, from the magnitudes of its ingredients."""

Bulk = Callable[[Magnitudes], Any]
"""A lower bound of each half block's largest new magnitude, from its ingredients' (their smaller is
at most the block's second-largest entry: one entry cannot raise it)."""


class Bounds(NamedTuple):
    """What ``keep`` may be told about a new value beyond the value itself (a block storage's scales).

    Attributes:
      majorant: An upper bound of the new value's magnitudes.
      bulk: A lower bound of each half block's largest new magnitude, or ``None``.
      previous: The array as stored before the step (the bulk's cap grows from its scale).
    """

    majorant: Majorant
    bulk: Bulk | None = None
    previous: Stored | None = None


def capped_bound(bounds: Bounds, magnitudes: Magnitudes, growth: float, headroom: float) -> Any:
    """A block storage's new scales: the majorant, capped at ``growth * old scale + headroom * bulk``
    where the bulk (the smaller of each block's halves' lower bounds) and the array before the step
    are given and the cap is not 0 (one huge entry must not push the rest of its block under the
    smallest code; a block that grows as a whole has its bulk grow with it)."""
    bound = bounds.majorant(magnitudes)
    if bounds.bulk is not None and bounds.previous is not None:
        smaller = jnp.min(bounds.bulk(magnitudes), axis=-1)
        cap = growth * magnitudes.of_state(bounds.previous) + headroom * smaller
        bound = jnp.where(cap > 0, jnp.minimum(bound, cap), bound)
    return bound


class Storage(Protocol):
    """How one state array of one leaf is kept (a frozen, hashable value: it keys compiled steps).

    Attributes:
      dtype: The dtype ``load`` returns before the cast to the compute dtype.
      name: What :func:`rmsprop_jax.state_report` prints (``"float32"``, ``"8bit tiles"``).
      packable: Whether the array stacks with others of its storage into a packed group.
      keeps_centered_variance: Whether a centered leaf's ``nu`` holds the variance itself (a lossy
        storage: the difference of two quantized averages cancels catastrophically).
      rounds: Whether ``store`` rounds stochastically (the state then keeps a step count to key it).
    """

    @property
    def dtype(self) -> jnp.dtype: ...
    @property
    def name(self) -> str: ...
    @property
    def packable(self) -> bool: ...
    @property
    def keeps_centered_variance(self) -> bool: ...
    @property
    def rounds(self) -> bool: ...

    def filled(self, param: jax.Array, fill: Scalar) -> Stored:
        """A stored array for ``param`` holding ``fill`` everywhere, sharded as ``param`` is."""
        ...

    def filled_on_host(self, param: jax.Array, fill: Scalar) -> list[tuple[Any, tuple[int, ...]]]:
        """What :meth:`filled` holds, as (one entry's value, shape) per array (computed once)."""
        ...

    def assembled(self, arrays: list[jax.Array]) -> Stored:
        """The stored form of the arrays :meth:`filled_on_host` describes."""
        ...

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array: ...

    def store(self, value: jax.Array, seed: jax.Array | None) -> Stored:
        """``value`` stored afresh (rounded stochastically where ``seed`` is given and the storage rounds)."""
        ...

    def keep(self, value: jax.Array, seed: jax.Array | None, bounds: Bounds | None = None) -> tuple[Stored, jax.Array]:
        """``value`` stored, and the value the rest of the step uses."""
        ...


class StorageKind(Protocol):
    """A kind of storage, as a ``state_dtype`` value names it (registered in :mod:`rmsprop_jax._storage_kinds`).

    Attributes:
      spellings: How users write its ``state_dtype`` values, for error messages.
      pair: The NamedTuple a stored array of this kind is (``None`` where it is one array); NNX may
        rebuild it as a mapping with its field names.
      layout_field: The pair's field whose shape depends on the params' sharding (8-bit scales), if any.
    """

    @property
    def spellings(self) -> tuple[str, ...]: ...
    @property
    def pair(self) -> Any: ...
    @property
    def layout_field(self) -> str | None: ...

    def accepts(self, value: Any) -> bool:
        """Whether a ``state_dtype`` value is one of this kind's."""
        ...

    def resolve(self, argument: str, value: Any) -> Any:
        """The value validated (raising ``ValueError`` naming ``argument``)."""
        ...

    def owns(self, resolved: Any) -> bool:
        """Whether a resolved value is this kind's."""
        ...

    def rounds(self, resolved: Any) -> bool:
        """Whether a state of this value rounds stochastically (and keeps a step count to key it)."""
        ...

    def for_param(self, param: jax.Array, resolved: Any, signed: bool) -> Storage:
        """The storage of one state array of ``param`` (``signed``: ``mu`` or the momentum buffer)."""
        ...

    def read(self, stored: Stored, signed: bool) -> Storage | None:
        """The storage of a stored array, read from the array itself, where it is this kind's."""
        ...

    def param_shaped(self, stored: Stored) -> Any:
        """The stored array shaped (and sharded) like its param: what placement and shape rules read."""
        ...

    def check_options(self, resolved: Any, centered: bool, bias_correction: bool, names: Mapping[str, str]) -> None:
        """Refuses the options this kind cannot honour, naming each argument as ``names`` maps it."""
        ...

    def check_mappable(self, resolved: Any) -> None:
        """Refuses ``optax.tree_map_params`` where this kind's state is not shaped like the params."""
        ...

    def disagreement(self, storage: Storage, wanted: Any, path: str, chosen: str) -> str | None:
        """Why leaf ``path``'s stored array, where it is this kind's, is not what a resolved ``state_dtype``
        asks (``chosen`` names a per-leaf rule), as the error message; else ``None``."""
        ...


class LeafStorages(NamedTuple):
    """How one leaf keeps each state array (``None`` for an array the configuration lacks)."""

    nu: Storage
    mu: Storage | None
    trace: Storage | None
    nu_holds_variance: bool
    """Whether ``nu`` holds the variance ``E[g^2] - E[g]^2`` itself (centered, with a storage that
    :attr:`Storage.keeps_centered_variance`) rather than ``E[g^2]``."""

    def of(self, field: Field) -> Storage | None:
        return getattr(self, field.name)

    @property
    def rounds(self) -> bool:
        """Whether any of the leaf's arrays is rounded stochastically (and needs seeds)."""
        return any(s is not None and s.rounds for s in (self.nu, self.mu, self.trace))

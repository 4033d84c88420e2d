"""How one state array is kept: in a float dtype, or as 8-bit codes with block scales.

The step's arithmetic (:mod:`rmsprop_jax._leaf_update`) sees every state array through a
:class:`FloatStorage` or a :class:`BlockStorage`, and asks it for two things: ``load``
returns the stored values in the compute dtype, ``keep`` stores a new value and returns
the value the rest of the step uses: a float storage's value as stored (16-bit states use
their rounded value, as PyTorch's in-place bfloat16 states do), the 8-bit storage's value
before rounding (as bitsandbytes does: the codes are its unbiased rounding, computed once,
and one step uses one value). Where that is the value itself (the same array) the step
traces no floor. ``keep`` may be given a *majorant*: an upper bound of the new value's
magnitudes written in terms of the magnitudes of what it was computed from, which the
8-bit storage evaluates per block (from stored scales and fused reductions over the
step's inputs) so that its encode needs no reduction over the new value
(``benchmarks/NOTES.md``, "8-bit: block scales without a reduction": on XLA:CPU that
reduction costs more than the whole step). A float storage is exact and needs none.
With the majorant may come a *bulk*: a lower bound of the largest new magnitude in each half
of a block, written the same way, with the array as stored before the step; the 8-bit
storage then caps each block's scale at ``growth * old scale + headroom * smaller half's bulk``
(:class:`BlockStorage`), so that one huge entry cannot push the rest of its block below the
smallest code.

What each storage's lossiness implies is its own rule, here:

- :attr:`keeps_centered_variance`: the 8-bit ``nu`` of a centered leaf holds the variance
  itself (the difference of two quantized averages cancels catastrophically); float
  storages keep the frameworks' ``E[g^2]``. :func:`check_options` refuses the 8-bit state
  with centered bias correction, which would bring the subtraction back.
- :attr:`packable`: only float arrays stack into packed groups.
- :attr:`rounds`: 16-bit and 8-bit storages round stochastically (the state then keeps a
  step count to key the rounding).
- :func:`for_param` keeps complex params in a float state under ``"8bit"``;
  :func:`check_mappable` refuses ``optax.tree_map_params`` for the 8-bit state.

Which storage a leaf gets (:func:`for_param`, once, when ``init`` plans the state):

- ``state_dtype`` ``None`` or a float dtype: the policy of :mod:`rmsprop_jax._dtypes`.
- ``state_dtype="8bit"``: :class:`BlockStorage` where :func:`_storage_8bit.block_layout`
  finds blocks (every leaf of at least 4096 entries: 16 x 16 tiles or runs of up to 256
  entries, inside each shard where the sharding is visible); every other leaf keeps the
  default policy's dtype (float32, float64 for float64 params).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import core
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _storage_8bit as codec
from rmsprop_jax._dtypes import EIGHT_BIT, ResolvedStateDtype
from rmsprop_jax._storage_8bit import Quantized

if TYPE_CHECKING:
    from rmsprop_jax._state import Field

Stored = jax.Array | Quantized
"""One state array as the state keeps it."""

Scalar = float | jax.Array
"""A hyperparameter's value: a Python number, or an array (traced under ``inject_hyperparams``)."""


class Magnitudes(NamedTuple):
    """What a majorant or a bulk is written with: bounds of magnitudes, at the storage's granularity.

    For the 8-bit storage each bound is one number per block: :attr:`of_state` reads a stored
    array's block scales, :attr:`of_value` reduces an input of the step over each block (a
    reduction XLA fuses into the step where the input is one of the step's arguments). A bulk
    is written per half block (:func:`_storage_8bit.half_maxima`: one more axis of 2), with
    :attr:`halves_of_state` (of the array being stored, as it was before the step; another
    array's halves are read from its loaded value) and :attr:`halves_of_value`, each half's
    largest magnitude.
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
    """What ``keep`` may be told about a new value beyond the value itself (the 8-bit storage's block scales).

    Attributes:
      majorant: An upper bound of the new value's magnitudes.
      bulk: A lower bound of each half block's largest new magnitude, or ``None``.
      previous: The array as stored before the step (the bulk's cap grows from its scale).
    """

    majorant: Majorant
    bulk: Bulk | None = None
    previous: Stored | None = None


@dataclasses.dataclass(frozen=True)
class FloatStorage:
    """A state array kept as an array of ``dtype`` (16-bit dtypes with stochastic rounding)."""

    dtype: jnp.dtype

    packable: ClassVar[bool] = True
    keeps_centered_variance: ClassVar[bool] = False

    @property
    def rounds(self) -> bool:
        """Whether ``store`` rounds stochastically (16-bit dtypes)."""
        return dtypes.needs_stochastic_rounding(self.dtype)

    @property
    def name(self) -> str:
        return jnp.dtype(self.dtype).name

    def filled(self, param: jax.Array, fill: Scalar) -> jax.Array:
        """A state array for ``param`` holding ``fill`` everywhere, sharded as ``param`` is (see :func:`filled`)."""
        return (zeros_sharded_like(param) + fill).astype(self.dtype)

    def filled_on_host(self, param: jax.Array, fill: Scalar) -> list[tuple[Any, tuple[int, ...]]]:
        """What :meth:`filled` holds, as (one entry's value, shape) for each array (computed once)."""
        return [((jnp.zeros((), param.dtype) + fill).astype(self.dtype), param.shape)]

    def assembled(self, arrays: list[jax.Array]) -> jax.Array:
        return arrays[0]

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        assert not isinstance(stored, Quantized)
        return dtypes.cast(stored, compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> jax.Array:
        """``value`` stored afresh (16-bit dtypes stochastically rounded when ``seed`` is given)."""
        return dtypes.store(value, self.dtype, seed)

    def keep(self, value: jax.Array, seed: jax.Array | None, bounds: Bounds | None = None) -> tuple[Stored, jax.Array]:
        """``value`` stored, and its value as stored (a float storage needs no bounds)."""
        stored = self.store(value, seed)
        return stored, dtypes.cast(stored, value.dtype)


@dataclasses.dataclass(frozen=True)
class BlockStorage:
    """A state array kept as 8-bit codes and one float32 scale per block (:mod:`_storage_8bit`).

    ``keep`` takes each block's new scale from the majorant (an upper bound of every new
    entry in the block), so the encode needs no pass over the new value; the scale is then
    not the exact block maximum but at most that bound (the codes' relative precision does
    not depend on it). Without a majorant each scale is its block's exact maximum.

    One entry far above the rest of its block (a gradient of 1e30 among ones) would make the
    scale so large that the others fall below the smallest code and decode to 0 until the
    entry's average decays, thousands of steps at decay 0.99. Given a bulk (a lower bound of
    each half block's largest new entry; the smaller half's is at most the block's
    second-largest) and the array as stored before the step, each scale is capped at
    ``fmt.growth * old scale + fmt.headroom * smaller bulk`` where that is not 0: a block that
    grows as a whole has its bulk grow with it and is never clipped; one entry beyond the cap is
    stored clipped to it (its step uses its average before rounding, as every entry's does, and
    its clipped average doubles per step while it stays large). ``benchmarks/NOTES.md``, "8-bit:
    an outlier in a block".

    ``keep`` returns the value it was given, not the value the codes decode to: the step uses
    the average before rounding, so that the rounding is computed once, in the fusion that
    writes the codes (``benchmarks/NOTES.md``, "8-bit: one value per step").
    """

    layout: codec.Layout
    fmt: codec.Format

    packable: ClassVar[bool] = False
    keeps_centered_variance: ClassVar[bool] = True
    rounds: ClassVar[bool] = True

    @property
    def dtype(self) -> jnp.dtype:
        """The dtype the codes decode to."""
        return jnp.dtype(jnp.float32)

    @property
    def name(self) -> str:
        return f"8bit {self.layout}"

    def filled(self, param: jax.Array, fill: Scalar) -> Quantized:
        """Codes for ``param`` holding ``fill`` everywhere (exactly), sharded as ``param`` is (see :func:`filled`)."""
        return codec.filled(zeros_sharded_like(param), fill, self.layout, self.fmt)

    def filled_on_host(self, param: jax.Array, fill: Scalar) -> list[tuple[Any, tuple[int, ...]]]:
        """What :meth:`filled` holds, as (one entry's value, shape) for the codes and the scales."""
        if isinstance(fill, (int, float)):
            code, scale = _constant_code(fill, self.fmt)
        else:
            code, scale = codec.filled_code(fill, self.fmt)
        return [(code, param.shape), (scale, codec.scales_shape(param.shape, self.layout))]

    def assembled(self, arrays: list[jax.Array]) -> Quantized:
        return Quantized(*arrays)

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        assert isinstance(stored, Quantized)
        return dtypes.cast(codec.decode(stored, self.layout, self.fmt), compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> Quantized:
        """``value`` stored afresh, each block's scale its exact maximum."""
        return codec.encode(dtypes.cast(value, jnp.float32), self.layout, self.fmt, seed)

    def keep(self, value: jax.Array, seed: jax.Array | None, bounds: Bounds | None = None) -> tuple[Stored, jax.Array]:
        """``value`` stored (each block's scale the majorant's bound, capped by the bulk), and ``value`` itself."""
        bound = None
        if bounds is not None:
            halves: dict[int, tuple[Any, jax.Array]] = {}  # one reduction per input, for both bounds

            def halves_of(x: Any) -> jax.Array:
                if id(x) not in halves:
                    if isinstance(x, Quantized):  # the array this storage keeps, as stored before the step
                        halves[id(x)] = (x, codec.stored_half_maxima(x, self.layout, self.fmt))
                    else:
                        halves[id(x)] = (x, codec.half_maxima(dtypes.cast(x, jnp.float32), self.layout))
                return halves[id(x)][1]

            magnitudes = Magnitudes(self._scale_of, lambda x: jnp.max(halves_of(x), axis=-1), halves_of, halves_of)
            bound = bounds.majorant(magnitudes)
            if bounds.bulk is not None and bounds.previous is not None:
                smaller = jnp.min(bounds.bulk(magnitudes), axis=-1)
                cap = self.fmt.growth * self._scale_of(bounds.previous) + self.fmt.headroom * smaller
                bound = jnp.where(cap > 0, jnp.minimum(bound, cap), bound)
        return codec.encode(dtypes.cast(value, jnp.float32), self.layout, self.fmt, seed, bound), value

    def _scale_of(self, stored: Stored) -> jax.Array:
        assert isinstance(stored, Quantized), "a majorant reads the scales of this leaf's 8-bit arrays"
        return stored.scales


Storage = FloatStorage | BlockStorage


class LeafStorages(NamedTuple):
    """How one leaf keeps each state array (``None`` for an array the configuration lacks)."""

    nu: Storage
    mu: Storage | None
    trace: Storage | None
    nu_holds_variance: bool
    """Whether ``nu`` holds the variance ``E[g^2] - E[g]^2`` itself (centered, with a storage that
    :attr:`~rmsprop_jax._storage.BlockStorage.keeps_centered_variance`) rather than ``E[g^2]``."""

    def of(self, field: Field) -> Storage | None:
        return getattr(self, field.name)

    @property
    def rounds(self) -> bool:
        """Whether any of the leaf's arrays is rounded stochastically (and needs seeds)."""
        return any(s is not None and s.rounds for s in (self.nu, self.mu, self.trace))


@functools.partial(jax.jit, static_argnums=0)
def _filled_together(storages: tuple[Storage, ...], params: list[jax.Array], fill: Scalar) -> list[Stored]:
    return [kept.filled(param, fill) for kept, param in zip(storages, params, strict=True)]


def filled(storages: Sequence[Storage], params: Sequence[jax.Array], fill: Scalar) -> list[Stored]:
    """Each param's state array in its storage, holding ``fill`` everywhere and placed as the param is.

    Run op by op, an eager ``init`` compiles each of its operations for every shape of the tree
    (about 70 ms apiece on XLA:CPU): EfficientNet-B0's 8-bit state took 101 s, its float32 state
    26 s in a fresh process (``benchmarks/NOTES.md``, "The state's init"). So a concrete param on one device, or
    replicated, gets its state from one value per array computed once and broadcast (:func:`_constant`);
    concrete sharded params are
    filled by one compiled program per set of devices they live on (cached for the same tree);
    traced params (``init`` under ``jax.jit``) in the caller's trace.
    """
    if any(isinstance(param, core.Tracer) for param in params):
        return [kept.filled(param, fill) for kept, param in zip(storages, params, strict=True)]
    params = [
        param if isinstance(param, jax.Array) else jnp.asarray(param) for param in params
    ]  # NumPy, Python numbers
    out: list[Any] = [None] * len(params)
    by_devices: dict[Any, list[int]] = {}
    for index, (kept, param) in enumerate(zip(storages, params, strict=True)):
        placement = _host_placement(param)
        if placement is None:
            by_devices.setdefault(frozenset(param.sharding.device_set), []).append(index)
            continue
        arrays = [
            _constant(np.asarray(value), shape, placement(shape)) for value, shape in kept.filled_on_host(param, fill)
        ]
        out[index] = kept.assembled(arrays)
    for indices in by_devices.values():
        together = _filled_together(tuple(storages[i] for i in indices), [params[i] for i in indices], fill)
        for i, stored in zip(indices, together, strict=True):
            out[i] = stored
    return out


HOST_FILL_ENTRIES = 1 << 20


def _constant(value: np.ndarray, shape: tuple[int, ...], placement: Any) -> jax.Array:
    """An array of ``shape`` holding ``value`` at ``placement``: copied from a broadcast NumPy view
    (no compilation) below :data:`HOST_FILL_ENTRIES` entries, filled on the device above (one
    small program per shape; a host copy of a large array costs more than that)."""
    if math.prod(shape) < HOST_FILL_ENTRIES:
        return jax.device_put(np.broadcast_to(value, shape), placement)
    return jnp.full(shape, value, value.dtype, device=placement)


_filled_code_compiled = jax.jit(codec.filled_code, static_argnums=1)


@functools.lru_cache(maxsize=64)
def _constant_code(fill: float, fmt: codec.Format) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_storage_8bit.filled_code` of a Python number, computed once (and compiled once per format)."""
    code, scale = _filled_code_compiled(fill, fmt)
    return np.asarray(code), np.asarray(scale)


def _host_placement(param: jax.Array) -> Callable[[tuple[int, ...]], Any] | None:
    """Where a state array of any shape goes for ``param`` on one device or replicated (a function of
    the array's shape), else ``None`` (the state must be sharded as the param is)."""
    sharding = param.sharding
    if not sharding.is_fully_addressable or not sharding.is_fully_replicated:
        return None
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        # an uncommitted param (placed by default) gets an uncommitted state, which jit moves as it does the param
        return lambda shape: sharding if getattr(param, "committed", True) else None
    if isinstance(sharding, NamedSharding):
        return lambda shape: NamedSharding(sharding.mesh, P(), memory_kind=sharding.memory_kind)
    return None


def zeros_sharded_like(param: jax.Array) -> jax.Array:
    """Zeros shaped like ``param`` that keep its sharding, eagerly and under ``jax.jit``.

    They are computed from ``param`` (``|param * 0|``, with the NaN of ``inf * 0`` and
    ``nan * 0`` replaced) so that XLA's sharding propagation gives them ``param``'s
    sharding. A constant such as ``jnp.zeros_like`` has no input to propagate from:
    under ``jax.jit`` on a mesh with Auto axes it lands on one device. The result is
    real (``abs``), exactly +0 everywhere.
    """
    zero = jnp.abs(param * 0)
    return jnp.where(jnp.isnan(zero), jnp.zeros((), zero.dtype), zero)


def for_param(param: jax.Array, state_dtype: ResolvedStateDtype, signed: bool) -> tuple[Storage, str]:
    """The storage of one state array of ``param``, and the state report's word on 8-bit for it.

    Args:
      param: The param (an array or its abstract value).
      state_dtype: The validated ``state_dtype``.
      signed: ``mu`` or the momentum buffer (complex for complex params), else ``nu`` (real).

    Returns:
      The storage, and ``"yes"`` (8-bit) or ``"no: ..."`` with the reason.

    A complex param keeps a float state under ``state_dtype="8bit"`` (its ``|g|^2`` average is
    real, its ``mu`` and momentum complex; the codes are real).
    """
    shape = tuple(jnp.shape(param))
    layout, why_not = codec.layout_decision(shape, codec.shard_shape(param))
    if state_dtype == EIGHT_BIT:
        if jnp.iscomplexobj(param):  # the codes are real: a complex leaf keeps the default float state
            layout, why_not = None, "complex"
        if layout is not None:
            return BlockStorage(layout, codec.SIGNED if signed else codec.UNSIGNED), "yes"
        state_dtype = None
    assert not isinstance(state_dtype, str)
    real = dtypes.real_state_dtype(param.dtype, state_dtype)
    storage = FloatStorage(dtypes.like_param(param.dtype, real) if signed else real)
    return storage, f"no: {why_not}" if layout is None else f"no: not requested ({layout} fit)"


def rounds(state_dtype: ResolvedStateDtype) -> bool:
    """Whether a state of ``state_dtype`` rounds stochastically (and keeps a step count to key it)."""
    return dtypes.needs_stochastic_rounding(state_dtype)


def check_options(
    state_dtype: ResolvedStateDtype, centered: bool, bias_correction: bool, names: Mapping[str, str]
) -> None:
    """Refuses the options a storage cannot honour, naming each argument as ``names`` maps it."""

    def name(key: str) -> str:
        return names.get(key, key)

    if state_dtype == EIGHT_BIT and centered and bias_correction:
        raise ValueError(
            f"Invalid {name('bias_correction')} value: True (with {name('centered')}=True and "
            f"{name('state_dtype')}='8bit' the state keeps the variance itself, and bias correction would "
            "subtract two corrected averages again, the cancellation the stored variance avoids: use a "
            "float state_dtype, or centered without bias_correction)"
        )


def check_mappable(state_dtype: ResolvedStateDtype) -> None:
    """Refuses ``optax.tree_map_params`` (``init`` on a placeholder) where the state is not param-shaped."""
    if state_dtype == EIGHT_BIT:
        raise ValueError(
            "optax.tree_map_params cannot map an 8-bit RMSProp state: its leaves are uint8 codes and "
            "float32 block scales, not arrays shaped like the params. Map "
            "rmsprop_jax.state_as_float32(state) instead, or convert the state with "
            "rmsprop_jax.convert_state(state, like) to a float state_dtype first."
        )


def nbytes(stored: Any) -> int:
    """Bytes of one stored array, concrete or abstract (an array, or 8-bit codes and scales)."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(stored))

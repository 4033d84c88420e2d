"""The 8-bit storage kind: ``state_dtype="8bit"``, codes and one float32 scale per block.

:class:`BlockStorage` keeps a state array as ``uint8`` codes shaped like the param and one
float32 scale per block (the codec, encode and decode only, is :mod:`rmsprop_jax._codec_8bit`).
Which leaves (:meth:`EightBitKind.for_param`): every leaf of at least 4096 entries where
:func:`rmsprop_jax._codec_8bit.block_layout` finds blocks (16 x 16 tiles, runs of up to 256
entries, or boxes, inside each shard where the sharding is visible); every other leaf, and every
complex one (the codes are real), keeps the float kind's default state. What its lossiness implies:

- a centered leaf's ``nu`` holds the variance itself (the difference of two quantized averages
  cancels catastrophically), so centered bias correction, which would subtract two corrected
  averages again, is refused (:meth:`EightBitKind.check_options`);
- the codes do not stack into packed groups (:attr:`BlockStorage.packable`);
- every array rounds stochastically (the state keeps a step count to key it);
- ``optax.tree_map_params`` is refused: the state is not shaped like the params.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rmsprop_jax import _codec_8bit as codec
from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _placement as placement
from rmsprop_jax._codec_8bit import Quantized
from rmsprop_jax._placement import zeros_sharded_like
from rmsprop_jax._storage_float import FLOAT
from rmsprop_jax._storage_protocol import Bounds, Magnitudes, Scalar, Storage, Stored, capped_bound

EIGHT_BIT = "8bit"


@dataclasses.dataclass(frozen=True)
class BlockStorage:
    """A state array kept as 8-bit codes and one float32 scale per block (:mod:`rmsprop_jax._codec_8bit`).

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

    @property
    def packable(self) -> bool:
        return False

    @property
    def keeps_centered_variance(self) -> bool:
        return True

    @property
    def rounds(self) -> bool:
        return True

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
            bound = capped_bound(bounds, magnitudes, self.fmt.growth, self.fmt.headroom)
        return codec.encode(dtypes.cast(value, jnp.float32), self.layout, self.fmt, seed, bound), value

    def _scale_of(self, stored: Stored) -> jax.Array:
        assert isinstance(stored, Quantized), "a majorant reads the scales of this leaf's 8-bit arrays"
        return stored.scales


_filled_code_compiled = jax.jit(codec.filled_code, static_argnums=1)


@functools.lru_cache(maxsize=64)
def _constant_code(fill: float, fmt: codec.Format) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rmsprop_jax._codec_8bit.filled_code` of a Python number, computed once (and compiled once per format)."""
    code, scale = _filled_code_compiled(fill, fmt)
    return np.asarray(code), np.asarray(scale)


class EightBitKind:
    """``state_dtype="8bit"``: :class:`BlockStorage` where blocks fit, else the float kind's default."""

    spellings: tuple[str, ...] = (repr(EIGHT_BIT),)
    pair: Any = Quantized
    layout_field: str | None = "scales"
    reach_column = "8-bit"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value == EIGHT_BIT

    def resolve(self, argument: str, value: Any) -> str:
        return EIGHT_BIT

    def owns(self, resolved: Any) -> bool:
        return isinstance(resolved, str) and resolved == EIGHT_BIT

    def rounds(self, resolved: Any) -> bool:
        return True

    def for_param(self, param: jax.Array, resolved: Any, signed: bool) -> Storage:
        layout = codec.block_layout(tuple(jnp.shape(param)), placement.shard_shape(param))
        if layout is None or jnp.iscomplexobj(param):  # the codes are real: a complex leaf keeps a float state
            return FLOAT.for_param(param, None, signed)
        return BlockStorage(layout, codec.SIGNED if signed else codec.UNSIGNED)

    def read(self, stored: Stored, signed: bool) -> Storage | None:
        if not isinstance(stored, Quantized):
            return None
        layout = codec.layout_of(tuple(jnp.shape(stored.codes)), tuple(jnp.shape(stored.scales)))
        return BlockStorage(layout, codec.SIGNED if signed else codec.UNSIGNED)

    def param_shaped(self, stored: Stored) -> Any:
        return stored.codes

    def check_options(self, resolved: Any, centered: bool, bias_correction: bool, names: Mapping[str, str]) -> None:
        def name(key: str) -> str:
            return names.get(key, key)

        if centered and bias_correction:
            raise ValueError(
                f"Invalid {name('bias_correction')} value: True (with {name('centered')}=True and "
                f"{name('state_dtype')}={resolved!r} the state keeps the variance itself, and bias correction would "
                "subtract two corrected averages again, the cancellation the stored variance avoids: use a "
                "float state_dtype, or centered without bias_correction)"
            )

    def check_mappable(self, resolved: Any) -> None:
        raise ValueError(
            "optax.tree_map_params cannot map an 8-bit RMSProp state: its leaves are uint8 codes and "
            "float32 block scales, not arrays shaped like the params. Map "
            "rmsprop_jax.state_as_float32(state) instead, or convert the state with "
            "rmsprop_jax.convert_state(state, like) to a float state_dtype first."
        )

    def disagreement(self, storage: Storage, wanted: Any, path: str, chosen: str) -> str | None:
        if not isinstance(storage, BlockStorage) or self.owns(wanted):
            return None
        shown = repr(wanted if wanted is None or isinstance(wanted, str) else jnp.dtype(wanted).name)
        return (
            f"The state keeps leaf {path} in 8 bits, but this optimizer's state_dtype{chosen} is {shown}: build it "
            "with state_dtype='8bit', or convert the state with rmsprop_jax.convert_state(state, tx.init(params))."
        )

    def reach(self, nu: Storage, signed: Storage | None, shape: tuple[int, ...], stored: Any) -> str:
        """The state report's word for a leaf: ``"yes"``, or why not (the rule's reason for the leaf's
        shape and visible shards, ``"complex"``, or ``"not requested"`` where blocks would fit)."""
        if isinstance(nu, BlockStorage):
            return "yes"
        if not nu.packable:  # another kind's codes ("4bit boxes of 8x8")
            return f"no: {nu.name.split()[0]} codes"
        if signed is not None and jnp.issubdtype(signed.dtype, jnp.complexfloating):
            return "no: complex"
        layout, why_not = codec.layout_decision(shape, placement.shard_shape(stored))
        return f"no: {why_not}" if layout is None else f"no: not requested ({layout} fit)"

    def variables(self, leaf: Any, value: Quantized, wrap: Callable[[Any, Any], Any], names: tuple | None) -> Quantized:
        """A pair wrapped as a param's variable ``leaf``: the codes with its metadata, the scales with it where
        they keep the param's axes (tiles, and runs along the last axis; runs over several trailing axes drop
        the merged axes' names)."""
        extra = {} if names is None else {"out_sharding": self.scale_names(value, names)}
        return Quantized(wrap(leaf, value.codes), leaf.replace(value=value.scales, **extra))

    def scale_names(self, value: Quantized, names: tuple) -> tuple:
        """The sharding names of a pair's scales, from its param's ``names``."""
        codes_ndim, scales_ndim = jnp.ndim(value.codes), jnp.ndim(value.scales)
        padded = (*names, *(None,) * (codes_ndim - len(names)))
        kept = padded[: scales_ndim - 1] if scales_ndim < codes_ndim else padded[:scales_ndim]
        return (*kept, None) if scales_ndim < codes_ndim else kept


EIGHT_BIT_KIND = EightBitKind()

"""The 4-bit storage kind: ``state_dtype="4bit"``, ``nu`` in half a byte per entry.

:class:`NibbleStorage` keeps ``nu`` as 4-bit codes, two per byte, with one float32 scale per half
block (the codec, encode and decode only, is :mod:`rmsprop_jax._codec_4bit`). ``mu`` and the
momentum buffer keep the 8-bit storage (:mod:`rmsprop_jax._storage_8bit`): a signed average needs
its sign and a finer map than 15 powers of two. Which leaves (:meth:`FourBitKind.for_param`): those
the 8-bit kind reaches and, for ``nu``, those of :data:`MIN_SIZE` entries or more; ``nu`` in 4 bits
where :func:`rmsprop_jax._codec_4bit.plan` finds an axis to pair, else in 8; every other array
keeps the float kind's default state. What its lossiness implies: as
the 8-bit kind (a centered leaf's ``nu`` holds the variance itself, so centered bias correction is
refused; nothing stacks into packed groups; every array rounds stochastically; no
``optax.tree_map_params``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rmsprop_jax import _codec_4bit as codec
from rmsprop_jax import _codec_8bit as codec8
from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _placement as placement
from rmsprop_jax._codec_4bit import Nibbles
from rmsprop_jax._codec_8bit import Quantized
from rmsprop_jax._placement import zeros_sharded_like
from rmsprop_jax._storage_8bit import EIGHT_BIT_KIND, BlockStorage
from rmsprop_jax._storage_protocol import Bounds, Magnitudes, Scalar, Storage, Stored, capped_bound

FOUR_BIT = "4bit"
HEADROOM = 2.0**7
"""How far a half block's scale may sit above its bulk (the smaller of its quarters' largest entries)
where one entry jumps: the bulk keeps 7 of the 14 binades of codes below it."""
GROWTH = 2.0
"""How much a half block's scale may grow per step beyond :data:`HEADROOM` times its bulk."""
MIN_SIZE = 1024
"""The fewest entries of a leaf whose ``nu`` is 4-bit (8 bits: :data:`rmsprop_jax._codec_8bit.MIN_SIZE`,
4096): at 0.56 bytes an entry where float32 keeps 4, a 1024-entry leaf saves 3.5 KB, as much as a
4096-entry one saves in 8 bits at a third of the per-leaf cost; its ``mu`` and buffer stay float32
below 4096."""


@dataclasses.dataclass(frozen=True)
class NibbleStorage:
    """``nu`` kept as 4-bit codes with one float32 scale per half block (:mod:`rmsprop_jax._codec_4bit`).

    ``keep`` takes each half's scale from the majorant, evaluated per half (an upper bound of every new
    entry in it), and caps it, as the 8-bit storage does, at ``GROWTH * old scale + HEADROOM * bulk``
    where the bulk (the smaller of the half's two quarters' largest new entries, bounded below) is not
    0, so that one huge entry does not push the rest of its half under the smallest code. It returns
    the value it was given (the step uses the average before rounding).
    """

    layout: codec8.Layout
    axis: int = -1
    """The paired axis, counted from the end (:func:`rmsprop_jax._codec_4bit.plan`)."""

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
        return jnp.dtype(jnp.float32)

    @property
    def name(self) -> str:
        paired = "" if self.axis == -1 else f" paired along axis {self.axis}"
        return f"4bit {self.layout}{paired}"

    def filled(self, param: jax.Array, fill: Scalar) -> Nibbles:
        return codec.filled(zeros_sharded_like(param), fill, self.layout, self.axis)

    def filled_on_host(self, param: jax.Array, fill: Scalar) -> list[tuple[Any, tuple[int, ...]]]:
        byte, scale = _filled_code_compiled(fill)
        shape = tuple(param.shape)
        return [(byte, codec.packed_shape(shape, self.axis)), (scale, codec.scales_shape(shape, self.layout))]

    def assembled(self, arrays: list[jax.Array]) -> Nibbles:
        return Nibbles(*arrays)

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        assert isinstance(stored, Nibbles)
        return dtypes.cast(codec.decode(stored, self.layout, self.axis), compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> Nibbles:
        return codec.encode(dtypes.cast(value, jnp.float32), self.layout, seed, axis=self.axis)

    def keep(self, value: jax.Array, seed: jax.Array | None, bounds: Bounds | None = None) -> tuple[Stored, jax.Array]:
        bound = None
        if bounds is not None:
            quarters: dict[int, tuple[Any, jax.Array]] = {}

            def quarters_of(x: Any) -> jax.Array:
                if id(x) not in quarters:
                    if isinstance(x, Nibbles):
                        found = codec.stored_quarter_maxima(x, self.layout, self.axis)
                    else:
                        found = codec.half_maxima(dtypes.cast(_value_of(x), jnp.float32), self.layout, 4, self.axis)
                        found = found.reshape(*found.shape[:-1], 2, 2)
                    quarters[id(x)] = (x, found)
                return quarters[id(x)][1]

            def scales_of(x: Any) -> jax.Array:
                if isinstance(x, (Nibbles, Quantized)):
                    return _scales_of(x)
                return jnp.max(quarters_of(x), axis=-1)  # a float mu (a leaf under 4096 entries): its halves' maxima

            magnitudes = Magnitudes(scales_of, lambda x: jnp.max(quarters_of(x), axis=-1), quarters_of, quarters_of)
            bound = capped_bound(bounds, magnitudes, GROWTH, HEADROOM)
        return codec.encode(dtypes.cast(value, jnp.float32), self.layout, seed, bound, self.axis), value


def _value_of(x: Any) -> jax.Array:
    assert not isinstance(x, (Nibbles, Quantized)), "a stored array's magnitudes are read from its scales"
    return x


def _scales_of(stored: Stored) -> jax.Array:
    """A stored array's scales per half block: a 4-bit array's own, an 8-bit one's block scale for both halves."""
    if isinstance(stored, Nibbles):
        return stored.half_scales
    assert isinstance(stored, Quantized), "a majorant reads the scales of this leaf's stored arrays"
    return stored.scales[..., None]


_filled_code_compiled = jax.jit(codec.filled_code)


def _unpaired(layout: codec8.Layout) -> str:
    return f"no axis pairs in {layout} or blocks of its own: odd or padded extents"


class FourBitKind:
    """``state_dtype="4bit"``: :class:`NibbleStorage` for ``nu`` where it fits, else the 8-bit kind's storages."""

    spellings: tuple[str, ...] = (repr(FOUR_BIT),)
    pair: Any = Nibbles
    layout_field: str | None = "half_scales"
    reach_column = "4-bit"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value == FOUR_BIT

    def resolve(self, argument: str, value: Any) -> str:
        return FOUR_BIT

    def owns(self, resolved: Any) -> bool:
        return isinstance(resolved, str) and resolved == FOUR_BIT

    def rounds(self, resolved: Any) -> bool:
        return True

    def for_param(self, param: jax.Array, resolved: Any, signed: bool) -> Storage:
        eight = EIGHT_BIT_KIND.for_param(param, resolved, signed)
        if signed or jnp.iscomplexobj(param):
            return eight
        shape, local = tuple(jnp.shape(param)), placement.shard_shape(param)
        layout = eight.layout if isinstance(eight, BlockStorage) else codec8.block_layout(shape, local, MIN_SIZE)
        planned = codec.plan(layout, shape, local)
        return eight if planned is None else NibbleStorage(*planned)

    def read(self, stored: Stored, signed: bool) -> Storage | None:
        if not isinstance(stored, Nibbles):
            return None
        return NibbleStorage(*codec.layout_of(tuple(jnp.shape(stored.nibbles)), tuple(jnp.shape(stored.half_scales))))

    def param_shaped(self, stored: Stored) -> Any:
        shape, _ = codec.unpacked_shape(tuple(jnp.shape(stored.nibbles)), tuple(jnp.shape(stored.half_scales)))
        return placement.stand_in(stored.nibbles, shape)

    def admits(self, storage: Storage, shape: tuple[int, ...]) -> bool:
        """Whether a leaf's ``nu`` kept in ``storage`` is what this kind keeps for a leaf of ``shape``
        (8 bits where 4 do not fit)."""
        if isinstance(storage, NibbleStorage):
            return True
        return isinstance(storage, BlockStorage) and codec.plan(storage.layout, shape) is None

    def check_options(self, resolved: Any, centered: bool, bias_correction: bool, names: Mapping[str, str]) -> None:
        EIGHT_BIT_KIND.check_options(resolved, centered, bias_correction, names)

    def check_mappable(self, resolved: Any) -> None:
        raise ValueError(
            "optax.tree_map_params cannot map a 4-bit RMSProp state: its leaves are packed codes and "
            "float32 scales, not arrays shaped like the params. Map rmsprop_jax.state_as_float32(state) "
            "instead, or convert the state with rmsprop_jax.convert_state(state, like) to a float state_dtype first."
        )

    def disagreement(self, storage: Storage, wanted: Any, path: str, chosen: str) -> str | None:
        if not isinstance(storage, NibbleStorage) or self.owns(wanted):
            return None
        shown = repr(wanted if wanted is None or isinstance(wanted, str) else jnp.dtype(wanted).name)
        return (
            f"The state keeps leaf {path} in 4 bits, but this optimizer's state_dtype{chosen} is {shown}: build it "
            "with state_dtype='4bit', or convert the state with rmsprop_jax.convert_state(state, tx.init(params))."
        )

    def reach(self, nu: Storage, signed: Storage | None, shape: tuple[int, ...], stored: Any) -> str:
        """The state report's word for a leaf: ``"yes"``, or why its ``nu`` is not 4-bit (the rule's
        reason, or ``"not requested"`` where it would be, as for 8 bits)."""
        if isinstance(nu, NibbleStorage):
            return "yes"
        if isinstance(nu, BlockStorage):
            return "no: 8bit codes" if codec.plan(nu.layout, shape) else f"no: 8 bits ({_unpaired(nu.layout)})"
        if not nu.packable or (signed is not None and jnp.issubdtype(signed.dtype, jnp.complexfloating)):
            return EIGHT_BIT_KIND.reach(nu, signed, shape, stored)
        local = placement.shard_shape(stored)
        layout, why_not = codec8.layout_decision(shape, local, MIN_SIZE)
        if layout is None:
            return f"no: {why_not}"
        planned = codec.plan(layout, shape, local)
        if planned is None:
            return f"no: {_unpaired(layout)}"
        return f"no: not requested ({NibbleStorage(*planned).name.removeprefix(FOUR_BIT).strip()} fit)"

    def variables(self, leaf: Any, value: Nibbles, wrap: Callable[[Any, Any], Any], names: tuple | None) -> Nibbles:
        """A pair wrapped as a param's variable ``leaf``: the nibbles with its metadata (the param's axes,
        the paired one halved, then the unit axes unnamed), the half scales with the 8-bit scales' names
        and one more unnamed axis."""
        if names is None:
            return Nibbles(wrap(leaf, value.nibbles), leaf.replace(value=value.half_scales))
        scales = Quantized(self.param_shaped(value), value.half_scales[..., 0])
        nibbles_names = (*names, *(None,) * (jnp.ndim(value.nibbles) - jnp.ndim(value.half_scales) + 1))
        return Nibbles(
            leaf.replace(value=value.nibbles, out_sharding=nibbles_names),
            leaf.replace(value=value.half_scales, out_sharding=(*EIGHT_BIT_KIND.scale_names(scales, names), None)),
        )


FOUR_BIT_KIND = FourBitKind()

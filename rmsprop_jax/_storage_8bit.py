"""8-bit block-wise storage of one state array: the codec (encode and decode only).

A quantized array is kept as ``uint8`` codes of the array's own shape (so the codes shard
as the parameter does) and one float32 scale per block, the block's largest magnitude.
Each entry is divided by its block's scale and stored as a small float built with integer
bit operations, stochastically rounded:

- non-negative arrays (the square average ``nu``): E5M3, 5 exponent and 3 mantissa bits
  with subnormals, from ``2**-33`` to 1 (10 decades) in steps of at most 1/8 of a binade;
- signed arrays (``mu``, the momentum buffer): a sign bit and E4M3, from ``2**-17`` to 1.

Why these maps: ``benchmarks/code_maps.py`` and ``benchmarks/NOTES.md``, "8-bit: which code map
for `nu`" (E5M3 keeps its
6.5% median noise for every gradient spread measured, where E4M4 runs out of range at 3
decades and a lookup map needs a table search that costs 150-190x the bit operations on
XLA:CPU). The block's largest entry is exact (it encodes to 1.0); rounding is unbiased
(random bits below the kept mantissa, then truncation); an all-zero block decodes to zeros.

Blocks (:func:`block_layout`): 16 x 16 tiles over the last two axes when both extents are
multiples of 16, else runs of 256 along the last axis when it is a multiple of 256; other
shapes, and arrays under 4096 entries, are not quantized. Where the array's sharding is
visible (a concrete array, or a tracer on a mesh with Explicit axes) the rule is applied to
each shard's extents, so that no block crosses a shard boundary and the step needs no
collective; under ``jax.jit`` on a mesh with Auto axes the sharding is invisible and the
rule reads the global shape (collective-free for every sharding whose shards hold whole
blocks). The layout of each stored array is decided once, in the state's plan
(:mod:`rmsprop_jax._plan`), and read from there.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import core
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from rmsprop_jax import _dtypes as dtypes

MIN_SIZE = 4096  # smaller arrays keep a float32 state (their codes would save little)
TILE = 16
RUN = 256
# Values and scales are clamped here (inf would poison a block), 2**126 rather than float32's largest
# (~2**128): XLA:CPU computes x / scale as x * (1 / scale) and flushes a subnormal reciprocal to zero.
LARGEST = 2.0**126

Layout = Literal["tiles", "runs"]


class Format(NamedTuple):
    """A small float: ``exponent_bits`` + ``mantissa_bits`` (+ a sign bit when ``signed``) = 8."""

    exponent_bits: int
    mantissa_bits: int
    signed: bool

    @property
    def largest_code(self) -> int:
        """The code of 1.0, the largest magnitude kept (the block's maximum)."""
        return ((1 << self.exponent_bits) - 1) << self.mantissa_bits

    @property
    def bias(self) -> int:
        """float32's biased exponent of the format's exponent field 0."""
        return 127 - ((1 << self.exponent_bits) - 1)

    @property
    def subnormal_step(self) -> float:
        """The spacing of the codes below the smallest normal value."""
        return 2.0 ** (1 - ((1 << self.exponent_bits) - 1) - self.mantissa_bits)


UNSIGNED = Format(5, 3, signed=False)  # nu
SIGNED = Format(4, 3, signed=True)  # mu, momentum


class Quantized(NamedTuple):
    """One state array in 8 bits: what ``state.nu[...]`` holds for a leaf that ``state_dtype="8bit"`` reaches.

    Read its values with :func:`rmsprop_jax.state_as_float32` (which knows each leaf's block
    layout and code format); :func:`rmsprop_jax.state_report` says which leaves are 8-bit.

    Attributes:
      codes: ``uint8``, the array's shape: the sign bit (signed formats) and the magnitude code.
      scale: float32, one per block: at least the block's largest magnitude (the codes are
        fractions of it).

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> state = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init({"w": jnp.ones((64, 64))})
      >>> q = state.nu["w"]
      >>> type(q).__name__, q.codes.dtype, q.codes.shape, q.scale.shape
      ('Quantized', dtype('uint8'), (64, 64), (4, 4))
    """

    codes: jax.Array
    scale: jax.Array


def block_layout(shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None) -> Layout | None:
    """How an array of ``shape`` is blocked: ``"tiles"``, ``"runs"``, or ``None`` (not quantized).

    Args:
      shape: The array's (global) shape.
      local_shape: One shard's shape, where the sharding is known; the blocks must fit it.
    """
    return layout_decision(shape, local_shape)[0]


def layout_decision(shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None) -> tuple[Layout | None, str]:
    """:func:`block_layout`'s answer and, where it is ``None``, why (for the state report)."""
    entries = math.prod(shape)
    if entries < MIN_SIZE:
        return None, f"{entries} entries < {MIN_SIZE}"
    global_layout = _fitting(shape)
    if global_layout is None:
        return None, f"no {TILE}x{TILE} tile or {RUN}-run fits {_dims(shape)}"
    if local_shape is None:
        return global_layout, ""
    local_layout = _fitting(local_shape)
    if local_layout is None:
        return None, f"no block fits its shards ({_dims(local_shape)})"
    return local_layout, ""


def _fitting(fit: tuple[int, ...]) -> Layout | None:
    if len(fit) >= 2 and fit[-2] % TILE == 0 and fit[-1] % TILE == 0:
        return "tiles"
    if len(fit) >= 1 and fit[-1] % RUN == 0:
        return "runs"
    return None


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "()"


def shard_shape(x: jax.Array) -> tuple[int, ...] | None:
    """One shard's shape where ``x``'s sharding can be seen, else ``None``."""
    try:
        if isinstance(x, jax.Array) and not isinstance(x, core.Tracer):
            return tuple(x.sharding.shard_shape(x.shape))  # a concrete array's placement, on any mesh
        return tuple(jax.typeof(x).sharding.shard_shape(x.shape))  # what a tracer shows (Explicit axes)
    except (AttributeError, TypeError, ValueError):
        return None


def _explicit_spec(x: jax.Array) -> tuple | None:
    """``x``'s partition spec (one entry per axis) on a mesh with Explicit axes, else ``None``."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not any(kind == AxisType.Explicit for kind in getattr(mesh, "axis_types", ())):
        return None
    spec = tuple(sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def _reshape(x: jax.Array, shape: tuple[int, ...], spec: tuple | None) -> jax.Array:
    """``x.reshape(shape)``; on an Explicit mesh with the output sharding spelled out, as JAX requires."""
    if spec is None:
        return x.reshape(shape)
    return jax.lax.reshape(x, shape, out_sharding=P(*spec))


def _blocked(x: jax.Array, layout: Layout) -> jax.Array:
    """``x`` with each block on its own axes: tiles ``(..., H/16, 16, W/16, 16)``, runs ``(..., W/256, 256)``."""
    spec = _explicit_spec(x)
    if layout == "tiles":
        *lead, height, width = x.shape
        blocked_spec = None if spec is None else (*spec[:-2], spec[-2], None, spec[-1], None)
        return _reshape(x, (*lead, height // TILE, TILE, width // TILE, TILE), blocked_spec)
    *lead, width = x.shape
    blocked_spec = None if spec is None else (*spec[:-1], spec[-1], None)
    return _reshape(x, (*lead, width // RUN, RUN), blocked_spec)


def _unblocked(x: jax.Array, layout: Layout, shape: tuple[int, ...]) -> jax.Array:
    """The inverse of :func:`_blocked`."""
    spec = _explicit_spec(x)
    if spec is not None:
        spec = (*spec[:-4], spec[-4], spec[-2]) if layout == "tiles" else (*spec[:-2], spec[-2])
    return _reshape(x, shape, spec)


def _block_axes(layout: Layout) -> tuple[int, ...]:
    return (-3, -1) if layout == "tiles" else (-1,)


def _magnitude_code(y: jax.Array, bits: jax.Array, fmt: Format) -> tuple[jax.Array, jax.Array]:
    """``y`` in ``[0, 1]`` to its unbiased, stochastically rounded magnitude code (int32), and the
    value in ``[0, 1]`` that the code decodes to, computed beside it with float operations (equal to
    ``_magnitude(code)`` bit for bit, and cheaper than decoding the code again)."""
    shift = 23 - fmt.mantissa_bits
    rounded = jax.lax.bitcast_convert_type(y, jnp.uint32) + (bits & jnp.uint32((1 << shift) - 1))
    normal = (rounded >> shift).astype(jnp.int32) - (fmt.bias << fmt.mantissa_bits)
    normal_value = jax.lax.bitcast_convert_type(rounded & jnp.uint32(~((1 << shift) - 1) & 0xFFFFFFFF), jnp.float32)
    uniform = (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
    steps = jnp.floor(y / jnp.float32(fmt.subnormal_step) + uniform)
    is_normal = normal >= (1 << fmt.mantissa_bits)
    code = jnp.clip(jnp.where(is_normal, normal, steps.astype(jnp.int32)), 0, fmt.largest_code)
    value = jnp.minimum(jnp.where(is_normal, normal_value, steps * jnp.float32(fmt.subnormal_step)), 1)
    return code, value


def _magnitude(code: jax.Array, fmt: Format) -> jax.Array:
    """The value in ``[0, 1]`` of a magnitude code (int32)."""
    shift = 23 - fmt.mantissa_bits
    normal = jax.lax.bitcast_convert_type(
        ((code + (fmt.bias << fmt.mantissa_bits)) << shift).astype(jnp.uint32), jnp.float32
    )
    return jnp.where(code >= (1 << fmt.mantissa_bits), normal, code.astype(jnp.float32) * fmt.subnormal_step)


def block_maxima(x: jax.Array, layout: Layout) -> jax.Array:
    """Each block's largest magnitude (the shape of :attr:`Quantized.scale`)."""
    return jnp.max(jnp.abs(_blocked(x, layout)), axis=_block_axes(layout))


def encode(
    x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array | None, scale: jax.Array | None = None
) -> Quantized:
    """Quantizes a float32 array block by block (see the module docstring)."""
    return encode_with_value(x, layout, fmt, seed, scale)[0]


def encode_with_value(
    x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array | None, scale: jax.Array | None = None
) -> tuple[Quantized, jax.Array]:
    """Quantizes a float32 array block by block, and returns what the codes decode to.

    The value comes from the rounding itself rather than from decoding the codes (equal to
    :func:`decode` of the result bit for bit, ``tests/test_storage_8bit.py``): a step that
    uses the state as stored then needs no second pass of integer operations over the codes.

    Args:
      x: float32 values; non-negative for an unsigned ``fmt``. Magnitudes beyond the
        largest float32 (inf) are clamped to it first, so that the block's other entries
        keep finite values.
      layout: From :func:`block_layout`.
      fmt: :data:`UNSIGNED` or :data:`SIGNED`.
      seed: uint32 scalar keying the rounding (:func:`rmsprop_jax._dtypes.rounding_seed`);
        each element draws its bits from its index, as the 16-bit state does. ``None``
        rounds to nearest (for comparisons: it stalls slowly moving averages).
      scale: The blocks' scales (the shape of :attr:`Quantized.scale`), each at least its
        block's largest magnitude (larger magnitudes are clipped to it); default the
        blocks' maxima, which are then stored exactly. An upper bound known without a
        pass over ``x`` spares XLA:CPU a reduction that costs more than the whole step
        (``benchmarks/NOTES.md``, "8-bit: block scales without a reduction").

    Returns:
      The codes and the per-block scales, and the float32 array they decode to.

    Derivatives (``jax.grad`` through updates, as in meta-learning): the returned value's
    is ``x``'s (straight-through, as for the 16-bit rounding: it is unbiased). The codes
    are integers, so the next step sees the derivative through each block's scale: the
    least-squares fit of ``x``'s derivative by a multiple of the block's values, exact
    where the derivative scales the block (as a learning rate scales a momentum buffer).
    """
    if seed is None:
        return _encoded(x, layout, fmt, seed, scale)
    return _encoded_straight_through(x, seed, scale, layout, fmt)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _encoded_straight_through(
    x: jax.Array, seed: jax.Array, scale: jax.Array | None, layout: Layout, fmt: Format
) -> tuple[Quantized, jax.Array]:
    return _encoded(x, layout, fmt, seed, scale)


@_encoded_straight_through.defjvp
def _encoded_straight_through_jvp(
    layout: Layout, fmt: Format, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[tuple[Quantized, jax.Array], tuple[Quantized, jax.Array]]:
    quantized, value = _encoded(primals[0], layout, fmt, primals[1], primals[2])
    tangent = tangents[0]
    blocked_value, axes = _blocked(value, layout), _block_axes(layout)
    fit = jnp.sum(blocked_value * _blocked(tangent, layout), axis=axes)
    norm = jnp.sum(jnp.square(blocked_value), axis=axes)
    scale_tangent = quantized.scale * jnp.where(norm > 0, fit / jnp.where(norm > 0, norm, 1), 0)
    # Integer codes have no tangent: JAX's convention is a NumPy float0 array of their shape.
    codes_tangent = np.zeros(quantized.codes.shape, jax.dtypes.float0)
    no_codes_tangent = Quantized(codes_tangent, scale_tangent)  # pyright: ignore[reportArgumentType]
    return (quantized, value), (no_codes_tangent, tangent)


def _encoded(
    x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array | None, scale: jax.Array | None
) -> tuple[Quantized, jax.Array]:
    """:func:`encode_with_value`'s body."""
    blocked = _blocked(x, layout)
    magnitude = jnp.minimum(jnp.abs(blocked), LARGEST)
    if scale is None:
        scale = jnp.max(magnitude, axis=_block_axes(layout), keepdims=True)
    else:
        scale = jnp.expand_dims(jnp.minimum(scale, LARGEST), _block_axes(layout))
    y = jnp.where(scale > 0, jnp.minimum(magnitude / jnp.where(scale > 0, scale, 1), 1), 0)
    if seed is None:  # round to nearest: half a code step in place of the random bits
        shift = 23 - fmt.mantissa_bits
        bits = jnp.full(blocked.shape, (1 << (shift - 1)) | 0x80000000, jnp.uint32)
    else:
        bits = _blocked(dtypes.random_bits(seed, x.shape), layout)
    code, value = _magnitude_code(y, bits, fmt)
    if fmt.signed:
        code = code | jnp.where(blocked < 0, jnp.int32(0x80), jnp.int32(0))  # int32: under x64 a bare 0x80 is int64
        value = jnp.where(blocked < 0, -value, value)
    quantized = Quantized(_unblocked(code.astype(jnp.uint8), layout, x.shape), jnp.squeeze(scale, _block_axes(layout)))
    return quantized, _unblocked(value * scale, layout, x.shape)


def decode(q: Quantized, layout: Layout, fmt: Format) -> jax.Array:
    """The float32 array that ``q`` holds."""
    code = _blocked(q.codes, layout).astype(jnp.int32)
    value = _magnitude(code & 0x7F if fmt.signed else code, fmt)
    if fmt.signed:
        value = jnp.where(code & 0x80, -value, value)
    scale = jnp.expand_dims(q.scale, _block_axes(layout))
    return _unblocked(value * scale, layout, q.codes.shape)

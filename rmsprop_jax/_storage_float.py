"""The float storage kind: a state array kept as an array of a float dtype.

``state_dtype`` ``None`` (the policy of :mod:`rmsprop_jax._dtypes`: float32 for 16-bit params,
else the param's dtype; complex params keep a real ``nu`` and complex ``mu`` and buffer) or a
float dtype or its name: float16, bfloat16 (both written with unbiased stochastic rounding),
float32, float64 (needs ``jax_enable_x64``). The storage is exact in float32 and wider; every
other kind falls back to it for the leaves it does not take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax._placement import zeros_sharded_like
from rmsprop_jax._storage_protocol import Bounds, Scalar, Storage, Stored

NAMES = ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class FloatStorage:
    """A state array kept as an array of ``dtype`` (16-bit dtypes with stochastic rounding)."""

    dtype: jnp.dtype

    @property
    def packable(self) -> bool:
        return True

    @property
    def keeps_centered_variance(self) -> bool:
        return False

    @property
    def rounds(self) -> bool:
        """Whether ``store`` rounds stochastically (16-bit dtypes)."""
        return dtypes.needs_stochastic_rounding(self.dtype)

    @property
    def name(self) -> str:
        return jnp.dtype(self.dtype).name

    def filled(self, param: jax.Array, fill: Scalar) -> jax.Array:
        """A state array for ``param`` holding ``fill`` everywhere, sharded as ``param`` is."""
        return (zeros_sharded_like(param) + fill).astype(self.dtype)

    def filled_on_host(self, param: jax.Array, fill: Scalar) -> list[tuple[Any, tuple[int, ...]]]:
        """What :meth:`filled` holds, as (one entry's value, shape) for each array (computed once)."""
        return [((jnp.zeros((), param.dtype) + fill).astype(self.dtype), param.shape)]

    def assembled(self, arrays: list[jax.Array]) -> jax.Array:
        return arrays[0]

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        return dtypes.cast(stored, compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> jax.Array:
        """``value`` stored afresh (16-bit dtypes stochastically rounded when ``seed`` is given)."""
        return dtypes.store(value, self.dtype, seed)

    def keep(self, value: jax.Array, seed: jax.Array | None, bounds: Bounds | None = None) -> tuple[Stored, jax.Array]:
        """``value`` stored, and its value as stored (a float storage needs no bounds)."""
        stored = self.store(value, seed)
        return stored, dtypes.cast(stored, value.dtype)


def _dtype_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value in NAMES else None  # numpy would read "8-bit" as a format string
    try:
        return jnp.dtype(value).name
    except TypeError:
        return None


class FloatKind:
    """``state_dtype`` ``None`` or a float dtype: :class:`FloatStorage`."""

    spellings: tuple[str, ...] = NAMES
    pair: Any = None
    layout_field: str | None = None

    def accepts(self, value: Any) -> bool:
        return value is None or _dtype_name(value) in NAMES

    def resolve(self, argument: str, value: Any) -> jnp.dtype | None:
        if value is None:
            return None
        dtype = jnp.dtype(value)
        if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
            raise ValueError(
                f"Invalid {argument} value: {value!r} (float64 needs jax.config.update('jax_enable_x64', True))"
            )
        return dtype

    def owns(self, resolved: Any) -> bool:
        return resolved is None or isinstance(resolved, np.dtype)

    def rounds(self, resolved: Any) -> bool:
        return dtypes.needs_stochastic_rounding(resolved)

    def for_param(self, param: jax.Array, resolved: Any, signed: bool) -> Storage:
        real = dtypes.real_state_dtype(param.dtype, resolved)
        return FloatStorage(dtypes.like_param(param.dtype, real) if signed else real)

    def read(self, stored: Stored, signed: bool) -> Storage | None:
        dtype = getattr(stored, "dtype", None)
        return None if dtype is None else FloatStorage(jnp.dtype(dtype))

    def param_shaped(self, stored: Stored) -> Any:
        return stored

    def check_options(self, resolved: Any, centered: bool, bias_correction: bool, names: Mapping[str, str]) -> None:
        return None

    def check_mappable(self, resolved: Any) -> None:
        return None

    def disagreement(self, storage: Storage, wanted: Any, path: str, chosen: str) -> str | None:
        if not isinstance(storage, FloatStorage) or not isinstance(wanted, np.dtype) or storage.dtype == wanted:
            return None  # the default policy, another kind's value that kept this leaf in float, or the same dtype
        return (
            f"The state keeps leaf {path} in {storage.name}, but this optimizer's state_dtype{chosen} is "
            f"{wanted.name}: convert the state with rmsprop_jax.convert_state(state, tx.init(params))."
        )


FLOAT = FloatKind()

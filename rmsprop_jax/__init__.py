"""rmsprop_jax: RMSProp for JAX, exact, fast, lean and sharded.

The public API is re-exported here; implementations live in private modules
(``rmsprop_jax._*``). The public submodules are reachable as attributes after
``import rmsprop_jax``, as ``optax.contrib`` is after ``import optax``:
:mod:`rmsprop_jax.presets`, :mod:`rmsprop_jax.checkpoint` (Orbax is imported only
when it is used), :mod:`rmsprop_jax.clipping`, and :mod:`rmsprop_jax.demo`, which
needs the ``demo`` extra and is imported on first access.
"""

from __future__ import annotations

import importlib
import types

from rmsprop_jax import checkpoint as checkpoint
from rmsprop_jax import clipping as clipping
from rmsprop_jax import presets as presets
from rmsprop_jax._codec_4bit import Nibbles
from rmsprop_jax._codec_8bit import Quantized
from rmsprop_jax._layout_protocol import PackingPlan
from rmsprop_jax._state import RmsPropState
from rmsprop_jax._state_report import LeafReport, StateReport, state_report
from rmsprop_jax._state_views import convert_state, packing_plan, state_as_float32
from rmsprop_jax._transform import rmsprop, scale_by_rms
from rmsprop_jax._version import __version__

__all__ = [
    "LeafReport",
    "Nibbles",
    "PackingPlan",
    "Quantized",
    "RmsPropState",
    "StateReport",
    "__version__",
    "convert_state",
    "packing_plan",
    "rmsprop",
    "scale_by_rms",
    "state_as_float32",
    "state_report",
]

#: The public submodules: everything else under ``rmsprop_jax`` is private.
SUBMODULES = ("checkpoint", "clipping", "demo", "presets")

_LAZY_SUBMODULES = ("demo",)  # needs flax and matplotlib: imported on first access

# Classes report the path users import them from (reprs, pickles, docs).
RmsPropState.__module__ = __name__
PackingPlan.__module__ = __name__
Quantized.__module__ = __name__
Nibbles.__module__ = __name__
LeafReport.__module__ = __name__
StateReport.__module__ = __name__


def __getattr__(name: str) -> types.ModuleType:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_SUBMODULES})

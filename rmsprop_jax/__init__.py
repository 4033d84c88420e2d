"""rmsprop_jax: RMSProp for JAX, exact, fast, lean and sharded.

The public API is re-exported here; implementations live in the submodules.
"""

from rmsprop_jax._version import __version__
from rmsprop_jax.state import RmsPropState
from rmsprop_jax.transform import rmsprop, scale_by_rms

__all__ = ["RmsPropState", "__version__", "rmsprop", "scale_by_rms"]

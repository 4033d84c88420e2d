"""Framework and paper presets: each framework's own argument names and defaults,
mapped onto :func:`rmsprop_jax.rmsprop` so that a port is a copy-paste.

Presets configure and name; they hold no RMSProp arithmetic. ``presets.optax`` is
:func:`rmsprop_jax.rmsprop` itself (``optax.rmsprop``'s signature). The facts that
tell the frameworks apart are one table, :data:`CONVENTIONS`; reinforcement learning's
published settings and the preset calls that reproduce them are another, :data:`RL_RECIPES`.
"""

from rmsprop_jax._transform import rmsprop as optax  # noqa: F401  (a name, kept out of __all__)
from rmsprop_jax.presets.conventions import CONVENTIONS, Convention
from rmsprop_jax.presets.frameworks import keras, pytorch, tensorflow_v1, timm
from rmsprop_jax.presets.papers import dqn2015, graves2013, hinton2012
from rmsprop_jax.presets.recipes import RL_RECIPES, Recipe
from rmsprop_jax.presets.state_conversion import keras_state, pytorch_state

#: The optimizer presets (the other public names convert states or describe them).
OPTIMIZERS = ("pytorch", "keras", "tensorflow_v1", "timm", "optax", "hinton2012", "graves2013", "dqn2015")

# ``optax`` (rmsprop_jax.rmsprop under optax.rmsprop's name) is an attribute but stays out of
# __all__: ``from rmsprop_jax.presets import *`` must not shadow the optax module.
__all__ = [
    "CONVENTIONS",
    "OPTIMIZERS",
    "RL_RECIPES",
    "Convention",
    "Recipe",
    "dqn2015",
    "graves2013",
    "hinton2012",
    "keras",
    "keras_state",
    "pytorch",
    "pytorch_state",
    "tensorflow_v1",
    "timm",
]

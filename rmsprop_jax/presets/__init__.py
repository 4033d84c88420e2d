"""Framework and paper presets: each framework's own argument names and defaults,
mapped onto :func:`rmsprop_jax.rmsprop` so that a port is a copy-paste.

Presets validate and configure; they hold no RMSProp arithmetic. See README's
porting table for what differs between them.
"""

from rmsprop_jax.presets.frameworks import keras, optax, pytorch, tensorflow_v1, timm
from rmsprop_jax.presets.papers import dqn2015, graves2013, hinton2012
from rmsprop_jax.presets.resume import keras_state, pytorch_state

__all__ = [
    "dqn2015",
    "graves2013",
    "hinton2012",
    "keras",
    "keras_state",
    "optax",
    "pytorch",
    "pytorch_state",
    "tensorflow_v1",
    "timm",
]

"""The demo's network: a small 1-D convolutional classifier in Flax NNX."""

from __future__ import annotations

__all__ = ["ConvNet"]

import jax
from flax import nnx


class ConvNet(nnx.Module):
    """The MNIST-1D paper's CNN layout, wider: three strided convolutions, a linear head.

    Input ``(batch, 40, 1)``; the convolutions (kernel 5 then 3, 3; stride 2,
    padding 1, ReLU) shorten the signal to 19, 10 and 5 samples; the head maps
    the flattened ``5 * channels`` features to ``num_classes`` logits. With the
    default 64 channels the network has 28,298 parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from rmsprop_jax.demo.model import ConvNet
      >>> ConvNet(rngs=nnx.Rngs(0))(jnp.zeros((2, 40, 1))).shape
      (2, 10)

    References:
      Greydanus, `Scaling down deep learning with MNIST-1D
      <https://arxiv.org/abs/2011.14439>`_, 2020 (the CNN baseline uses 25 channels).
    """

    def __init__(self, *, channels: int = 64, num_classes: int = 10, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, channels, kernel_size=(5,), strides=(2,), padding=[(1, 1)], rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, kernel_size=(3,), strides=(2,), padding=[(1, 1)], rngs=rngs)
        self.conv3 = nnx.Conv(channels, channels, kernel_size=(3,), strides=(2,), padding=[(1, 1)], rngs=rngs)
        self.head = nnx.Linear(5 * channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self.conv1(x))
        h = nnx.relu(self.conv2(h))
        h = nnx.relu(self.conv3(h))
        return self.head(h.reshape(h.shape[0], -1))

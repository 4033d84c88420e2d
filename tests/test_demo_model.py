"""The demo's network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from rmsprop_jax.demo.model import ConvNet


@pytest.mark.parametrize("channels", [8, 64])
def test_convnet_maps_signals_to_logits_with_the_documented_layers(channels):
    model = ConvNet(channels=channels, rngs=nnx.Rngs(0))
    assert model(jnp.zeros((3, 40, 1))).shape == (3, 10)
    count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    convs = (5 * channels + channels) + 2 * (3 * channels * channels + channels)
    assert count == convs + 5 * channels * 10 + 10


def test_convnet_initialization_depends_on_the_seed():
    first = nnx.state(ConvNet(channels=8, rngs=nnx.Rngs(0)), nnx.Param)
    again = nnx.state(ConvNet(channels=8, rngs=nnx.Rngs(0)), nnx.Param)
    other = nnx.state(ConvNet(channels=8, rngs=nnx.Rngs(1)), nnx.Param)
    assert jnp.array_equal(first["conv1"]["kernel"][...], again["conv1"]["kernel"][...])
    assert not jnp.array_equal(first["conv1"]["kernel"][...], other["conv1"]["kernel"][...])

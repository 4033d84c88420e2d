"""The main job: train a Flax NNX CNN on MNIST-1D with rmsprop_jax.

Run ``python -m rmsprop_jax.demo`` (``--help`` lists the options). The pieces are
importable: :mod:`~rmsprop_jax.demo.data` (MNIST-1D, generated locally),
:mod:`~rmsprop_jax.demo.model` (the network), :mod:`~rmsprop_jax.demo.train` (the
jit-compiled training loop, any optax optimizer), :mod:`~rmsprop_jax.demo.plots`
and :mod:`~rmsprop_jax.demo.cli`. They need the ``demo`` extra:
``pip install 'rmsprop-jax[demo]'``.
"""

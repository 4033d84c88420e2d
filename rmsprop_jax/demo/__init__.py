"""The main job: train a Flax NNX CNN on MNIST-1D with rmsprop_jax.

Run ``python -m rmsprop_jax.demo`` (``--help`` lists the options). The pieces are
importable: :mod:`~rmsprop_jax.demo.data` (MNIST-1D, generated locally),
:mod:`~rmsprop_jax.demo.model` (the network), :mod:`~rmsprop_jax.demo.train` (the
jit-compiled training loop, any optax optimizer); each module's ``__all__`` lists its
public names. The other modules (``cli``, ``arguments``, ``optimizers``, ``plots``,
``report``, ``run_directory``) are the command-line program's own parts, not an API.
They need the ``demo`` extra: ``pip install 'rmsprop-jax[demo]'``.
"""

"""MNIST-1D, generated locally by the ``mnist1d`` package (no download), its batches and augmentation."""

from __future__ import annotations

__all__ = ["Dataset", "batch_indices", "load_mnist1d", "shift_signals"]

from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TRAIN_EXAMPLES = 4000  # the standard split's training set (and 1000 test examples)
DEFAULT_BATCH_SIZE = 100
DEFAULT_STEPS = 4000  # 100 epochs at the default batch size
MAX_SHIFT = 2  # the augmentation: random shifts of up to this many samples


class Dataset(NamedTuple):
    """MNIST-1D as float32 signals ``(n, 40, 1)`` and int32 labels ``(n,)``.

    Example:
      >>> from rmsprop_jax.demo.data import load_mnist1d
      >>> data = load_mnist1d()
      >>> data.x_train.shape, data.y_train.dtype, data.x_test.shape
      ((4000, 40, 1), dtype('int32'), (1000, 40, 1))
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_mnist1d() -> Dataset:
    """The standard MNIST-1D split (4000 train, 1000 test), generated with the
    package's fixed seed (42), so every run sees the same data; about 1 s.

    Example:
      >>> import numpy as np
      >>> from rmsprop_jax.demo.data import load_mnist1d
      >>> data = load_mnist1d()
      >>> np.bincount(data.y_test).tolist() == np.bincount(load_mnist1d().y_test).tolist()  # the same data
      True
      >>> sorted(set(data.y_train.tolist())) == list(range(10))
      True
    """
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return Dataset(
        x_train=data["x"].astype(np.float32)[..., None],
        y_train=data["y"].astype(np.int32),
        x_test=data["x_test"].astype(np.float32)[..., None],
        y_test=data["y_test"].astype(np.int32),
    )


def epoch_batches(num_examples: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Each epoch's ``(batches per epoch, batch_size)`` example indices, one epoch at a time.

    An endless run of shuffled epochs, each example once per epoch; only the current epoch is
    held, so a run's memory does not grow with its number of steps. Step ``s`` takes row
    ``s % per_epoch`` of epoch ``s // per_epoch``.

    Example:
      >>> from rmsprop_jax.demo.data import epoch_batches
      >>> epochs = epoch_batches(num_examples=10, batch_size=5, seed=0)
      >>> first = next(epochs)
      >>> first.shape, sorted(first.ravel().tolist()) == list(range(10))
      ((2, 5), True)
    """
    rng = np.random.default_rng(seed)
    per_epoch = num_examples // batch_size
    while True:
        yield rng.permutation(num_examples)[: per_epoch * batch_size].reshape(per_epoch, batch_size).astype(np.int32)


def batch_indices(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` example indices: the first ``steps`` rows of :func:`epoch_batches`.

    Example:
      >>> import numpy as np
      >>> from rmsprop_jax.demo.data import batch_indices
      >>> indices = batch_indices(num_examples=10, batch_size=5, steps=4, seed=0)
      >>> indices.shape, sorted(indices[:2].ravel().tolist()) == list(range(10))  # steps 0-1: one epoch
      ((4, 5), True)
    """
    per_epoch = num_examples // batch_size
    epochs = epoch_batches(num_examples, batch_size, seed)
    return np.concatenate([next(epochs) for _ in range(-(-steps // per_epoch))])[:steps]


def shift_signals(x: jax.Array, key: jax.Array, max_shift: int = MAX_SHIFT) -> jax.Array:
    """Shifts each signal ``(batch, length, 1)`` by a random whole number of samples.

    The shift of each row is drawn uniformly from ``[-max_shift, max_shift]``; the
    samples moved in are zeros. MNIST-1D's generator itself shifts every digit
    at random, so this augmentation stays inside the data distribution.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax.demo.data import shift_signals
      >>> shifted = shift_signals(jnp.ones((3, 40, 1)), jax.random.key(0))
      >>> shifted.shape, bool(jnp.all(shifted[:, 2:-2] == 1.0))  # at most 2 zeros move in at an edge
      ((3, 40, 1), True)
    """
    if max_shift == 0:
        return x
    shifts = jax.random.randint(key, (x.shape[0],), -max_shift, max_shift + 1)
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (0, 0)))
    length = x.shape[1]
    return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, max_shift - s, length, axis=0))(padded, shifts)

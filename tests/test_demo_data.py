"""MNIST-1D loading and the batch order."""

from __future__ import annotations

import numpy as np

from rmsprop_jax.demo.data import batch_indices, load_mnist1d


def test_load_mnist1d_gives_the_standard_split():
    data = load_mnist1d()
    assert data.x_train.shape == (4000, 40, 1) and data.x_test.shape == (1000, 40, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert set(np.unique(data.y_train)) == set(range(10)) == set(np.unique(data.y_test))


def test_load_mnist1d_is_the_same_every_time():
    first, second = load_mnist1d(), load_mnist1d()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_indices_visit_each_example_at_most_once_per_epoch():
    indices = batch_indices(num_examples=10, batch_size=3, steps=7, seed=0)
    assert indices.shape == (7, 3) and indices.dtype == np.int32
    per_epoch = 3  # 10 // 3 batches; one example is left out of each epoch
    for epoch in range(0, 7, per_epoch):
        seen = indices[epoch : epoch + per_epoch].ravel()
        assert len(set(seen.tolist())) == seen.size
    assert indices.min() >= 0 and indices.max() < 10


def test_batch_indices_depend_on_the_seed_only():
    np.testing.assert_array_equal(batch_indices(100, 10, 20, seed=3), batch_indices(100, 10, 20, seed=3))
    assert not np.array_equal(batch_indices(100, 10, 20, seed=3), batch_indices(100, 10, 20, seed=4))

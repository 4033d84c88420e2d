"""Training and evaluation of :class:`~rmsprop_jax.demo.model.ConvNet` with any optax optimizer."""

from __future__ import annotations

__all__ = ["History", "TrainResult", "train"]

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rmsprop_jax import checkpoint
from rmsprop_jax.demo.data import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, MAX_SHIFT, Dataset, epoch_batches, shift_signals
from rmsprop_jax.demo.model import ConvNet
from rmsprop_jax.demo.run_directory import check_checkpoint_layout


@dataclasses.dataclass
class History:
    """What one training run measured.

    Attributes:
      log_steps: Steps after which ``train_loss`` and ``train_accuracy`` were logged.
      train_loss: Mean minibatch loss over the steps since the previous log.
      train_accuracy: Mean minibatch accuracy over the same steps (the running accuracy).
      eval_steps: Steps after which the test set was evaluated.
      test_accuracy: Accuracy on the 1000 test examples, in ``[0, 1]``.
      train_seconds: Wall time of the run, compilation included.

    Example:
      >>> import rmsprop_jax
      >>> from rmsprop_jax.demo.data import load_mnist1d
      >>> from rmsprop_jax.demo.train import train
      >>> history = train(rmsprop_jax.rmsprop(1e-3), load_mnist1d(), steps=20, batch_size=32).history
      >>> history.eval_steps[-1], len(history.train_loss) == len(history.log_steps), history.train_seconds > 0
      (20, True, True)
    """

    log_steps: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    eval_steps: list[int] = dataclasses.field(default_factory=list)
    test_accuracy: list[float] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0


@dataclasses.dataclass
class TrainResult:
    """A finished run: its history, the trained model and the final optimizer state.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> from rmsprop_jax.demo.data import load_mnist1d
      >>> from rmsprop_jax.demo.train import train
      >>> result = train(rmsprop_jax.rmsprop(1e-3), load_mnist1d(), steps=20, batch_size=32)
      >>> result.model(jnp.zeros((1, 40, 1))).shape, result.resumed_from
      ((1, 10), 0)
    """

    history: History
    model: ConvNet
    opt_state: optax.OptState
    resumed_from: int = 0  # the step of the checkpoint this run continued from (0: a fresh start)
    damaged_checkpoints: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    """Newer checkpoints that could not be read (step, why), skipped and deleted before resuming."""


def train(
    tx: optax.GradientTransformation,
    data: Dataset,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    channels: int = 64,
    max_shift: int = MAX_SHIFT,
    log_every: int = 100,
    eval_every: int = 250,
    on_log: Callable[[int, float, float], None] | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 1000,
    keep_checkpoints: int = 3,
) -> TrainResult:
    """Trains a fresh :class:`ConvNet` with ``tx`` in a jit-compiled step.

    The step (forward, backward, ``tx.update``, ``optax.apply_updates``) is one
    ``jax.jit`` call with the parameters and optimizer state donated; the model
    goes in and out through Flax NNX's functional API (``nnx.split`` /
    ``nnx.merge``). Losses stay on the device and are read every ``log_every``
    steps, so the host never waits on a single step.

    Args:
      tx: The optimizer (any optax transformation).
      data: MNIST-1D, from :func:`~rmsprop_jax.demo.data.load_mnist1d`.
      steps: Number of optimizer steps.
      batch_size: Examples per step.
      seed: Seeds the initialization, the batch order and the augmentation.
      channels: Width of the network.
      max_shift: Random shift augmentation in samples (0: none).
      log_every: Steps between training-loss logs (and ``on_log`` calls).
      eval_every: Steps between test-set evaluations (the last step is always evaluated).
      on_log: Called as ``on_log(step, loss, running_accuracy)`` after each log.
      checkpoint_dir: Where to save params and optimizer state, every
        ``checkpoint_every`` steps and at the end, with Orbax's ``CheckpointManager``
        (one directory per step, named by the step). When it already holds a
        checkpoint of this run, training resumes from the latest one (restored with
        :func:`rmsprop_jax.checkpoint.restore`, which refuses another layout);
        batches and augmentation depend only on the seed and the step, so a resumed
        run ends bit-identical to an uninterrupted one.
      checkpoint_every: Steps between checkpoints.
      keep_checkpoints: How many of the latest checkpoints to keep.

    Returns:
      A :class:`TrainResult`.

    Raises:
      ValueError: ``checkpoint_dir`` holds checkpoints in the layout of rmsprop_jax
        0.1 (``step_<n>`` directories), or one that does not match ``tx``.

    Example:
      >>> import optax
      >>> import rmsprop_jax
      >>> from rmsprop_jax.demo.data import load_mnist1d
      >>> from rmsprop_jax.demo.train import train
      >>> result = train(rmsprop_jax.rmsprop(1e-3), load_mnist1d(), steps=20, batch_size=32)
      >>> result.history.eval_steps[-1]
      20
    """
    start = time.perf_counter()
    graphdef, params = nnx.split(ConvNet(channels=channels, rngs=nnx.Rngs(seed)))
    opt_state = tx.init(params)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    epochs = epoch_batches(len(data.y_train), batch_size, seed)
    per_epoch = len(data.y_train) // batch_size
    augment_key = jax.random.key(seed)
    start_step = 0
    manager = None
    damaged: list[tuple[int, str]] = []
    if checkpoint_dir is not None:
        import orbax.checkpoint as ocp

        check_checkpoint_layout(checkpoint_dir)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep_checkpoints, enable_async_checkpointing=False)
        manager = ocp.CheckpointManager(
            Path(checkpoint_dir).resolve(), options=options, item_handlers=ocp.StandardCheckpointHandler()
        )
        start_step, params, opt_state, damaged = _resumed(manager, params, opt_state)

    def loss_and_accuracy(params: nnx.State, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = nnx.merge(graphdef, params)(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)

    @jax.jit
    def test_accuracy(params: nnx.State) -> jax.Array:
        return loss_and_accuracy(params, x_test, y_test)[1]

    def train_step(
        params: nnx.State, opt_state: optax.OptState, epoch: jax.Array, row: jax.Array, step: jax.Array
    ) -> tuple[optax.Params, optax.OptState, jax.Array, jax.Array]:
        batch = epoch[row]
        x = shift_signals(x_train[batch], jax.random.fold_in(augment_key, step), max_shift)
        grad_fn = jax.value_and_grad(loss_and_accuracy, has_aux=True)
        (loss, accuracy), grads = grad_fn(params, x, y_train[batch])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    history = History()
    pending: list[tuple[jax.Array, jax.Array]] = []
    for _ in range(start_step // per_epoch):  # the epochs before the resumed step, drawn and dropped
        next(epochs)
    epoch = jnp.asarray(next(epochs))
    for step in range(start_step, steps):
        row = step % per_epoch
        if row == 0 and step > start_step:
            epoch = jnp.asarray(next(epochs))
        params, opt_state, loss, accuracy = step_fn(params, opt_state, epoch, np.int32(row), np.int32(step))
        pending.append((loss, accuracy))
        done = step + 1
        if manager is not None and (done % checkpoint_every == 0 or done == steps):
            manager.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
        if done % log_every == 0 or done == steps:
            losses, accuracies = np.asarray(jax.device_get(pending)).T
            pending = []
            history.log_steps.append(done)
            history.train_loss.append(float(losses.mean()))
            history.train_accuracy.append(float(accuracies.mean()))
            if on_log is not None:
                on_log(done, history.train_loss[-1], history.train_accuracy[-1])
        if done % eval_every == 0 or done == steps:
            history.eval_steps.append(done)
            history.test_accuracy.append(float(test_accuracy(params)))
    if not history.eval_steps:  # resumed from the last step: nothing left to train
        history.eval_steps.append(steps)
        history.test_accuracy.append(float(test_accuracy(params)))
    jax.block_until_ready((params, opt_state))
    if manager is not None:
        manager.close()
    history.train_seconds = time.perf_counter() - start
    model = nnx.merge(graphdef, params)
    return TrainResult(
        history=history, model=model, opt_state=opt_state, resumed_from=start_step, damaged_checkpoints=damaged
    )


def _resumed(manager: Any, params: Any, opt_state: Any) -> tuple[int, Any, Any, list[tuple[int, str]]]:
    """The latest readable checkpoint's step, params and state (``0`` and the given ones if none), and
    each newer checkpoint that could not be read, with why; those are deleted, so that the run saves
    its steps again."""
    damaged: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = checkpoint.restore(manager, {"params": params, "opt_state": opt_state}, step=step)
        except ValueError as error:
            if "cannot be read" not in str(error):
                raise
            damaged.append((step, str(error)))
            manager.delete(step)
            continue
        return step, restored["params"], restored["opt_state"], damaged
    return 0, params, opt_state, damaged

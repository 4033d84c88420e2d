"""Port ``torch.optim.RMSprop`` + ``torch.optim.lr_scheduler.StepLR`` to rmsprop_jax, step for step.

Run it with ``python3 examples/port_pytorch_steplr.py`` (needs ``torch``). It trains the
same linear regression in PyTorch and in JAX from the same initial weights and batches,
and prints how far apart the weights end up for the right port and for the usual mistake.

The trap: PyTorch's ``StepLR(step_size=10)`` counts *epochs* when, as usual,
``scheduler.step()`` is called once per epoch; an optax schedule counts *optimizer steps*
(``optax.apply_updates`` calls, ``tx.update`` calls). With 8 batches per epoch the learning
rate must drop every ``10 * 8 = 80`` steps::

    torch:  opt = torch.optim.RMSprop(params, lr=0.01, alpha=0.9, momentum=0.9)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
            # per epoch: 8 x (loss.backward(); opt.step()), then sched.step()

    jax:    schedule = optax.exponential_decay(0.01, transition_steps=10 * 8, decay_rate=0.5, staircase=True)
            tx = rmsprop_jax.presets.pytorch(lr=schedule, alpha=0.9, momentum=0.9)

``transition_steps=10`` (the epoch count copied verbatim) halves the rate eight times too
often. If your torch loop calls ``scheduler.step()`` after every batch instead, then
``step_size`` already counts steps and ``transition_steps=step_size`` is right.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rmsprop_jax import presets

LR, ALPHA, MOMENTUM = 0.01, 0.9, 0.9
STEP_SIZE_EPOCHS, GAMMA = 10, 0.5
BATCHES_PER_EPOCH, BATCH = 8, 16
FEATURES, OUTPUTS = 5, 2


def make_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Inputs, targets of a noisy linear map, and initial weights (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCHES_PER_EPOCH * BATCH, FEATURES)).astype(np.float32)
    true_w = rng.standard_normal((FEATURES, OUTPUTS))
    y = (x @ true_w + 0.1 * rng.standard_normal((len(x), OUTPUTS))).astype(np.float32)
    initial = {
        "w": (0.1 * rng.standard_normal((FEATURES, OUTPUTS))).astype(np.float32),
        "b": np.zeros(OUTPUTS, np.float32),
    }
    return x, y, initial


def step_lr_schedule(steps_per_epoch: int) -> optax.Schedule:
    """torch's per-epoch ``StepLR(step_size=10, gamma=0.5)`` as a schedule of optimizer steps."""
    return optax.exponential_decay(
        LR, transition_steps=STEP_SIZE_EPOCHS * steps_per_epoch, decay_rate=GAMMA, staircase=True
    )


def train_torch(epochs: int, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch: RMSprop with momentum, StepLR stepped once per epoch."""
    import torch

    x, y, initial = make_problem(seed)
    w = torch.nn.Parameter(torch.from_numpy(initial["w"].copy()))
    b = torch.nn.Parameter(torch.from_numpy(initial["b"].copy()))
    optimizer = torch.optim.RMSprop([w, b], lr=LR, alpha=ALPHA, momentum=MOMENTUM)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_SIZE_EPOCHS, gamma=GAMMA)
    for _ in range(epochs):
        for batch in range(BATCHES_PER_EPOCH):
            rows = slice(batch * BATCH, (batch + 1) * BATCH)
            optimizer.zero_grad()
            loss = torch.mean((torch.from_numpy(x[rows]) @ w + b - torch.from_numpy(y[rows])) ** 2)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return {"w": w.detach().numpy().copy(), "b": b.detach().numpy().copy()}


def train_jax(schedule: optax.Schedule, epochs: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The port: ``presets.pytorch`` with an optax schedule, the same batches in the same order."""
    x, y, initial = make_problem(seed)
    tx = presets.pytorch(lr=schedule, alpha=ALPHA, momentum=MOMENTUM)
    params = {name: jnp.asarray(value) for name, value in initial.items()}
    state = tx.init(params)

    def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    @jax.jit
    def step(params: dict[str, jax.Array], state: optax.OptState, x: jax.Array, y: jax.Array) -> tuple:
        grads = jax.grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(epochs):
        for batch in range(BATCHES_PER_EPOCH):
            rows = slice(batch * BATCH, (batch + 1) * BATCH)
            params, state = step(params, state, x[rows], y[rows])
    return {name: np.asarray(value) for name, value in params.items()}


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest absolute difference between two sets of weights."""
    return max(float(np.abs(a[name] - b[name]).max()) for name in a)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Trains both ports and torch; prints and returns their distances from torch's weights."""
    parser = argparse.ArgumentParser(
        prog="python3 examples/port_pytorch_steplr.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30: the rate halves twice)")
    args = parser.parse_args(argv)
    if args.epochs <= 0:
        parser.error("--epochs must be positive")
    theirs = train_torch(args.epochs)
    right = max_difference(train_jax(step_lr_schedule(BATCHES_PER_EPOCH), args.epochs), theirs)
    wrong = max_difference(train_jax(step_lr_schedule(1), args.epochs), theirs)
    print(f"after {args.epochs} epochs of {BATCHES_PER_EPOCH} steps, max |jax - torch| over the weights:")
    print(f"  transition_steps = {STEP_SIZE_EPOCHS} epochs x {BATCHES_PER_EPOCH} steps: {right:.2e}")
    print(f"  transition_steps = {STEP_SIZE_EPOCHS} (epochs copied as steps):      {wrong:.2e}")
    return {"right": right, "wrong": wrong}


if __name__ == "__main__":
    main()

"""MNIST-1D training over every device: sharded batches, FSDP-sharded params and optimizer state.

On 8 simulated CPU devices (one machine, no accelerator)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python3 examples/data_parallel_mnist1d.py

On the GPUs or TPUs of one host, the same command without ``XLA_FLAGS``. On several hosts,
start the same file on every host with ``--distributed``: ``jax.distributed.initialize``
finds the cluster by itself on Cloud TPU, Slurm and Open MPI; elsewhere pass
``--coordinator-address host0:1234 --num-processes N --process-id I``.

One mesh axis, ``data``, spans every device of every process. Each global batch is split
along it, so every device computes the gradient of its slice and XLA sums them. Each
parameter is split along its largest dimension that the device count divides (fully
sharded data parallel, FSDP); a parameter with no such dimension is replicated. The
parameters are created sharded (a jitted init with ``out_shardings``, never whole on one
device), and the optimizer state from ``jax.jit(tx.init)`` takes each parameter's
sharding, so every device holds only its slice of ``mu`` and ``nu``.

Every process generates the same MNIST-1D split and the same batch order (both seeded),
and hands JAX only the rows its own devices hold (``jax.make_array_from_callback``), so
nothing here depends on the number of processes.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from rmsprop_jax.demo.arguments import add_run_options, positive_float, whole_number_at_least
from rmsprop_jax.demo.data import TRAIN_EXAMPLES, batch_indices, load_mnist1d, shift_signals
from rmsprop_jax.demo.model import ConvNet
from rmsprop_jax.demo.optimizers import DEFAULT_LEARNING_RATE, rmsprop_choice

# Steps queued ahead of the host. Unbounded async dispatch of a program with collectives
# deadlocks XLA:CPU's simulated devices (measured on 2 cores: 64 queued steps hang,
# 16 do not); two keep an accelerator busy while the host prepares the next batch.
STEPS_IN_FLIGHT = 2


def fsdp_spec(shape: tuple[int, ...], devices: int) -> P:
    """Splits the largest dimension that ``devices`` divides; replicates when none does.

    Example:
      >>> fsdp_spec((3, 64, 10), 8)
      PartitionSpec(None, 'data', None)
      >>> fsdp_spec((10,), 8)
      PartitionSpec()
    """
    candidates = [(size, axis) for axis, size in enumerate(shape) if size % devices == 0]
    if not candidates:
        return P()
    _, axis = max(candidates)
    return P(*[("data" if i == axis else None) for i in range(len(shape))])


def global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole; each process
    supplies only the slices of its own devices."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_bytes(tree: Any) -> tuple[int, int]:
    """(bytes on the busiest device, bytes of the whole arrays) over the leaves of ``tree``."""
    per_device: collections.Counter = collections.Counter()
    total = 0
    for leaf in jax.tree.leaves(tree):
        total += leaf.nbytes
        for shard in leaf.addressable_shards:
            per_device[shard.device] += shard.data.nbytes
    return max(per_device.values()), total


def state_follows_params(opt_state: optax.OptState, params: nnx.State) -> bool:
    """Whether every leaf of the state's ``nu``, ``mu`` and ``trace`` carries its parameter's sharding."""
    ok = True
    for field in ("nu", "mu", "trace"):
        tree = optax.tree_utils.tree_get(opt_state, field)
        if tree is None:
            continue
        for state_leaf, param in zip(jax.tree.leaves(tree), jax.tree.leaves(params), strict=True):
            ok &= state_leaf.sharding.is_equivalent_to(param.sharding, param.ndim)
    return bool(ok)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 examples/data_parallel_mnist1d.py", description=__doc__.splitlines()[0]
    )
    add_run_options(parser, batch_size=128, batch_size_help="global batch, a multiple of the device count")
    parser.add_argument("--lr", type=positive_float, default=DEFAULT_LEARNING_RATE, help="peak learning rate")
    parser.add_argument("--log-every", type=whole_number_at_least(1), default=500, help="steps between printed losses")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (process 0)")
    parser.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
    parser.add_argument("--coordinator-address", help="host:port of process 0 (with --distributed)")
    parser.add_argument("--num-processes", type=int, help="number of processes (with --distributed)")
    parser.add_argument("--process-id", type=int, help="this process, 0 to N-1 (with --distributed)")
    args = parser.parse_args(argv)
    cluster = (args.coordinator_address, args.num_processes, args.process_id)
    if not args.distributed and any(value is not None for value in cluster):
        parser.error("--coordinator-address, --num-processes and --process-id need --distributed")
    if args.distributed:
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    devices = jax.device_count()
    if args.batch_size % devices or args.batch_size > TRAIN_EXAMPLES:
        parser.error(
            f"--batch-size must be a multiple of the device count ({devices}) and at most {TRAIN_EXAMPLES}, "
            f"got {args.batch_size}"
        )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains, evaluates, prints a summary and returns it (see the module docstring)."""
    args = parse_args(argv)
    devices = jax.device_count()
    # Auto axes: XLA propagates the shardings through the convolutions (Explicit axes
    # would need an out_sharding on each of them).
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))
    data = load_mnist1d()

    def create_model() -> ConvNet:
        return ConvNet(rngs=nnx.Rngs(args.seed))

    graphdef, abstract_params = nnx.split(nnx.eval_shape(create_model))
    param_shardings = jax.tree.map(lambda p: NamedSharding(mesh, fsdp_spec(p.shape, devices)), abstract_params)
    # Created sharded: no device ever holds a whole parameter.
    params = jax.jit(lambda: nnx.split(create_model())[1], out_shardings=param_shardings)()
    tx = rmsprop_choice(None, args.lr, args.steps).tx
    opt_state = jax.jit(tx.init)(params)  # each state leaf takes its parameter's sharding
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, opt_state)
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    augment_key = jax.random.key(args.seed)

    def loss_fn(params: nnx.State, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(
        params: nnx.State, opt_state: optax.OptState, x: jax.Array, y: jax.Array, step: jax.Array
    ) -> tuple[nnx.State, optax.OptState, jax.Array]:
        x = shift_signals(x, jax.random.fold_in(augment_key, step))
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step_fn = jax.jit(
        train_step,
        out_shardings=(param_shardings, state_shardings, replicated),
        donate_argnums=(0, 1),
    )

    # The test set, padded to a multiple of the device count; padding rows weigh nothing.
    padded = -(-len(data.y_test) // devices) * devices
    extra = padded - len(data.y_test)
    x_test = global_array(np.pad(data.x_test, ((0, extra), (0, 0), (0, 0))), batch_sharding)
    y_test = global_array(np.pad(data.y_test, (0, extra)), batch_sharding)
    weight = global_array(np.pad(np.ones(len(data.y_test), np.float32), (0, extra)), batch_sharding)

    @jax.jit  # the test arrays go in as arguments: a multi-process array cannot be a constant
    def test_accuracy(params: nnx.State, x_test: jax.Array, y_test: jax.Array, weight: jax.Array) -> jax.Array:
        predictions = jnp.argmax(nnx.merge(graphdef, params)(x_test), axis=-1)
        return jnp.sum((predictions == y_test) * weight) / jnp.sum(weight)

    indices = batch_indices(len(data.y_train), args.batch_size, args.steps, args.seed)
    losses: list[float] = []
    in_flight: collections.deque = collections.deque()
    lead = jax.process_index() == 0

    def record(loss: jax.Array) -> None:  # waits for that step to finish
        losses.append(float(loss))
        if lead and len(losses) % args.log_every == 0:
            print(f"step {len(losses)}: mean loss {np.mean(losses[-args.log_every :]):.3g}", flush=True)

    start = time.perf_counter()
    for step in range(args.steps):
        batch = indices[step]
        x = global_array(data.x_train[batch], batch_sharding)
        y = global_array(data.y_train[batch], batch_sharding)
        params, opt_state, loss = step_fn(params, opt_state, x, y, np.int32(step))
        in_flight.append(loss)
        if len(in_flight) > STEPS_IN_FLIGHT:
            record(in_flight.popleft())
    for loss in in_flight:
        record(loss)
    jax.block_until_ready((params, opt_state))
    seconds = time.perf_counter() - start

    param_device, param_total = shard_bytes(params)
    state_device, state_total = shard_bytes(opt_state)
    kernel = params["conv2"]["kernel"][...]
    nu = optax.tree_utils.tree_get(opt_state, "nu")["conv2"]["kernel"][...]
    results = {
        "devices": devices,
        "processes": jax.process_count(),
        "platform": jax.devices()[0].platform,
        "steps": args.steps,
        "global_batch_size": args.batch_size,
        "seed": args.seed,
        "test_accuracy": float(test_accuracy(params, x_test, y_test, weight)),
        "losses": losses,
        "train_seconds": seconds,
        "state_follows_params": state_follows_params(opt_state, params),
        "conv2_kernel_spec": str(kernel.sharding.spec),
        "conv2_nu_spec": str(nu.sharding.spec),
        "param_bytes": {"busiest_device": param_device, "total": param_total},
        "state_bytes": {"busiest_device": state_device, "total": state_total},
    }
    if lead:
        print(
            f"{devices} devices in {results['processes']} process(es), {args.steps} steps of {args.batch_size}: "
            f"test accuracy {results['test_accuracy']:.4f}, {seconds:.1f} s (compilation included)\n"
            f"conv2 kernel sharded {results['conv2_kernel_spec']}, its nu {results['conv2_nu_spec']}; "
            f"every state array follows its parameter: {results['state_follows_params']}\n"
            f"per device: params {param_device:,} of {param_total:,} bytes, "
            f"optimizer state {state_device:,} of {state_total:,} bytes"
        )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()

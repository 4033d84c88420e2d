"""What the two gymnax examples share: greedy evaluation, timing, and the results file.

``dqn_gymnax.py`` and ``a2c_gymnax.py`` each define a PureJaxRL-style ``make_train(config)``
whose ``train(rng)`` builds its optimizer inside (as client code does) and runs the whole
loop under ``jax.jit(jax.vmap(train))`` over seeds. This module compiles and times that,
evaluates the final policies greedily, and writes one JSON results file per run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np

Policy = Callable[[Any, jax.Array], jax.Array]
"""``(params, observation) -> greedy action`` for one environment."""

ENV_ID = "CartPole-v1"
SOLVED = 475.0  # CartPole-v1's reward threshold (gymnasium's registration)
CAP = 500.0  # CartPole-v1's episode limit


def reset(env: Any, env_params: Any, key: jax.Array, num_envs: int) -> tuple[jax.Array, Any]:
    """``num_envs`` freshly reset environments: their observations and states."""
    return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)


def greedy_returns(policy: Policy, params: Any, rng: jax.Array, episodes: int) -> jax.Array:
    """The undiscounted returns of ``episodes`` greedy episodes of the policy (no exploration).

    Each episode runs to termination or CartPole-v1's 500-step limit, in a ``lax.scan``.
    """
    env, env_params = gymnax.make(ENV_ID)
    steps = int(env_params.max_steps_in_episode)

    def episode(key: jax.Array) -> jax.Array:
        reset_key, step_key = jax.random.split(key)
        obs, state = env.reset(reset_key, env_params)

        def step(carry: tuple, key: jax.Array) -> tuple[tuple, None]:
            obs, state, total, done = carry
            action = policy(params, obs)
            obs, state, reward, finished, _ = env.step_env(key, state, action, env_params)
            total = total + jnp.where(done, 0.0, reward)
            return (obs, state, total, done | finished), None

        keys = jax.random.split(step_key, steps)
        (_, _, total, _), _ = jax.lax.scan(step, (obs, state, jnp.zeros(()), jnp.array(False)), keys)
        return total

    return jax.vmap(episode)(jax.random.split(rng, episodes))


def run_seeds(
    make_train: Callable[[dict], Callable], policy: Policy, config: dict, seeds: Sequence[int]
) -> dict[str, Any]:
    """Compiles ``jax.jit(jax.vmap(train))`` for ``seeds``, runs it and times both, then
    evaluates each seed's final params greedily (``config["EVAL_EPISODES"]`` episodes).

    ``train(rng)`` returns ``{"params": ..., "training_returns": ...}``. The evaluation is
    a second jitted program: in the same program as a vmapped training run, XLA:CPU
    (jax 0.10.2) hung in ``block_until_ready`` once the policies were good
    (``benchmarks/NOTES.md``, "Real clients: RL examples").

    Returns ``train``'s outputs (each with a leading seed axis), the greedy returns
    ``(seeds, episodes)``, and the seconds spent tracing and compiling, and running.
    """
    rngs = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(make_train(config))).lower(rngs).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    outputs = jax.block_until_ready(compiled(rngs))
    run_s = time.perf_counter() - start
    episodes = int(config["EVAL_EPISODES"])
    evaluate = jax.jit(jax.vmap(lambda params, key: greedy_returns(policy, params, key, episodes)))
    eval_keys = jax.vmap(lambda r: jax.random.fold_in(r, 1))(rngs)
    final = np.asarray(evaluate(outputs["params"], eval_keys))
    return {"outputs": outputs, "final_returns": final, "compile_s": compile_s, "run_s": run_s}


def summary(name: str, optimizer: str, seeds: Sequence[int], timed: dict[str, Any]) -> dict[str, Any]:
    """One optimizer's results (from :func:`run_seeds`): greedy final returns per seed and
    the training curve's tail."""
    final_returns = timed["final_returns"].mean(axis=1)
    training_returns = tail_mean(np.asarray(timed["outputs"]["training_returns"]))
    final = [round(float(r), 2) for r in final_returns]
    return {
        "name": name,
        "optimizer": optimizer,
        "seeds": list(seeds),
        "final_greedy_return_per_seed": final,
        "final_greedy_return_mean": round(float(np.mean(final_returns)), 2),
        "seeds_at_cap": int(np.sum(np.asarray(final_returns) >= CAP)),
        "training_return_last_5pct_per_seed": [round(float(r), 2) for r in training_returns],
        "compile_s": round(timed["compile_s"], 2),
        "run_s": round(timed["run_s"], 2),
        "wall_s": round(timed["compile_s"] + timed["run_s"], 2),
    }


def tail_mean(returns: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Per seed, the mean of the last ``fraction`` of a ``(seeds, points)`` curve, NaNs (no
    finished episode yet) skipped."""
    points = returns.shape[1]
    tail = returns[:, points - max(1, int(points * fraction)) :]
    return np.asarray([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in tail])


def environment() -> dict[str, Any]:
    """The machine and the versions a results file records."""
    versions = {}
    for package in ("jax", "jaxlib", "optax", "flax", "gymnax", "rmsprop-jax", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "jax_devices": [str(device) for device in jax.devices()],
        "python": platform.python_version(),
        "versions": versions,
    }


STATE_DTYPES = {"rmsprop_jax": None, "rmsprop_jax_8bit": "8bit", "rmsprop_jax_4bit": "4bit"}
"""The example's preset with each ``state_dtype`` (``None``: float32), by ``--optimizers`` name."""
OPTIMIZERS = (*STATE_DTYPES, "optax")


def arguments(description: str, timesteps: float, out: str) -> argparse.ArgumentParser:
    """The command line both examples take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, default=4, help="number of seeds, trained at once under vmap (default 4)")
    parser.add_argument("--timesteps", type=float, default=timesteps, help=f"environment steps (default {timesteps:g})")
    parser.add_argument(
        "--optimizers",
        default="rmsprop_jax,optax",
        help="comma-separated: rmsprop_jax (the preset), rmsprop_jax_8bit and rmsprop_jax_4bit (the preset "
        "with an 8-bit or a 4-bit state), optax (optax.rmsprop, same settings)",
    )
    parser.add_argument("--eval-episodes", type=int, default=10, help="greedy episodes per seed at the end")
    parser.add_argument("--out", default=out, help=f"results file to write, or '' for none (default {out})")
    return parser


SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
"""The flag the example scripts add to ``XLA_FLAGS`` before anything starts XLA (at their top, as
scripts only: an import of ``gymnax`` or ``flax`` starts the CPU backend, which reads its flags then).
XLA:CPU (jax 0.10.2) deadlocks now and then in these training programs with its concurrency-optimized
scheduler: ``block_until_ready`` never returns, at about 2% CPU (A2C at 2e4 steps: 5 runs of 12 hung
within 60-120 s; with this flag 12 of 12 finished in 14-20 s; ``benchmarks/NOTES.md``, "Real clients:
RL examples"). The flag changes which independent ops XLA:CPU runs at once, not what any op computes."""


def main(
    name: str,
    make_train: Callable[[dict], Callable],
    make_policy: Callable[[dict], Policy],
    config: dict[str, Any],
    args: argparse.Namespace,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Trains each of ``args.optimizers`` on the same seeds; prints and writes the results."""
    seeds = list(range(args.seeds))
    results = []
    for optimizer in args.optimizers.split(","):
        run_config = {**config, "OPTIMIZER": optimizer, "EVAL_EPISODES": args.eval_episodes}
        run_config["TOTAL_TIMESTEPS"] = args.timesteps
        timed = run_seeds(make_train, make_policy(run_config), run_config, seeds)
        row = summary(name, optimizer, seeds, timed)
        print(
            f"{optimizer:12s} greedy return per seed {row['final_greedy_return_per_seed']} "
            f"({row['seeds_at_cap']}/{len(seeds)} at 500), compile {row['compile_s']:.1f} s, run {row['run_s']:.1f} s"
        )
        results.append({**row, "config": run_config})
    payload = {**extra, "environment_id": ENV_ID, "results": results}
    write_results(args.out, payload)
    return payload


def write_results(path: str, payload: dict[str, Any]) -> None:
    """Writes ``payload`` with the environment, as indented JSON."""
    if not path:
        return
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({**payload, "environment": environment()}, indent=2) + "\n")
    print(f"wrote {target}")


def results_table(paths: Sequence[str | pathlib.Path]) -> str:
    """The committed runs as a Markdown table (the Reinforcement learning page shows it)."""
    rows = [
        "| example | optimizer | greedy return per seed (end) | at 500 | training return, last 5% "
        "| compile s | run s |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        payload = json.loads(pathlib.Path(path).read_text())
        for row in payload["results"]:
            final = ", ".join(f"{r:g}" for r in row["final_greedy_return_per_seed"])
            tail = ", ".join(f"{r:.0f}" for r in row["training_return_last_5pct_per_seed"])
            rows.append(
                f"| `{payload['example']}` | {row['optimizer']} | {final} | {row['seeds_at_cap']}/{len(row['seeds'])} "
                f"| {tail} | {row['compile_s']:.1f} | {row['run_s']:.1f} |"
            )
    return "\n".join(rows)

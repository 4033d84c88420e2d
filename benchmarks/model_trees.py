"""The parameter trees of the models RMSProp trains, as shapes: ``benchmarks/results/model-trees.json``.

    KERAS_BACKEND=jax python3 benchmarks/model_trees.py

Each tree is a model's trainable parameters, one leaf per weight, with the names and shapes
Keras gives them (convolution kernels HWIO, as in Flax; biases, batch-norm scales and offsets
as leaves of their own): EfficientNet-B0, MobileNetV3-Large, ResNet-50, Inception-v3 and
DenseNet-121 from ``keras.applications`` built with ``weights=None`` (nothing is downloaded),
and a ViT-B/16 encoder written out here (patch embedding, class token, position embedding,
12 blocks of layer norm, fused qkv, attention output and a 3072-wide MLP, a final norm and a
1000-class head: 86.6M params, 152 leaves, as in ``timm``'s ``vit_base_patch16_224``).

Tests and benchmarks read the committed file (:func:`load`), so nothing needs Keras to run.

    python3 benchmarks/model_trees.py --coverage   # -> results/model-trees-8bit.{json,md}

``--coverage`` writes what ``state_dtype="8bit"`` makes of each tree (:func:`coverage`, from
``jax.eval_shape(tx.init, ...)`` and ``rmsprop_jax.state_report``: no array is allocated): the
share of entries in leaves of at least 4096 entries, the share kept in 8 bits, and the state's
bytes per param for plain RMSProp, with momentum, and centered with momentum. The docs'
Numerics page and the README quote that table (a test checks both against the file).

    python3 benchmarks/model_trees.py --coverage --state-dtype 4bit   # -> results/model-trees-4bit.{json,md}

does the same for ``state_dtype="4bit"``, whose table counts the entries whose ``nu`` is 4-bit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

PATH = Path(__file__).resolve().parent / "results" / "model-trees.json"
COVERAGE = PATH.with_name("model-trees-8bit")
VARIANTS = {"plain": {}, "momentum": {"momentum": 0.9}, "centered+momentum": {"centered": True, "momentum": 0.9}}
SMALLEST_8BIT = 4096  # entries: the smaller leaves keep float32 (the docs' Numerics page, "Which leaves")
KERAS_MODELS = {
    "EfficientNet-B0": "EfficientNetB0",
    "MobileNetV3-Large": "MobileNetV3Large",
    "ResNet-50": "ResNet50",
    "Inception-v3": "InceptionV3",
    "DenseNet-121": "DenseNet121",
}


def vit_b16() -> dict[str, list[int]]:
    """ViT-B/16's trainable shapes (224 x 224 input, 1000 classes), named as timm names them."""
    width, mlp, depth, patches = 768, 3072, 12, (224 // 16) ** 2
    shapes = {
        "patch_embed/kernel": [16, 16, 3, width],
        "patch_embed/bias": [width],
        "cls_token": [1, 1, width],
        "pos_embed": [1, patches + 1, width],
    }
    for i in range(depth):
        block = f"blocks/{i}"
        shapes |= {
            f"{block}/norm1/scale": [width],
            f"{block}/norm1/bias": [width],
            f"{block}/attn/qkv/kernel": [width, 3 * width],
            f"{block}/attn/qkv/bias": [3 * width],
            f"{block}/attn/proj/kernel": [width, width],
            f"{block}/attn/proj/bias": [width],
            f"{block}/norm2/scale": [width],
            f"{block}/norm2/bias": [width],
            f"{block}/mlp/fc1/kernel": [width, mlp],
            f"{block}/mlp/fc1/bias": [mlp],
            f"{block}/mlp/fc2/kernel": [mlp, width],
            f"{block}/mlp/fc2/bias": [width],
        }
    return shapes | {"norm/scale": [width], "norm/bias": [width], "head/kernel": [width, 1000], "head/bias": [1000]}


def keras_shapes(name: str) -> dict[str, list[int]]:
    """One ``keras.applications`` model's trainable weights, by path."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    model = getattr(keras.applications, KERAS_MODELS[name])(weights=None)
    return {weight.path: list(weight.shape) for weight in model.trainable_weights}


def load() -> dict[str, dict[str, tuple[int, ...]]]:
    """Every committed tree: model name -> leaf path -> shape."""
    trees = json.loads(PATH.read_text())["trees"]
    return {model: {path: tuple(shape) for path, shape in tree.items()} for model, tree in trees.items()}


def first_leaves(tree: dict[str, tuple[int, ...]], leaves: int | None) -> dict[str, tuple[int, ...]]:
    """The tree cut to its first ``leaves`` leaves (all of them for ``None``): the benchmarks' tiny runs."""
    return dict(list(tree.items())[:leaves])


def params(tree: dict[str, tuple[int, ...]], dtype: jnp.dtype = jnp.float32) -> dict[str, jax.ShapeDtypeStruct]:
    """A tree's params as abstract arrays (for ``jax.eval_shape(tx.init, ...)``)."""
    return {path: jax.ShapeDtypeStruct(shape, dtype) for path, shape in tree.items()}


def coverage(trees: dict[str, dict[str, tuple[int, ...]]], state_dtype: str = "8bit") -> dict[str, Any]:
    """Per tree: its size, the entries ``state_dtype`` reaches (8-bit codes; for ``"4bit"``, ``nu`` in
    4 bits), and the state's bytes per param per variant."""
    import rmsprop_jax

    rows = []
    for name, tree in trees.items():
        entries = sum(math.prod(shape) for shape in tree.values())
        row: dict[str, Any] = {
            "tree": name,
            "leaves": len(tree),
            "params": entries,
            "large_share": sum(math.prod(s) for s in tree.values() if math.prod(s) >= SMALLEST_8BIT) / entries,
            "bytes_per_param": {},
        }
        for variant, options in VARIANTS.items():
            tx = rmsprop_jax.rmsprop(1e-3, state_dtype=state_dtype, **options)
            report = rmsprop_jax.state_report(jax.eval_shape(tx.init, params(tree)))
            row["bytes_per_param"][variant] = report.bytes_per_param
            word = (lambda leaf: leaf.four_bit) if state_dtype == "4bit" else (lambda leaf: leaf.eight_bit)
            reached = sum(math.prod(leaf.shape) for leaf in report.leaves if word(leaf) == "yes")
            row["eight_bit_share" if state_dtype == "8bit" else "reached_share"] = reached / entries
        rows.append(row)
    return {"rows": rows}


def coverage_markdown(results: dict[str, Any]) -> str:
    """The Numerics page's table of :func:`coverage`."""
    if results.get("state_dtype", "8bit") == "4bit":
        return _coverage_markdown_4bit(results)
    lines = [
        "| model (params, leaves) | entries in leaves >= 4096 | entries 8-bit | state B/param: plain "
        "| with momentum | centered + momentum |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        size = row["bytes_per_param"]
        lines.append(
            f"| {row['tree']} ({row['params'] / 1e6:.1f}M, {row['leaves']}) | {100 * row['large_share']:.1f}% "
            f"| {100 * row['eight_bit_share']:.1f}% | {size['plain']:.3f} | {size['momentum']:.3f} "
            f"| {size['centered+momentum']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _coverage_markdown_4bit(results: dict[str, Any]) -> str:
    lines = [
        "| model (params, leaves) | entries with nu in 4 bits | state B/param: plain | with momentum "
        "| centered + momentum |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        size = row["bytes_per_param"]
        lines.append(
            f"| {row['tree']} ({row['params'] / 1e6:.1f}M, {row['leaves']}) | {100 * row['reached_share']:.1f}% "
            f"| {size['plain']:.3f} | {size['momentum']:.3f} | {size['centered+momentum']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_coverage(state_dtype: str = "8bit") -> dict[str, Any]:
    results = coverage(load(), state_dtype)
    if state_dtype != "8bit":
        results = {"state_dtype": state_dtype, **results}
    out = COVERAGE.with_name(f"model-trees-{state_dtype}")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(coverage_markdown(results))
    print(coverage_markdown(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage", action="store_true", help="write the 8-bit coverage table instead")
    parser.add_argument("--state-dtype", default="8bit", choices=["8bit", "4bit"], help="with --coverage")
    args = parser.parse_args()
    if args.coverage:
        write_coverage(args.state_dtype)
        return
    trees = {name: keras_shapes(name) for name in KERAS_MODELS} | {"ViT-B/16": vit_b16()}
    import keras

    meta = {"keras": keras.__version__, "command": "KERAS_BACKEND=jax python3 benchmarks/model_trees.py"}
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(json.dumps({"meta": meta, "trees": trees}, indent=0) + "\n")
    for name, tree in trees.items():
        print(f"{name}: {sum(math.prod(s) for s in tree.values()) / 1e6:.2f}M params, {len(tree)} leaves")


if __name__ == "__main__":
    main()

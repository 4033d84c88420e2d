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
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp

PATH = Path(__file__).resolve().parent / "results" / "model-trees.json"
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


def params(tree: dict[str, tuple[int, ...]], dtype: jnp.dtype = jnp.float32) -> dict[str, jax.ShapeDtypeStruct]:
    """A tree's params as abstract arrays (for ``jax.eval_shape(tx.init, ...)``)."""
    return {path: jax.ShapeDtypeStruct(shape, dtype) for path, shape in tree.items()}


def main() -> None:
    trees = {name: keras_shapes(name) for name in KERAS_MODELS} | {"ViT-B/16": vit_b16()}
    import keras

    meta = {"keras": keras.__version__, "command": "KERAS_BACKEND=jax python3 benchmarks/model_trees.py"}
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(json.dumps({"meta": meta, "trees": trees}, indent=0) + "\n")
    for name, tree in trees.items():
        print(f"{name}: {sum(math.prod(s) for s in tree.values()) / 1e6:.2f}M params, {len(tree)} leaves")


if __name__ == "__main__":
    main()

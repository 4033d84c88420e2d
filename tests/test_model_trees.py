"""8-bit state on the parameter trees of real models (``benchmarks/results/model-trees.json``)."""

from __future__ import annotations

import json
import math

import jax
import pytest
from helpers import ROOT, load_script

import rmsprop_jax

TREES = json.loads((ROOT / "benchmarks" / "results" / "model-trees.json").read_text())["trees"]
VARIANTS = {
    "plain": ({}, 1),
    "momentum": ({"momentum": 0.9}, 2),
    "centered+momentum": ({"centered": True, "momentum": 0.9}, 3),
}


def _report(tree: dict[str, list[int]], options: dict) -> rmsprop_jax.StateReport:
    params = {path: jax.ShapeDtypeStruct(tuple(shape), "float32") for path, shape in tree.items()}
    return rmsprop_jax.state_report(
        jax.eval_shape(rmsprop_jax.rmsprop(1e-3, state_dtype="8bit", **options).init, params)
    )


def test_the_committed_trees_are_the_models_the_issue_names():
    counts = {
        name: (len(tree), round(sum(math.prod(s) for s in tree.values()) / 1e5) / 10) for name, tree in TREES.items()
    }
    assert counts == {
        "EfficientNet-B0": (213, 5.3),
        "MobileNetV3-Large": (174, 5.5),
        "ResNet-50": (214, 25.6),
        "Inception-v3": (190, 23.8),
        "DenseNet-121": (364, 8.0),
        "ViT-B/16": (152, 86.6),
    }


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS)
@pytest.mark.parametrize("model", TREES, ids=TREES)
def test_every_leaf_of_4096_entries_or_more_is_8bit_and_its_blocks_hold_about_256(model, variant):
    """Whatever the shape (HWIO kernels, depthwise kernels, a 1280 x 1000 classifier); the smaller leaves
    keep float32. The scales cost at most 4 bytes per 200 entries and field on average (blocks that every
    even sharding up to 8 ways keeps whole: 212-256 entries on average on these trees)."""
    options, fields = VARIANTS[variant]
    report = _report(TREES[model], options)
    big = [leaf for leaf in report.leaves if math.prod(leaf.shape) >= 4096]
    assert all(leaf.eight_bit == "yes" for leaf in big), [
        (leaf.path, leaf.eight_bit) for leaf in big if leaf.eight_bit != "yes"
    ]
    assert all(leaf.storage == "float32" for leaf in report.leaves if math.prod(leaf.shape) < 4096)
    big_entries = sum(math.prod(leaf.shape) for leaf in big)
    scale_bytes = sum(leaf.state_bytes for leaf in big) - fields * big_entries  # codes: one byte per entry and field
    assert 0 < scale_bytes <= fields * 4 * big_entries / 200


@pytest.mark.parametrize("model", TREES, ids=TREES)
def test_plain_rmsprop_keeps_at_most_1_07_bytes_per_param(model):
    assert _report(TREES[model], {}).bytes_per_param <= 1.07


def test_the_committed_coverage_table_is_what_the_trees_give_today():
    """``results/model-trees-8bit.json`` (quoted by Numerics and the README) is recomputed from the trees."""
    script = load_script("benchmarks/model_trees.py")
    committed = json.loads(script.COVERAGE.with_suffix(".json").read_text())
    assert script.coverage(script.load()) == committed
    assert script.COVERAGE.with_suffix(".md").read_text() == script.coverage_markdown(committed)


def test_the_committed_4bit_coverage_table_is_what_the_trees_give_today():
    """``results/model-trees-4bit``: the entries whose ``nu`` is 4-bit and the bytes per param (the Numerics
    page quotes it); every tree's plain state is at most 0.8 B/param, and every leaf keeps at most 8 bits."""
    script = load_script("benchmarks/model_trees.py")
    out = script.COVERAGE.with_name("model-trees-4bit")
    committed = json.loads(out.with_suffix(".json").read_text())
    assert {"state_dtype": "4bit", **script.coverage(script.load(), "4bit")} == committed
    assert out.with_suffix(".md").read_text() == script.coverage_markdown(committed)
    eight = json.loads(script.COVERAGE.with_suffix(".json").read_text())
    for four_row, eight_row in zip(committed["rows"], eight["rows"], strict=True):
        assert four_row["bytes_per_param"]["plain"] < min(0.8, eight_row["bytes_per_param"]["plain"])

"""The conventions table against the configurations the presets actually build, and the docs and README against it."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
from helpers import ROOT

from rmsprop_jax import _transform, presets
from rmsprop_jax.presets.conventions import porting_table, short_porting_table

CONVENTIONS = presets.CONVENTIONS


def _built(monkeypatch, name: str, **kwargs) -> dict:
    """What the preset handed to the core: its RmsConfig and the other arguments."""
    seen = {}
    original = _transform._rms_transformation

    def spy(options):
        seen.update(dataclasses.asdict(options) | {"config": options.config})
        return original(options)

    monkeypatch.setattr(_transform, "_rms_transformation", spy)
    first = next(iter(inspect.signature(getattr(presets, name)).parameters.values()))
    getattr(presets, name)(**{first.name: 0.01}, **kwargs)
    return seen


def _momentum_argument(name: str) -> dict:
    parameters = inspect.signature(getattr(presets, name)).parameters
    return {"momentum": 0.9} if "momentum" in parameters and name != "graves2013" else {}


def _builds_an_optimizer(value: object) -> bool:
    """Whether a presets attribute is a function returning a GradientTransformation (read from its annotation)."""
    return inspect.isfunction(value) and "GradientTransformation" in str(inspect.signature(value).return_annotation)


def test_optimizers_names_every_preset_that_builds_an_optimizer_and_each_has_a_row():
    found = {name for name, value in vars(presets).items() if _builds_an_optimizer(value)}
    assert found == set(presets.OPTIMIZERS)
    assert list(CONVENTIONS) == list(presets.OPTIMIZERS)


@pytest.mark.parametrize("name", presets.OPTIMIZERS)
def test_row_matches_the_configuration_the_preset_builds(name, monkeypatch):
    row = CONVENTIONS[name]
    built = _built(monkeypatch, name, **_momentum_argument(name))
    config = built["config"]
    if row.eps_in_sqrt is None:
        assert config.eps == 0
    else:
        assert config.eps_in_sqrt is row.eps_in_sqrt
    assert built["initial_scale"] == row.initial_scale
    if row.lr_in_momentum is None:
        assert config.momentum is None
    else:
        assert config.momentum is not None and config.lr_in_momentum is row.lr_in_momentum
    assert config.centered is (row.centered == "always")
    assert ("centered" in inspect.signature(getattr(presets, name)).parameters) is (row.centered == "optional")
    if row.centered == "optional":
        assert _built(monkeypatch, name, centered=True)["config"].centered
    parameters = inspect.signature(getattr(presets, name)).parameters
    for argument, value in row.defaults.items():
        assert parameters[argument].default == value, argument


@pytest.mark.parametrize("name", presets.OPTIMIZERS)
def test_row_says_how_weight_decay_enters(name, monkeypatch):
    row = CONVENTIONS[name]
    parameters = inspect.signature(getattr(presets, name)).parameters
    if row.weight_decay == "none":
        assert "weight_decay" not in parameters
        return
    coupled = _built(monkeypatch, name, weight_decay=0.1)
    flag = {"timm": "decoupled_decay", "optax": "decoupled_weight_decay"}.get(name)
    if row.weight_decay == "coupled or decoupled":
        assert not coupled["config"].decoupled_weight_decay
        assert _built(monkeypatch, name, weight_decay=0.1, **{flag: True})["config"].decoupled_weight_decay
    else:
        assert coupled["config"].decoupled_weight_decay is (row.weight_decay == "decoupled")
    assert coupled["weight_decay"] == 0.1


def test_the_porting_page_shows_the_rendered_table_and_readme_its_short_form():
    assert porting_table() in (ROOT / "docs" / "porting.md").read_text()
    assert short_porting_table() in (ROOT / "README.md").read_text()


def test_the_short_table_has_a_row_per_preset_with_the_conventions_values():
    rows = short_porting_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [f"presets.{name}" for name in CONVENTIONS]
    for row, convention in zip(rows, CONVENTIONS.values(), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2].startswith({True: "inside", False: "outside", None: "none"}[convention.eps_in_sqrt])
        assert float(cells[3]) == convention.initial_scale


def test_docstrings_name_the_frameworks_on_the_right_side_of_the_root():
    inside = {c.framework.split(".")[0].split()[0].lower() for c in CONVENTIONS.values() if c.eps_in_sqrt}
    outside = {c.framework.split(".")[0].lower() for c in CONVENTIONS.values() if c.eps_in_sqrt is False}
    names = {"optax": "optax", "keras": "keras", "tf": "tf1", "timm": "timm", "torch": "pytorch"}
    for function in (_transform.rmsprop,):  # scale_by_rms refers to it
        text = " ".join(function.__doc__.split())
        match = re.search(r"inside the square root \(([^)]*)\) or outside it \(([^)]*)\)", text)
        said_inside = {part.strip().lower() for part in match.group(1).split(",")}
        said_outside = {part.strip().lower() for part in match.group(2).split(",")}
        assert said_inside == {names[n] for n in inside if n in names}
        assert said_outside == {names[n] for n in outside}

"""Per-leaf arguments (:mod:`rmsprop_jax._leaf_rules`): one value, a prefix matched by path keys, a callable."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from flax import nnx

from rmsprop_jax._leaf_rules import rule


def _check(raw: object, name: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValueError(f"Invalid {name} value: {raw!r}")
    return raw


def _rule(raw: object):
    return rule("level", raw, _check, lambda x: isinstance(x, int))


PARAMS = {"a": jnp.zeros(2), "b": [jnp.zeros(3), {"c": jnp.zeros(4)}]}


def test_one_value_applies_to_every_leaf_and_is_checked_at_construction():
    assert [c.value for c in _rule(3).choose(PARAMS)] == [3, 3, 3]
    assert {c.rule for c in _rule(3).choose(PARAMS)} == {"level"}
    with pytest.raises(ValueError, match="Invalid level value: 'x'"):
        rule("level", "x", _check, lambda x: isinstance(x, (int, str)))


def test_a_prefix_applies_each_entry_to_the_leaves_under_its_path():
    choices = _rule({"a": 1, "b": [2, 3]}).choose(PARAMS)
    assert [(c.value, c.rule) for c in choices] == [(1, "level['a']"), (2, "level['b'][0]"), (3, "level['b'][1]")]


def test_a_dict_prefix_matches_an_nnx_state_by_path_keys():
    model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Linear(3, 1, rngs=nnx.Rngs(1)))
    state = nnx.state(model, nnx.Param)
    choices = _rule({"layers": {0: 1, 1: 2}}).choose(state)
    assert [c.value for c in choices] == [1, 1, 2, 2]


def test_a_prefix_that_misses_a_leaf_or_names_no_leaf_is_refused():
    with pytest.raises(ValueError, match=r"leaf \['b'\]\[1\]\['c'\] of the params lies under no entry"):
        _rule({"a": 1, "b": [2]}).choose(PARAMS)
    with pytest.raises(ValueError, match=r"level\['z'\] matches no leaf"):
        _rule({"a": 1, "b": 2, "z": 3}).choose(PARAMS)
    with pytest.raises(ValueError, match=r"Invalid level\['b'\] value: 'x'"):
        _rule({"a": 1, "b": "x"})
    with pytest.raises(ValueError, match="must be one value, a pytree prefix of values, or a callable"):
        _rule([])


def test_a_callable_gets_each_path_and_param_and_its_results_are_checked():
    seen = []

    def level(path: str, param: object) -> int:
        seen.append(path)
        return jnp.size(param)

    assert [c.value for c in _rule(level).choose(PARAMS)] == [2, 3, 4]
    assert seen == ["['a']", "['b'][0]", "['b'][1]['c']"]
    assert {c.rule for c in _rule(level).choose(PARAMS)} == {"level(path, param)"}
    with pytest.raises(ValueError, match=r"Invalid level\(\"\['a'\]\", param\) value: 'no'"):
        _rule(lambda path, param: "no").choose(PARAMS)

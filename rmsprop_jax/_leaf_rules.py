"""Per-leaf choices: one value for every leaf, a pytree prefix of values, or a callable of each leaf.

An argument that may differ from leaf to leaf (``state_dtype``, ``offload_state``) takes, as
optax's masks do, one of three forms:

- **one value** for every leaf (``state_dtype="8bit"``);
- **a pytree prefix** of values (``{"embed": "float32", "blocks": "8bit"}``): each entry applies to
  every leaf under its path. Entries are matched to the params' leaves by their path keys, so a
  plain dict prefix applies to a Flax NNX ``State``, a linen params dict or a list alike; each leaf
  must lie under exactly one entry, and an entry under which no leaf lies is an error (a typo would
  otherwise silently leave leaves at another setting);
- **a callable** ``fn(path, param) -> value`` (path as :func:`jax.tree_util.keystr` writes it, e.g.
  ``"['blocks'][0]['kernel']"``; the param as an array or abstract value), called once per leaf
  when ``init`` plans the state.

A :class:`LeafRule` holds the argument validated: values at construction (naming the prefix entry:
``Invalid state_dtype['embed'] value: ...``), a callable's results at ``init`` (naming the leaf).
:meth:`LeafRule.choose` gives each leaf's value and the rule that chose it, in the words
:func:`rmsprop_jax.state_report` prints (``state_dtype['embed']``, ``state_dtype(path, param)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import jax

from rmsprop_jax import _nnx_compat as compat

T = TypeVar("T")

Path = tuple[str, ...]
"""A path as the keys' own words (``("['blocks']", "[0]")``): a dict key, a list index and an NNX
``State`` key read alike."""


class Choice(NamedTuple, Generic[T]):
    """One leaf's value and the rule that chose it (``"state_dtype['embed']"``)."""

    value: T
    rule: str


def _words(path: Sequence[Any]) -> Path:
    return tuple(jax.tree_util.keystr((key,)) for key in path)


@dataclasses.dataclass(frozen=True, eq=False)
class LeafRule(Generic[T]):
    """A validated per-leaf argument: one value, a prefix of values, or a callable.

    Attributes:
      argument: The argument's name as the caller spells it (a preset's own name).
      check: Validates one raw value, naming it (``check(raw, "state_dtype['embed']")``).
      value: The one value, where the argument is one (else ``None``).
      entries: The prefix's entries, (path, value) in the prefix's leaf order.
      function: The callable, where the argument is one.
    """

    argument: str
    check: Callable[[Any, str], T]
    value: T | None = None
    entries: tuple[tuple[Path, T], ...] | None = None
    function: Callable[[str, Any], Any] | None = None

    @property
    def single(self) -> bool:
        """Whether the argument is one value for every leaf."""
        return self.entries is None and self.function is None

    def known_values(self) -> list[T]:
        """Every value the rule can choose, where that is known before ``init`` (not for a callable)."""
        if self.function is not None:
            return []
        if self.entries is not None:
            return [value for _, value in self.entries]
        return [self.value]  # type: ignore[list-item]

    def choose(self, params: Any) -> list[Choice[T]]:
        """Each leaf's value and the rule that chose it, in the params' leaf order.

        Raises:
          ValueError: a prefix does not cover the params (a leaf under no entry, or an entry over no
            leaf), or a callable returned an invalid value (the leaf's path is named).
        """
        with_paths = jax.tree_util.tree_flatten_with_path(params, is_leaf=compat.is_variable)[0]
        if self.function is not None:
            out = []
            for path, leaf in with_paths:
                where = jax.tree_util.keystr(path) or "<root>"
                raw = self.function(where, compat.value_of(leaf))
                value = self.check(raw, f"{self.argument}({where!r}, param)")
                out.append(Choice(value, f"{self.argument}(path, param)"))
            return out
        if self.entries is None:
            return [Choice(self.value, self.argument) for _ in with_paths]  # type: ignore[arg-type]
        used = [False] * len(self.entries)
        out = []
        for path, _ in with_paths:
            words = _words(path)
            matches = [i for i, (prefix, _) in enumerate(self.entries) if words[: len(prefix)] == prefix]
            if len(matches) != 1:
                where = "".join(words) or "<root>"
                why = "lies under no entry of" if not matches else "lies under several entries of"
                raise ValueError(
                    f"Invalid {self.argument} value: leaf {where} of the params {why} it (a prefix of the "
                    f"params' tree gives each leaf one value; entries: {self._entry_names()})"
                )
            used[matches[0]] = True
            prefix, value = self.entries[matches[0]]
            out.append(Choice(value, self.argument + "".join(prefix)))
        unused = [
            self.argument + "".join(prefix) for (prefix, _), hit in zip(self.entries, used, strict=True) if not hit
        ]
        if unused:
            raise ValueError(
                f"Invalid {self.argument} value: {', '.join(unused)} matches no leaf of the params (leaf paths "
                f"look like {''.join(_words(with_paths[0][0])) if with_paths else '<none>'})"
            )
        return out

    def _entry_names(self) -> str:
        assert self.entries is not None
        return ", ".join(self.argument + ("".join(prefix) or "<root>") for prefix, _ in self.entries)


def rule(argument: str, raw: Any, check: Callable[[Any, str], T], is_value: Callable[[Any], bool]) -> LeafRule[T]:
    """The :class:`LeafRule` of an argument as the caller passed it.

    Args:
      argument: The argument's name as the caller spells it.
      raw: What the caller passed.
      check: Validates one value, naming it in its error.
      is_value: Whether an object is one value (else a callable or a prefix tree of values).

    Raises:
      ValueError: naming the argument (or the prefix entry), for an invalid value or an empty prefix.
    """
    if is_value(raw):
        return LeafRule(argument, check, value=check(raw, argument))
    if callable(raw):
        return LeafRule(argument, check, function=raw)

    def leaf(x: Any) -> bool:
        return compat.is_variable(x) or is_value(x)

    with_paths = jax.tree_util.tree_flatten_with_path(raw, is_leaf=leaf)[0]
    if not with_paths:
        raise ValueError(
            f"Invalid {argument} value: {raw!r} ({argument} must be one value, a pytree prefix of values, or a "
            "callable of each leaf's path and param)"
        )
    entries = []
    for path, value in with_paths:
        words = _words(path)
        entries.append((words, check(compat.value_of(value), argument + "".join(words))))
    return LeafRule(argument, check, entries=tuple(entries))

"""The facts that tell the frameworks' RMSProp apart, in one table.

The porting tables of the documentation (:func:`porting_table`) and of README
(:func:`short_porting_table`) are rendered from :data:`CONVENTIONS`, and the tests check
every row against the configuration the preset actually builds and against the real libraries' trajectories.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

WeightDecay = Literal["coupled", "decoupled", "coupled or decoupled", "none"]


class Convention(NamedTuple):
    """One framework's (or paper's) RMSProp, as its preset reproduces it.

    Attributes:
      framework: The reference implementation, as its users name it.
      preset: The name of the preset in :mod:`rmsprop_jax.presets`.
      eps_in_sqrt: ``True``: eps is added to the average inside the square root;
        ``False``: to the root, outside it; ``None``: there is no eps.
      initial_scale: The value the square average starts at.
      lr_in_momentum: ``True``: the momentum buffer accumulates
        ``lr * g / rms`` (the update is ``-buffer``); ``False``: it accumulates
        ``g / rms`` and the update is ``-lr * buffer``; ``None``: no momentum.
      weight_decay: How ``weight_decay`` enters: added to the gradient
        (``"coupled"``), subtracted from the parameter as ``lr * wd * p``
        (``"decoupled"``), either by a flag, or ``"none"`` (no such argument).
      centered: ``"optional"`` (a ``centered`` argument), ``"always"`` or ``"never"``.
      defaults: The preset's default hyperparameters, in the framework's names.

    Example:
      >>> from rmsprop_jax import presets
      >>> torch = presets.CONVENTIONS["pytorch"]
      >>> torch.eps_in_sqrt, torch.lr_in_momentum, torch.weight_decay, dict(torch.defaults)
      (False, False, 'coupled', {'lr': 0.01, 'alpha': 0.99, 'eps': 1e-08})
    """

    framework: str
    preset: str
    eps_in_sqrt: bool | None
    initial_scale: float
    lr_in_momentum: bool | None
    weight_decay: WeightDecay
    centered: Literal["optional", "always", "never"]
    defaults: Mapping[str, float]


#: Every preset's :class:`Convention`, keyed by the preset's name (the porting tables
#: of the site and of README are this table, rendered).
CONVENTIONS: dict[str, Convention] = {
    convention.preset: convention
    for convention in (
        Convention(
            "torch.optim.RMSprop", "pytorch", False, 0.0, False, "coupled", "optional",
            {"lr": 0.01, "alpha": 0.99, "eps": 1e-8},
        ),
        Convention(
            "keras.optimizers.RMSprop (Keras 3)", "keras", True, 0.0, True, "decoupled", "optional",
            {"learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-7},
        ),
        Convention(
            "tf.compat.v1.train.RMSPropOptimizer", "tensorflow_v1", True, 1.0, True, "none", "optional",
            {"decay": 0.9, "epsilon": 1e-10},
        ),
        Convention(
            "timm RMSpropTF", "timm", True, 1.0, True, "coupled or decoupled", "optional",
            {"lr": 0.01, "alpha": 0.9, "eps": 1e-10},
        ),
        Convention(
            "optax.rmsprop", "optax", True, 0.0, True, "coupled or decoupled", "optional",
            {"decay": 0.9, "eps": 1e-8},
        ),
        Convention(
            "Hinton 2012, lecture 6e", "hinton2012", None, 0.0, None, "none", "never",
            {"decay": 0.9},
        ),
        Convention(
            "Graves 2013, eqs. 38-41", "graves2013", True, 0.0, True, "none", "always",
            {"learning_rate": 1e-4, "decay": 0.95, "momentum": 0.9, "eps": 1e-4},
        ),
        Convention(
            "Nature DQN 2015 (NeuralQLearner.lua)", "dqn2015", True, 0.0, None, "none", "always",
            {"learning_rate": 2.5e-4, "decay": 0.95, "eps": 0.01},
        ),
    )
}  # fmt: skip


def _eps(convention: Convention) -> str:
    return {True: "inside the root", False: "outside the root", None: "none"}[convention.eps_in_sqrt]


def _momentum(convention: Convention) -> str:
    return {True: "lr inside the buffer", False: "lr outside the buffer", None: "no momentum"}[
        convention.lr_in_momentum
    ]


def porting_table() -> str:
    """The porting table in Markdown, one row per preset (the site's Porting page shows it)."""
    rows = [
        "| reference | preset | eps | average starts at | momentum | weight decay | defaults |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CONVENTIONS.values():
        defaults = ", ".join(f"{name} {value:g}" for name, value in c.defaults.items())
        centered = ", always centered" if c.centered == "always" else ""
        rows.append(
            f"| {c.framework} | `presets.{c.preset}` | {_eps(c)}{centered} | {c.initial_scale:g} | "
            f"{_momentum(c)} | {c.weight_decay} | {defaults} |"
        )
    return "\n".join(rows)


_SHORT_NAMES = {
    "pytorch": "PyTorch",
    "keras": "Keras 3",
    "tensorflow_v1": "TF1",
    "timm": "timm RMSpropTF",
    "optax": "optax",
    "hinton2012": "Hinton 2012",
    "graves2013": "Graves 2013",
    "dqn2015": "DQN 2015",
}


def short_porting_table() -> str:
    """The porting table in short form, narrow enough for a terminal (README shows it)."""
    rows = ["| from | use | eps | average starts at | lr in momentum buffer |", "|---|---|---|---|---|"]
    for c in CONVENTIONS.values():
        lr = {True: "yes", False: "no", None: "no momentum"}[c.lr_in_momentum]
        rows.append(f"| {_SHORT_NAMES[c.preset]} | `presets.{c.preset}` | {_eps(c)} | {c.initial_scale:g} | {lr} |")
    return "\n".join(rows)

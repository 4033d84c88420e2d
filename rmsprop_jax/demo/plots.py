"""PNG plots of training runs (matplotlib's object API: no global backend is touched).

``runs`` map a label to a history; the label is the curve's legend entry, so pass one
that names the optimizer and its settings (the demo passes ``OptimizerChoice.title``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure

from rmsprop_jax.demo.train import History


def _add_curves(figure: Figure, position: int, columns: int, runs: Mapping[str, History], what: str) -> None:
    """One panel: ``what`` is ``"loss"`` (training loss, log scale) or ``"accuracy"`` (test)."""
    axes = figure.add_subplot(1, columns, position)
    for label, history in runs.items():
        if what == "loss":
            axes.plot(history.log_steps, history.train_loss, label=label)
        else:
            axes.plot(history.eval_steps, history.test_accuracy, label=label)
    if what == "loss":
        axes.set_yscale("log")
        axes.set_ylabel("training loss (mean over each log interval)")
    else:
        lowest = min(min(history.test_accuracy) for history in runs.values())
        axes.set_ylim(max(0.0, lowest - 0.02), 1.0)
        axes.set_ylabel("test accuracy")
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    # Every curve names what produced it: the optimizer and its settings.
    axes.legend(loc="upper right" if what == "loss" else "lower right", fontsize="x-small")


def save_loss(path: Path, runs: Mapping[str, History]) -> Figure:
    """Writes the training-loss curve of each run to one PNG; returns the figure."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    _add_curves(figure, 1, 1, runs, "loss")
    figure.savefig(path, dpi=120)
    return figure


def save_test_accuracy(path: Path, runs: Mapping[str, History]) -> Figure:
    """Writes the test-accuracy curve of each run to one PNG; returns the figure."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    _add_curves(figure, 1, 1, runs, "accuracy")
    figure.savefig(path, dpi=120)
    return figure


def save_comparison(path: Path, runs: Mapping[str, History]) -> Figure:
    """Writes loss and test accuracy of all runs side by side to one PNG; returns the figure."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    _add_curves(figure, 1, 2, runs, "loss")
    _add_curves(figure, 2, 2, runs, "accuracy")
    figure.savefig(path, dpi=120)
    return figure

"""The demo's plots say what produced them."""

from __future__ import annotations

from rmsprop_jax.demo import plots
from rmsprop_jax.demo.optimizers import baseline_choices, rmsprop_choice
from rmsprop_jax.demo.train import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(scale: float) -> History:
    return History([10, 20], [2.0 * scale, 1.0 * scale], [0.5, 0.6], [10, 20], [0.5, 0.7 * scale])


def _legend(figure) -> list[list[str]]:
    return [[text.get_text() for text in axes.get_legend().get_texts()] for axes in figure.axes]


def test_every_curve_is_labelled_with_its_optimizer_and_settings(tmp_path):
    choices = [rmsprop_choice(None, None, steps=100), *baseline_choices(100)]
    runs = {choice.title: _history(1.0 - 0.1 * i) for i, choice in enumerate(choices)}
    titles = list(runs)
    assert titles[0] == (
        "rmsprop_jax.rmsprop(decay=0.99, eps=1e-08, momentum=0.9, centered=False), peak lr 0.001, "
        "warm-up + cosine, clip 1"
    )
    assert titles[1].startswith("optax.adam(), peak lr 0.01") and titles[2].startswith("optax.sgd(momentum=0.9)")
    comparison = plots.save_comparison(tmp_path / "compare.png", runs)
    assert _legend(comparison) == [titles, titles]
    single = dict(list(runs.items())[:1])
    assert _legend(plots.save_loss(tmp_path / "loss.png", single)) == [titles[:1]]
    assert _legend(plots.save_test_accuracy(tmp_path / "acc.png", single)) == [titles[:1]]
    for name in ("compare.png", "loss.png", "acc.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_a_preset_title_names_the_preset():
    assert rmsprop_choice("pytorch", None, steps=100).title.startswith("presets.pytorch(), peak lr 0.01")

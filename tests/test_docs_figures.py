"""README's and the documentation's figures are the results files they come from."""

from __future__ import annotations

import json
import re

from helpers import ROOT, load_script

README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_readme_quickstart_figures_are_the_demo_results_file():
    demo_accuracy = load_script("benchmarks/demo_accuracy.py")
    results = json.loads(demo_accuracy.RESULTS.read_text())
    low, high = demo_accuracy.accuracy_range(results, "rmsprop_jax.rmsprop")
    seconds = [run["train_seconds"] for run in next(iter(results["runs"].values())).values()]
    quickstart = _flat(README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0])
    assert f"test accuracy {low:.3f}-{high:.3f} over seeds 0-2" in quickstart
    assert f"{min(seconds):.1f}-{max(seconds):.1f} s of training" in quickstart
    assert demo_accuracy.RESULTS.name in quickstart


def test_the_demo_table_is_the_results_file():
    demo_accuracy = load_script("benchmarks/demo_accuracy.py")
    results = json.loads(demo_accuracy.RESULTS.read_text())
    assert demo_accuracy.markdown(results) in (DOCS / "getting_started.md").read_text()


def test_the_8bit_demo_table_is_the_results_file():
    demo_8bit = load_script("benchmarks/demo_8bit.py")
    results = json.loads(demo_8bit.RESULTS.read_text())
    assert demo_8bit.markdown(results) in (DOCS / "numerics.md").read_text()
    assert results["seeds"] == [0, 1, 2] and set(results["runs"]) == {"plain", "momentum", "centered"}


def test_the_packing_table_is_the_results_file():
    packing = load_script("benchmarks/packing.py")
    results = json.loads(packing.RESULTS.read_text())
    assert packing.markdown(results) in (DOCS / "speed.md").read_text()


def test_the_trace_and_compile_table_is_the_results_file():
    script = load_script("benchmarks/trace_compile.py")
    results = json.loads(script.RESULTS.with_suffix(".json").read_text())
    assert script.markdown(results) in (DOCS / "speed.md").read_text()
    assert script.markdown(results) == script.RESULTS.with_suffix(".md").read_text()


def test_the_suite_tables_on_the_speed_page_are_the_results_files():
    """The Speed page includes each suite report; each report is its JSON rendered (plus a note)."""
    suite = load_script("benchmarks/suite.py")
    speed = (DOCS / "speed.md").read_text()
    included = re.findall(r"```\{include\} \.\./benchmarks/results/(\S+)\.md", speed)
    included = [name for name in included if not name.startswith(("step-8bit", "step-4bit"))]  # step_8bit.py's
    assert len(included) == 3
    for name in included:
        rendered = suite.markdown(json.loads((RESULTS / f"{name}.json").read_text())).strip()
        assert (RESULTS / f"{name}.md").read_text().startswith(rendered), name
    for image in re.findall(r"\]\(\.\./(benchmarks/results/\S+\.png)\)", speed):
        assert (ROOT / image).is_file(), image
    assert len(re.findall(r"\.png\)", speed)) == 2


def _speed_figures(pattern: str, moved: str) -> tuple[str, ...]:
    """The figures a paragraph of the Speed page quotes, by ``pattern``'s groups (``moved``: the failure's words)."""
    quoted = re.search(pattern, _flat((DOCS / "speed.md").read_text()))
    assert quoted, moved
    return quoted.groups()


def test_the_8bit_speed_figures_are_the_results_file():
    """The Speed page's 8-bit paragraph quotes the 8-bit run's table (itself the JSON rendered)."""
    table = (RESULTS / "cpu2core-2026-11-24-8bit.md").read_text()
    quoted = _speed_figures(
        r"plain ([0-9.]+) ms against optax's ([0-9.]+) \(\*\*([0-9.]+)x\*\*\), centered with momentum "
        r"([0-9.]+) against ([0-9.]+) ms \(\*\*([0-9.]+)x\*\*\)",
        "the 8-bit paragraph's figures moved",
    )
    figures = (quoted[:3], quoted[3:])
    for variant, (ours, theirs, ratio) in zip(("plain", "centered+momentum"), figures, strict=True):
        row = next(line for line in table.splitlines() if line.startswith(f"| {variant}, ") and "8bit state" in line)
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1].split()[0] == ours and cells[2].split()[0] == theirs, (variant, cells)
        assert f"{float(cells[6]):.1f}" == ratio, (variant, cells[6], ratio)


def test_the_8bit_coverage_of_the_model_trees_is_the_results_file_on_numerics():
    assert (RESULTS / "model-trees-8bit.md").read_text() in (DOCS / "numerics.md").read_text()


def test_the_real_model_tables_are_the_results_file():
    """The Speed page's full table and the README's summary are ``results/real-models-cpu2core.json``."""
    script = load_script("benchmarks/real_models.py")
    results = json.loads(script.RESULTS.with_suffix(".json").read_text())
    assert [row["tree"] for row in results["rows"]] == list(script.TREES)
    assert script.markdown(results) == script.RESULTS.with_suffix(".md").read_text()
    assert script.markdown(results) in (DOCS / "speed.md").read_text()
    assert script.summary_markdown(results) in README.read_text()


def test_the_4bit_step_table_is_its_results_file_and_the_speed_page_quotes_it():
    script = load_script("benchmarks/step_8bit.py")
    results = json.loads((RESULTS / "step-4bit-cpu2core.json").read_text())
    assert (RESULTS / "step-4bit-cpu2core.md").read_text() == script._markdown(results)
    ratio = {(r["leaf"], r["variant"], r["form"]): r["4-bit / 8-bit"] for r in results["two_cores"]}
    quoted = _speed_figures(
        r"on ResNet-50 the 4-bit step is ([0-9.]+)x the 8-bit one, on EfficientNet-B0 ([0-9.]+)x; on one 8192 x "
        r"2048 leaf, centered with momentum, ([0-9.]+)x; plain RMSProp's single leaves ([0-9.]+)-([0-9.]+)x",
        "the 4-bit paragraph's figures moved",
    )
    plain = [v for (leaf, variant, _), v in ratio.items() if variant == "plain"]
    expected = [ratio[(tree, script.RECIPE, "update+apply")] for tree in ("ResNet-50", "EfficientNet-B0")]
    expected += [ratio[("8192x2048", "centered+momentum", "update+apply")], min(plain), max(plain)]
    assert [float(x) for x in quoted] == expected


def test_the_one_leaf_8bit_table_is_its_results_file_and_the_speed_page_quotes_it():
    """``results/step-8bit-cpu2core.md`` is its JSON rendered; Speed's paragraph quotes its ratios."""
    script = load_script("benchmarks/step_8bit.py")
    results = json.loads((RESULTS / "step-8bit-cpu2core.json").read_text())
    assert (RESULTS / "step-8bit-cpu2core.md").read_text() == script._markdown(results)
    ratios = {
        (r["leaf"], r["variant"]): r["8-bit / optax"] for r in results["two_cores"] if r["form"] == "update+apply"
    }
    quoted = _speed_figures(
        r"plain 8-bit steps at ([0-9.]+)x optax at 4096 x 1024 and ([0-9.]+)x at 8192 x 2048 .*?"
        r"centered with momentum at ([0-9.]+)x and ([0-9.]+)x",
        "the one-leaf paragraph's figures moved",
    )
    expected = [ratios[("4096x1024", "plain")], ratios[("8192x2048", "plain")]]
    expected += [ratios[("4096x1024", "centered+momentum")], ratios[("8192x2048", "centered+momentum")]]
    assert [float(x) for x in quoted] == expected
    trees = _speed_figures(
        r"the 8-bit step is ([0-9.]+)x optax's on EfficientNet-B0, ([0-9.]+)x on\s+MobileNetV3-Large, "
        r"([0-9.]+)x on ResNet-50 and ([0-9.]+)x on ViT-B/16 \(A/A ([0-9.]+)-([0-9.]+)\)",
        "the real trees' figures moved",
    )
    by_tree = [ratios[(tree, script.RECIPE)] for tree in script.TREES]
    controls = [r["A/A"] for r in results["two_cores"] if r["variant"] == script.RECIPE]
    assert [float(x) for x in trees] == [*by_tree, min(controls), max(controls)]


def test_the_init_paragraph_quotes_the_init_results_file():
    """Speed's "A first init" paragraph: the ratio ranges and EfficientNet-B0's seconds are the JSON's."""
    script = load_script("benchmarks/init_time.py")
    results = json.loads(script.RESULTS.with_suffix(".json").read_text())
    assert script.markdown(results) == script.RESULTS.with_suffix(".md").read_text()
    rows = {row["tree"]: row["seconds"] for row in results["rows"]}

    def span(contender: str) -> str:
        ratios = [seconds[contender] / seconds["optax"] for seconds in rows.values()]
        return f"{min(ratios):.2f}-{max(ratios):.2f}x"

    efficientnet = rows["EfficientNet-B0"]
    quoted = _speed_figures(
        r"Per leaf the init takes (\S+) optax's and with the 8-bit state (\S+) \(EfficientNet-B0: "
        r"([0-9.]+) s and ([0-9.]+) s against optax's ([0-9.]+) s\); packed, (\S+)\.",
        "the init paragraph's figures moved",
    )
    assert quoted == (
        span("per leaf"),
        span("8-bit"),
        f"{efficientnet['per leaf']:.2f}",
        f"{efficientnet['8-bit']:.2f}",
        f"{efficientnet['optax']:.2f}",
        span("packed"),
    )


def test_the_host_memory_paragraph_quotes_the_host_state_results_file():
    script = load_script("benchmarks/host_state.py")
    (row,) = json.loads(script.RESULTS.with_suffix(".json").read_text())["rows"]
    seconds = row["seconds"]
    ratios = [seconds[f"{name}, host"] / seconds[f"{name}, device"] for name in ("float32", "8-bit")]
    control = seconds[script.CONTROL] / seconds["float32, device"]
    scaling = _flat((DOCS / "scaling.md").read_text())
    assert f"{row['tree']} with momentum at {ratios[0]:.2f}x the device-memory step in float32" in scaling
    assert f"and {ratios[1]:.2f}x in 8 bits (A/A {control:.2f};" in scaling
    assert script.RESULTS.name in scaling


def test_the_numerics_page_quotes_the_4bit_results_files():
    """Numerics, "4-bit state": the demo over five seeds, the noisy quadratic, the code maps and the bytes per
    param, each as its results file renders it."""
    numerics = (DOCS / "numerics.md").read_text()
    demo = load_script("benchmarks/demo_8bit.py")
    assert demo.markdown(json.loads((RESULTS / "demo_mnist1d_4bit.json").read_text())) in numerics
    for name in ("noisy-quadratic", "model-trees-4bit", "momentum-4bit"):
        assert (RESULTS / f"{name}.md").read_text().strip() in numerics, name
    maps = (RESULTS / "code-maps-4bit.md").read_text().strip().splitlines()
    assert all(line.strip() in numerics for line in maps if line.strip()), "code-maps-4bit"
    quadratic = load_script("benchmarks/noisy_quadratic.py")
    results = json.loads((RESULTS / "noisy-quadratic.json").read_text())
    assert (RESULTS / "noisy-quadratic.md").read_text() == quadratic.markdown(results) + "\n"


def test_the_rl_runs_the_numerics_page_quotes_reach_the_cap_with_every_state():
    numerics = _flat((DOCS / "numerics.md").read_text())
    assert "reach CartPole's cap of 500 on 4 of 4 seeds with every state" in numerics
    for example in ("dqn", "a2c"):
        results = json.loads((RESULTS / f"rl-{example}-cartpole-state-dtypes.json").read_text())["results"]
        assert [r["optimizer"] for r in results] == ["rmsprop_jax", "rmsprop_jax_8bit", "rmsprop_jax_4bit"]
        assert all(r["seeds_at_cap"] == 4 and len(r["seeds"]) == 4 for r in results), example

"""Smoke test: the benchmark suite runs at tiny sizes and writes its report (no timing assertions)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
from helpers import ROOT, load_script


def _load_suite():
    return load_script("benchmarks/suite.py")


def test_suite_runs_at_tiny_size_and_writes_json_markdown_and_plot(tmp_path):
    suite = _load_suite()
    report = suite.run(suite.quick_cases(), repeats=2, compile_leaves=[2], out_dir=tmp_path)
    written = sorted(p.suffix for p in tmp_path.iterdir())
    assert written == [".json", ".md", ".png"]
    assert json.loads(next(tmp_path.glob("*.json")).read_text()) == json.loads(json.dumps(report))
    assert [row["case"]["variant"] for row in report["step_time"]] == [c.variant for c in suite.quick_cases()]
    for row in report["step_time"]:
        assert {"rmsprop_jax", "optax", "torch foreach=True", "torch foreach=False"} <= set(row["times"])
        for value in (row["floor_ms"], row["ours_over_optax"], row["ours_over_floor"]):
            assert math.isfinite(value) and value > 0
    bf16, eight_bit = report["step_time"][-2:]
    assert "rmsprop_jax (float32 state)" in bf16["times"]  # the default state's cost on its own row
    assert "rmsprop_jax (float32 state)" in eight_bit["times"]
    hlo = eight_bit["hlo"]  # the 8-bit rows count the compiled HLO: fewer argument bytes than optax's
    assert hlo["rmsprop_jax"]["argument_bytes"] < hlo["optax"]["argument_bytes"]
    assert {(r["variant"], r["leaves"]) for r in report["compile"]} == {
        ("plain", 2),
        ("momentum", 2),
        ("centered+momentum", 2),
    }
    for row in report["compile"]:  # every contender timed, the A/A control beside optax
        assert {"rmsprop_jax", "optax", suite.CONTROL} <= set(row) and row["control_over_optax"] > 0
    state = {(r["variant"], r["dtype"]): r for r in report["state_bytes"]}
    assert state[("plain", "float32")]["rmsprop_jax"] == 4 == state[("plain", "float32")]["torch"]
    assert state[("centered+momentum", "bfloat16")]["rmsprop_jax"] == 6
    assert state[("plain", "float32, 8bit")]["rmsprop_jax"] <= 1.02
    assert state[("centered+momentum", "float32, 8bit")]["rmsprop_jax"] <= 3.06
    assert "| case |" in next(tmp_path.glob("*.md")).read_text()


def test_full_cases_cover_the_issue_matrix():
    suite = _load_suite()
    cases = suite.full_cases(gpu=False)
    assert {c.total for c in cases if c.variant == "plain" and c.leaves == 16} >= {10**6, 64 * 10**6}
    assert {c.leaves for c in cases} >= {1, 16, 256, 4096}
    assert {c.variant for c in cases} == set(suite.VARIANTS)
    assert {c.dtype for c in cases} == {"float32", "bfloat16"}
    assert max(c.total for c in suite.full_cases(gpu=True)) >= 10**8


def test_code_maps_measurement_runs_at_tiny_size(tmp_path):
    code_maps = load_script("benchmarks/code_maps.py")
    for name, table in code_maps.maps().items():
        assert table[0] == 0.0 and table[-1] == 1.0 and np.all(np.diff(table) > 0), name
    assert code_maps.maps()["dynamic signed (bitsandbytes RMSprop8bit)"].size == 129  # half the codes: negatives
    report = code_maps.main(
        ["--steps", "20", "--blocks", "2", "--decades", "1", "--encode-size", "4096", "--repeats", "2",
         "--out", str(tmp_path / "maps.json")]
    )  # fmt: skip
    assert (tmp_path / "maps.md").read_text().startswith("Simulated: 2 blocks")
    assert {row["rounding"] for row in report["drop"]["rows"]} == {"stochastic", "nearest"}
    assert all(math.isfinite(ms) and ms > 0 for ms in report["encode_ms"].values())


def test_demo_8bit_comparison_runs_at_tiny_size(tmp_path):
    demo_8bit = load_script("benchmarks/demo_8bit.py")
    results = demo_8bit.main(
        ["--seeds", "0", "--steps", "20", "--variants", "plain", "--out", str(tmp_path / "d.json")]
    )
    assert set(results["runs"]["plain"]) == {"float32", "8bit"}
    assert "| plain | 8bit |" in demo_8bit.markdown(results)
    assert 0 <= demo_8bit.largest_gap(results) <= 1


def test_demo_comparison_with_a_4bit_state_runs_at_tiny_size(tmp_path):
    demo_8bit = load_script("benchmarks/demo_8bit.py")
    argv = ["--seeds", "0", "--steps", "20", "--variants", "plain", "--state-dtypes", "float32", "8bit", "4bit"]
    results = demo_8bit.main([*argv, "--out", str(tmp_path / "d.json")])
    assert set(results["runs"]["plain"]) == {"float32", "8bit", "4bit"}
    table = demo_8bit.markdown(results)
    assert "| plain | 4bit |" in table and "| mean | - float32 |" in table


def test_noisy_quadratic_and_the_4bit_code_maps_run_at_tiny_size(tmp_path):
    quadratic = load_script("benchmarks/noisy_quadratic.py")
    results = quadratic.main(["--steps", "20", "--seeds", "0", "--out", str(tmp_path / "q")])
    assert set(results["runs"]["decay 0.99"]) == {"float32", "8bit", "4bit"}
    assert all(0 < v < 1.5 for by in results["runs"].values() for r in by.values() for v in r.values())
    maps = load_script("benchmarks/code_maps_4bit.py")
    results = maps.main(["--steps", "20", "--seeds", "0", "--out", str(tmp_path / "m")])
    assert set(results["runs"]["decay 0.999"]) == {"float32", "E4M0", "E3M1", "linear"}
    assert (tmp_path / "m.md").read_text() == maps.markdown(results) + "\n"


def test_the_4bit_momentum_measurement_runs_at_tiny_size(tmp_path):
    script = load_script("benchmarks/momentum_4bit.py")
    results = script.main(["--seeds", "0", "--steps", "20", "--out", str(tmp_path / "m")])
    assert set(results["runs"]) == set(script.CONFIGS)
    assert all(set(runs) == {"demo momentum", "demo centered", "quadratic, momentum 0.9 (distance)"}
               for runs in results["runs"].values())  # fmt: skip
    assert (tmp_path / "m.md").read_text() == script.markdown(results) + "\n"


def test_packing_benchmark_runs_at_tiny_size_and_writes_its_table(tmp_path):
    packing = load_script("benchmarks/packing.py")
    out = tmp_path / "packing.json"
    rows = packing.main(["--trees", "8x64", "2x65536", "--variants", "momentum", "--repeats", "2", "--out", str(out)])
    small, large = rows
    assert (small["packed_leaves"], small["groups"]) == (8, 1) and not small["hlo_identical_on_off"]
    assert (large["packed_leaves"], large["groups"]) == (0, 0) and large["hlo_identical_on_off"]
    assert all(math.isfinite(ms) and ms > 0 for row in rows for ms in row["median_ms"].values())
    # one stacked gradient copy per group: 8 x 64 float32 entries of temporaries at least
    assert small["memory"][packing.ON]["temp_bytes"] >= 8 * 64 * 4
    table = packing.markdown(json.loads(out.read_text()))
    assert table.count("\n") == 3 and "| 8x64 | momentum | 8/8 (1) |" in table and " -> " in table


def test_packing_benchmark_trees():
    packing = load_script("benchmarks/packing.py")
    mixed = packing.tree_shapes("mixed")
    sizes = {int(np.prod(shape)) for shape in mixed}
    assert len(mixed) == 2048 and len(set(mixed)) == 16 and min(sizes) == 64 and max(sizes) == 16384
    transformer = packing.tree_shapes("transformer")
    assert len(transformer) == 194 and (192,) in transformer and (192, 768) in transformer


def test_every_citation_of_the_notes_names_a_section_that_exists():
    """Code and docs cite the notes as NOTES.md and a section title in quotes; each must begin a section's title."""
    titles = [
        line.lstrip("#").strip()
        for line in (ROOT / "benchmarks" / "NOTES.md").read_text().splitlines()
        if line.startswith("#")
    ]
    cited = []
    for folder in ("rmsprop_jax", "benchmarks", "examples", "docs", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md") and "_build" not in path.parts and path.name != "NOTES.md":
                text = " ".join(path.read_text().split())  # a citation may wrap
                cited += [(path.name, m) for m in re.findall(r"NOTES\.md`+, \"([^\"]+)\"", text)]
    assert len(cited) >= 8
    for where, title in cited:
        assert any(t.startswith(title) for t in titles), (where, title)


def test_trace_compile_benchmark_runs_at_tiny_size_and_writes_its_table(tmp_path):
    script = load_script("benchmarks/trace_compile.py")
    results = script.main(["--leaves", "2", "--leaf-size", "8", "--rounds", "1", "--out", str(tmp_path / "t")])
    assert [row["variant"] for row in results["rows"]] == ["plain", "momentum", "centered+momentum"]
    assert (tmp_path / "t.md").read_text() == script.markdown(json.loads((tmp_path / "t.json").read_text()))


def test_real_model_benchmark_runs_at_tiny_size_and_writes_its_table(tmp_path):
    """One tree cut to its first 6 leaves: every contender, torch's timm included, in every part."""
    script = load_script("benchmarks/real_models.py")
    argv = ["--trees", "ViT-B/16", "--leaves", "6", "--repeats", "1", "--rounds", "1"]
    results = script.main([*argv, "--out", str(tmp_path / "r")])
    contenders = [script.OPTAX, script.CONTROL, *script.OURS]
    for row in results["rows"]:
        assert row["leaves"] == 6
        assert list(row["bytes"]) == list(row["compile"]) == contenders
        assert list(row["step"]) == [*contenders, script.TORCH, "floor"]
        assert row["bytes"]["per leaf"]["state_bytes_per_param"] == row["bytes"][script.OPTAX]["state_bytes_per_param"]
        assert row["step"][script.OPTAX]["over_optax"] == 1.0
    assert (tmp_path / "r.md").read_text() == script.markdown(json.loads((tmp_path / "r.json").read_text()))
    assert len(script.summary_markdown(results).splitlines()) == 2 + len(results["rows"])


def test_numerics_quotes_the_outlier_results_file():
    """Numerics' range for the spiked entry's neighbours is the committed run's (benchmarks/outlier_8bit.py)."""
    results = json.loads((ROOT / "benchmarks" / "results" / "outlier-8bit.json").read_text())
    spiked = [r for row in results["rows"] if row["case"] == "spike" and row["size"] == 1e30 for r in row["neighbours"]]
    numerics = (ROOT / "docs" / "numerics.md").read_text()
    low, high = (float(x) for x in re.search(r"tile step (\d\.\d\d)-(\d\.\d\d)x their float32", numerics).groups())
    assert len(spiked) > 50 and low == round(min(spiked), 2) and high == round(max(spiked), 2)


def test_host_state_benchmark_runs_at_tiny_size_and_writes_its_table(tmp_path):
    """ViT-B/16 cut to its first 4 leaves, float32 and 8-bit, in device and in host memory."""
    script = load_script("benchmarks/host_state.py")
    results = script.main(["--leaves", "4", "--rounds", "1", "--out", str(tmp_path / "r")])
    (row,) = results["rows"]
    assert set(row["seconds"]) == {*script.contenders(["float32", "8-bit"])} and all(
        s > 0 for s in row["seconds"].values()
    )
    assert row["memory"]["float32, host"]["host_traffic_bytes"] == 2 * row["memory"]["float32, host"]["state_bytes"]
    assert row["memory"]["float32, device"]["host_traffic_bytes"] == 0
    assert (tmp_path / "r.md").read_text() == script.markdown(json.loads((tmp_path / "r.json").read_text()))


def test_init_time_benchmark_runs_at_tiny_size_and_writes_its_table(tmp_path):
    """One tree cut to its first 4 leaves, optax and the 8-bit state, each init in a process of its own."""
    script = load_script("benchmarks/init_time.py")
    argv = ["--trees", "EfficientNet-B0", "--leaves", "4", "--rounds", "1", "--contenders", "optax", "8-bit"]
    results = script.main([*argv, "--out", str(tmp_path / "r")])
    (row,) = results["rows"]
    assert list(row["seconds"]) == ["optax", "8-bit"] and all(s > 0 for s in row["seconds"].values())
    assert (tmp_path / "r.md").read_text() == script.markdown(json.loads((tmp_path / "r.json").read_text()))


def test_step_8bit_benchmark_runs_at_tiny_size_and_writes_its_table(tmp_path):
    """No one-leaf shape and one tree cut to its first 4 leaves: timm's recipe, 8-bit against optax and its A/A copy."""
    script = load_script("benchmarks/step_8bit.py")
    argv = ["--rounds", "1", "--shapes", "--trees", "ViT-B/16", "--leaves", "4", "--out", str(tmp_path / "s")]
    results = script.main(argv)
    for rows in (results["two_cores"], results["one_core"]):
        (row,) = rows
        assert (row["leaf"], row["variant"], row["form"]) == ("ViT-B/16", script.RECIPE, "update+apply")
        assert all(row[name]["ms"] > 0 and row[name]["fusions"] > 0 for name in script.CONTENDERS)
        assert row["8-bit"]["bytes_per_entry"] < row["optax"]["bytes_per_entry"]
    assert (tmp_path / "s.md").read_text() == script._markdown(json.loads((tmp_path / "s.json").read_text()))


def test_step_benchmark_with_the_4bit_contender_runs_at_tiny_size(tmp_path):
    script = load_script("benchmarks/step_8bit.py")
    argv = ["--four-bit", "--rounds", "1", "--shapes", "--trees", "ViT-B/16", "--leaves", "4"]
    results = script.main([*argv, "--out", str(tmp_path / "s")])
    (row,) = results["two_cores"]
    assert row[script.FOUR_BIT]["ms"] > 0 and row["4-bit / 8-bit"] > 0
    assert row[script.FOUR_BIT]["bytes_per_entry"] < row["8-bit"]["bytes_per_entry"]
    assert "| 4-bit / 8-bit |" in (tmp_path / "s.md").read_text()


def test_the_benchmarks_readme_indexes_every_script_and_results_file():
    """``benchmarks/README.md`` names each script and each results file (by its name or stem's ``{...}`` group)."""
    index = (ROOT / "benchmarks" / "README.md").read_text()
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert f"`{script.name}`" in index, script.name
    for path in (ROOT / "benchmarks" / "results").iterdir():
        stem = path.name.split(".")[0]
        assert f"results/{path.name}" in index or f"results/{stem}." in index, path.name

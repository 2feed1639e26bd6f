"""`cifar-bench`: statistics, candidates, failure rows, outputs and the merged report."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cifar_edge.benchmarks.bench import (
    SCHEMA,
    TABLE_COLUMNS,
    BenchError,
    BenchOptions,
    Candidate,
    find_candidates,
    latency_stats,
    markdown_table,
    measure,
    pareto_front,
    read_results,
    run_benchmark,
)
from cifar_edge.benchmarks.cli import main
from cifar_edge.runtime.formats import FORMATS
from conftest import REPO, export_file

FAST = ["--min-time", "0.05", "--warmup", "2", "--batch-sizes", "1,8"]


def test_percentiles_of_a_known_series():
    stats = latency_stats(np.arange(1, 101) / 1000)  # 1..100 ms
    assert stats["runs"] == 100 and stats["p50"] == 50.5 and stats["min"] == 1.0
    assert stats["p90"] == pytest.approx(90.1) and stats["p99"] == pytest.approx(99.01)
    assert stats["outliers"] == 0 and stats["mean"] == 50.5


def test_slow_outliers_leave_the_mean_but_not_the_percentiles():
    rng = np.random.default_rng(0)
    series = np.concatenate([rng.normal(1.0, 0.01, 980), np.full(20, 100.0)]) / 1000
    stats = latency_stats(series)
    assert stats["outliers"] == 20
    assert stats["mean"] == pytest.approx(1.0, abs=0.01) and stats["std"] < 0.05
    assert stats["p99"] > 50, "percentiles still see the slow runs"


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 70.0), (2.0, 80.0), (3.0, 75.0), (0.5, 60.0), (2.0, 79.0), (5.0, 81.0)]
    assert sorted(pareto_front(points)) == [0, 1, 3, 5]


def test_export_folder_gives_every_format_and_the_keras_reference(tiny_export):
    out, manifest = tiny_export
    candidates = find_candidates([str(out)])
    assert [c.format for c in candidates if not c.reference] == [f.name for f in FORMATS]
    (reference,) = [c for c in candidates if c.reference]
    assert reference.engine == "keras" and str(reference.path) == manifest["source"]
    only = find_candidates([str(out)], ("onnxruntime",))
    assert {c.format for c in only} == {"onnx-fp32", "onnx-int8"}


def test_packaged_folders_get_no_keras_row_where_keras_is_not_installed(monkeypatch):
    from cifar_edge.benchmarks import discovery

    packaged = str(REPO / "runtime" / "models" / "edge")
    assert any(c.reference for c in find_candidates([packaged])), "the packaged manifest's source resolves here"
    monkeypatch.setattr(discovery, "keras_installed", lambda: False)
    assert not any(c.reference for c in find_candidates([packaged]))


def test_files_with_tta_in_the_graph_are_their_own_model_rows(tiny_export, tmp_path):
    out, manifest = tiny_export
    folder = tmp_path / "with-tta"
    shutil.copytree(out, folder)
    (folder / "manifest.json").write_text(json.dumps({**manifest, "tta": "6", "tta_views": 6}))
    candidates = find_candidates([str(out), str(folder)])
    tagged = [c for c in candidates if c.path.parent == folder and not c.reference]
    assert tagged and {c.model for c in tagged} == {f"{manifest['model']}+tta6"}
    references = [c for c in candidates if c.reference]
    assert {c.model for c in references} == {manifest["model"]}
    # The .keras source sees one view: the TTA manifest's Keras accuracy is not its figure.
    assert [c.export_accuracy for c in references] == [manifest["keras_accuracy"], None]


def test_bad_paths_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="no such file"):
        find_candidates([str(tmp_path / "missing")])
    with pytest.raises(BenchError, match="holds no manifest"):
        find_candidates([str(tmp_path)])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BenchError, match="not a model file"):
        find_candidates([str(tmp_path / "notes.txt")])


def test_a_model_that_cannot_load_becomes_a_failed_row(tmp_path, small_dataset):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model" * 100)
    row = measure(Candidate(broken, "litert", "tflite"), small_dataset.test, BenchOptions(min_time=0.01, warmup=0))
    assert row.status == "failed" and "not a loadable TFLite model" in row.error and row.accuracy is None
    gone = measure(Candidate(tmp_path / "gone.tflite", "litert", "tflite"), small_dataset.test, BenchOptions(min_time=0.01, warmup=0))
    assert gone.status == "failed" and "gone.tflite" in gone.error


def test_timing_cycles_through_the_rows_slice_by_slice(tiny_export, small_dataset):
    """A slow spell of the machine must land on every row, not on the one being timed."""
    candidates = [Candidate(export_file(tiny_export, name), "litert", name) for name in ("tflite-fp32", "tflite-int8")]
    steps = []
    options = BenchOptions(min_time=0.2, slice_time=0.05, warmup=1, batch_sizes=(1, 4), engines=("litert",))
    results = run_benchmark(candidates, small_dataset.test, options, None, on_step=steps.append)
    assert steps[:2] == ["tflite-fp32 (litert) loaded", "tflite-int8 (litert) loaded"]
    timed = [step.split(" (")[0] + step.split(")")[1] for step in steps[2:]]
    # 4 slices per batch size; the row order flips every step so neither row always goes first.
    assert timed[:4] == ["tflite-fp32 batch 1", "tflite-int8 batch 1", "tflite-int8 batch 4", "tflite-fp32 batch 4"]
    assert len(timed) == 2 * 2 * 4
    for row in results["rows"]:
        assert row["status"] == "ok" and row["latency_ms"]["runs"] >= 10 and set(row["throughput"]) == {"1", "4"}


@pytest.fixture(scope="module")
def bench_run(tiny_export, image_tree, tmp_path_factory):
    """The CLI on the tiny export (every format and the Keras reference) plus one broken file."""
    folder, _ = tiny_export
    broken = tmp_path_factory.mktemp("broken") / "broken.onnx"
    broken.write_bytes(b"not onnx" * 100)
    out = tmp_path_factory.mktemp("bench")
    code = main([str(folder), str(broken), "--out", str(out), "--data", str(image_tree), "--limit", "100",
                 "--device-name", "test-box", *FAST])
    return code, out, json.loads((out / "results.json").read_text())


def test_bench_measures_every_row_and_exits_1_for_the_failed_one(bench_run):
    code, out, results = bench_run
    assert code == 1
    rows = {row["format"]: row for row in results["rows"]}
    assert rows["onnx"]["status"] == "failed" and "not a loadable ONNX model" in rows["onnx"]["error"]
    for name in [f.name for f in FORMATS] + ["keras"]:
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["images"] == 100 and 0 <= row["accuracy"] <= 1
        latency = row["latency_ms"]
        assert latency["runs"] >= 10, "at least MIN_RUNS timed calls"
        assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert row["fps"] == pytest.approx(1000 / latency["p50"], rel=0.01)
        assert set(row["throughput"]) == {"1", "8"} and row["size_bytes"] > 0 and row["load_ms"] > 0


def test_bench_accuracies_match_the_export_validation_on_the_same_images(bench_run):
    _, _, results = bench_run
    for row in results["rows"]:
        if row["status"] == "ok":
            assert row["export_accuracy"] == pytest.approx(row["accuracy"]), row["format"]


def test_bench_outputs_follow_the_documented_schema(bench_run):
    _, out, results = bench_run
    assert results["schema"] == SCHEMA and results["device"]["name"] == "test-box"
    assert results["data"]["images"] == 100 and results["command"].startswith("cifar-bench ")
    documented = set(re.findall(r"^\| `(\w+)` \|", (REPO / "docs" / "bench-results.md").read_text(), re.MULTILINE))
    assert set(results) <= documented and set(results["rows"][0]) <= documented
    with open(out / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(results["rows"])
    header = (out / "results.md").read_text().splitlines()[0]
    assert header == "| Model | " + " | ".join(TABLE_COLUMNS) + " |", "the broken file is a second model"
    assert (out / "accuracy_vs_latency.png").stat().st_size > 10_000
    assert (out / "risk_coverage.png").stat().st_size > 10_000
    curve = next(r for r in results["rows"] if r["status"] == "ok")["risk_coverage"]
    assert len(curve) == 20 and curve[-1][0] == 1.0


def test_report_merges_devices_into_one_table_and_plot(bench_run, tmp_path, capsys):
    _, out, results = bench_run
    other = tmp_path / "pi"
    other.mkdir()
    results["device"]["name"] = "a-pi"
    (other / "results.json").write_text(json.dumps(results))
    merged = tmp_path / "merged"
    assert main(["report", str(out), str(other), "--out", str(merged)]) == 0
    table = (merged / "results.md").read_text().splitlines()
    assert table[0].startswith("| Device | Model | Format |")
    devices = [line.split("|")[1].strip() for line in table[2:]]
    assert devices == sorted(devices) and set(devices) == {"a-pi", "test-box"}
    assert len(read_results(str(merged))) == 2 and (merged / "accuracy_vs_latency.png").is_file()
    assert (merged / "risk_coverage.png").is_file()


def test_rows_of_several_models_get_a_model_column(bench_run):
    _, _, results = bench_run
    results = {**results, "rows": [row for row in results["rows"] if row["status"] == "ok"]}
    assert markdown_table([results]).splitlines()[0] == "| " + " | ".join(TABLE_COLUMNS) + " |"
    other = json.loads(json.dumps(results))
    for row in other["rows"]:
        row["model"] = "bigger"
    lines = markdown_table([results, other]).splitlines()
    assert lines[0].startswith("| Model | Format |")
    assert {line.split("|")[1].strip() for line in lines[2:]} == {"bigger", results["rows"][0]["model"]}


def test_one_model_from_two_folders_in_one_run_names_each_folder(bench_run):
    _, _, results = bench_run
    row = next(r for r in results["rows"] if r["status"] == "ok")
    rows = [{**row, "file": f"runs/new/export/{Path(row['file']).name}"}, {**row, "file": f"runtime/models/accurate/{Path(row['file']).name}"}]
    lines = markdown_table([{**results, "rows": rows}]).splitlines()
    assert lines[0].startswith("| Model | Format |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == [f"{row['model']} (export)", f"{row['model']} (accurate)"]
    # Two exports named alike: as many path parts as tell them apart, for those rows only.
    folders = ["runs/a-400/export", "runs/a-400-ft/export", "runs/packaged-edge"]
    rows = [{**row, "file": f"{folder}/{Path(row['file']).name}"} for folder in folders]
    lines = markdown_table([{**results, "rows": rows}]).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [f"{row['model']} ({f.removeprefix('runs/')})" for f in folders]


def test_report_of_something_else_is_one_line(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"schema": "other"}))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a cifar-bench/1 results file" in err[0] and "no results.json" in err[1]


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "required"),
    (["x.tflite", "--out", "o", "--batch-sizes", "1,zero"], "comma"),
    (["x.tflite", "--out", "o", "--min-time", "0"], "positive number"),
    (["missing.tflite", "--out", "o"], "no such file"),
])
def test_bench_bad_arguments_are_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_bench_runs_with_only_runtime_engines(tiny_export, image_tree, tmp_path):
    """What a Pi would run: no Keras row, and the children import no TensorFlow."""
    out = tmp_path / "pi"
    model = export_file(tiny_export, "tflite-int8")
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(model, single)
    assert main([str(single), "--out", str(out), "--data", str(image_tree), "--limit", "20", "--engines", "litert", *FAST]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["format"] for row in rows] == ["tflite"]


def test_per_class_accuracy_and_confusions_of_a_shipped_file(tiny_export, small_dataset, image_tree, tmp_path, capsys):
    from cifar_edge.benchmarks.per_class import main as per_class_main
    from cifar_edge.benchmarks.per_class import per_class

    model = export_file(tiny_export, "tflite-int8")
    result = per_class(str(model), small_dataset.test)
    assert result.confusion.sum() == len(small_dataset.test) == result.images
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / result.images)
    assert np.mean(list(result.per_class.values())) == pytest.approx(result.accuracy), "balanced split: mean of classes"
    counts = [count for _, _, count in result.confused_pairs()]
    assert counts == sorted(counts, reverse=True) and all(true != predicted for true, predicted, _ in result.confused_pairs())
    image = tmp_path / "confusion.png"
    assert per_class_main([str(model), "--data", str(image_tree), "--image", str(image)]) == 0
    printed = capsys.readouterr().out
    assert f"{100 * result.accuracy:.2f}%" in printed and "| airplane |" in printed and image.stat().st_size > 10_000
    assert per_class_main([str(model), "--data", str(tmp_path / "missing")]) == 2


def _second_run(results: dict, folder: Path, **changes) -> Path:
    run = json.loads(json.dumps(results))
    run["device"]["name"] = "test-box"  # the same machine again
    run["created"] = changes.pop("created", "2026-12-01T10:00:00+00:00")
    run["data"].update(changes)
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(run))
    return folder


def test_report_tells_runs_of_one_machine_apart(bench_run, tmp_path, capsys):
    _, out, results = bench_run
    again = _second_run(results, tmp_path / "again")
    merged = tmp_path / "merged"
    assert main(["report", str(out), str(again), "--out", str(merged)]) == 0
    assert "warning" not in capsys.readouterr().err, "the same number of test images: nothing to warn about"
    table = (merged / "results.md").read_text().splitlines()
    assert table[0].startswith("| Run | Model | Format |")
    labels = {line.split("|")[1].strip() for line in table[2:]}
    assert len(labels) == 2 and all(label.startswith("test-box ") for label in labels), labels
    with open(merged / "results.csv") as handle:
        assert len({row["run"] for row in csv.DictReader(handle)}) == 2


def test_run_labels_are_distinct_even_for_one_start_time():
    from cifar_edge.benchmarks.outputs import run_labels

    runs = [{"device": {"name": "vm"}, "created": "2026-12-01T10:00:00"}] * 2 + [{"device": {"name": "pi"}}]
    assert run_labels(runs) == ["vm 2026-12-01 10:00 #1", "vm 2026-12-01 10:00 #2", "pi"]


def test_report_warns_when_runs_measured_different_limits(bench_run, tmp_path, capsys):
    _, out, results = bench_run
    other = _second_run(results, tmp_path / "full", images=10000)
    assert main(["report", str(out), str(other), "--out", str(tmp_path / "merged")]) == 0
    err = capsys.readouterr().err
    assert "warning: the runs measured different numbers of test images (100, 10000" in err


def test_plot_of_a_small_limit_spans_a_few_points_of_accuracy(bench_run, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    from cifar_edge.benchmarks import outputs

    _, _, results = bench_run
    run = json.loads(json.dumps(results))
    for row in run["rows"]:
        if row["status"] == "ok":
            row["accuracy"] = 0.5  # every row the same: matplotlib alone would span a fraction of a point
    spans = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(figure, *args, **kwargs):
        (axes,) = figure.axes
        spans.append((axes.get_ylim(), axes.get_ylabel()))
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    outputs.plot([run], tmp_path / "plot.png")
    ((low, high), label), = spans
    assert high - low >= outputs.MIN_ACCURACY_SPAN_PP and low < 50 < high
    assert "100 images" in label

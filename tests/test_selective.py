"""Calibration at export and selective prediction at run time: `unknown` below the manifest's threshold."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cifar_edge.runtime import Classifier
from cifar_edge.runtime.calibration import Calibration
from cifar_edge.runtime.classifier import ClassifierOptions
from cifar_edge.runtime.cli import main
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.zoom import Zoom

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def calibrated_export(small_dataset, tmp_path_factory):
    """A tiny resnet8 trained with --holdout 60, exported to tflite-int8 and onnx-fp32 with its calibration."""
    from cifar_edge.export.exporter import ExportOptions, export_model, find_holdout
    from cifar_edge.runtime.formats import get_format
    from cifar_edge.train.settings import TrainSettings
    from cifar_edge.train.trainer import train

    run = tmp_path_factory.mktemp("holdout-run")
    settings = TrainSettings.for_model("resnet8", epochs=2, batch_size=32, learning_rate=0.05, holdout=60)
    model_path = train(settings, small_dataset, run, verbose=0).files["model.keras"]
    holdout = find_holdout(model_path, small_dataset)
    assert holdout is not None and len(holdout) == 60
    out = tmp_path_factory.mktemp("calibrated")
    options = ExportOptions(calibration_images=100, validate_images=100, max_accuracy_drop=100.0)
    manifest = export_model(model_path, out, [get_format("tflite-int8"), get_format("onnx-fp32")], small_dataset, options,
                            holdout=holdout)
    return out, manifest


def test_every_file_carries_its_calibration_in_the_manifest_and_onnx_metadata(calibrated_export):
    out, manifest = calibrated_export
    assert manifest["holdout_images"] == 60
    for row in manifest["files"]:
        calibration = Calibration.from_dict(row["calibration"])
        assert calibration.images == 60 and calibration.target_accuracy == 0.98
        assert 0 <= row["ece"] <= 1 and 0 <= row["ece_calibrated"] <= 1
    onnx_row = next(r for r in manifest["files"] if r["format"] == "onnx-fp32")
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(out / onnx_row["file"])).metadata_props}
    assert json.loads(metadata["calibration"]) == onnx_row["calibration"]


def test_the_threshold_is_read_from_the_manifest_and_unknown_has_its_schema(calibrated_export, small_dataset, tmp_path, capsys):
    out, manifest = calibrated_export
    folder = tmp_path / "strict"
    shutil.copytree(out, folder)
    strict = json.loads((folder / "manifest.json").read_text())
    for row in strict["files"]:
        row["calibration"]["min_score"] = 1.0  # nothing is that sure: every answer is unknown
    (folder / "manifest.json").write_text(json.dumps(strict))
    classifier = Classifier(folder)
    assert classifier.min_score == 1.0 and classifier.calibration.min_score == 1.0
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    for index, image in enumerate(small_dataset.test.images[:5]):
        cv2.imwrite(str(images / f"{index}.png"), image[..., ::-1])
    assert main([str(images), "--model", str(folder), "--json", "--top-k", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 5
    for record in records:
        assert record["label"] == "unknown" and record["class_id"] is None
        assert record["score"] == record["top_k"][0]["score"] and len(record["top_k"]) == 3
        assert all(isinstance(entry["class_id"], int) for entry in record["top_k"])
    assert main([str(images), "--model", str(folder)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert all(": unknown (best guess: " in line for line in text), text
    # --min-score 0 turns it off: the plain best class, as before calibration existed.
    assert main([str(images), "--model", str(folder), "--json", "--min-score", "0"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    raw = Classifier(folder, min_score=0).engine.predict(small_dataset.test.images[:5])
    assert [r["class_id"] for r in records] == [int(i) for i in raw.argmax(axis=1)]


def test_calibrated_scores_are_the_temperature_applied_to_the_file(calibrated_export, small_dataset):
    out, manifest = calibrated_export
    classifier = Classifier(out)
    image = small_dataset.test.images[0]
    raw = classifier.engine.predict(image[None])[0]
    expected = classifier.calibration.apply(raw)
    best = classifier.classify(image)[0]
    assert best.class_id == int(raw.argmax()) and best.score == pytest.approx(float(expected.max()), rel=1e-5)


def test_a_file_exported_before_calibration_runs_with_a_one_line_notice(tiny_export, small_dataset, tmp_path, capsys):
    out, _ = tiny_export
    import cv2

    photo = tmp_path / "one.png"
    cv2.imwrite(str(photo), small_dataset.test.images[0][..., ::-1])
    assert main([str(photo), "--model", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["class_id"] is not None and record["label"] != "unknown"
    notices = [line for line in captured.err.splitlines() if "notice" in line]
    assert len(notices) == 1 and "no calibration" in notices[0]
    assert Classifier(out).calibration is None and Classifier(out).min_score == 0.0


@pytest.mark.parametrize("value", ["-0.1", "1.5", "high"])
def test_bad_min_score_is_one_line(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["x.png", "--min-score", value])
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_holdout_that_does_not_match_the_data_is_refused(calibrated_export, small_dataset, tmp_path):
    from cifar_edge.export.exporter import ExportError, find_holdout

    (tmp_path / "config.json").write_text(json.dumps({"data": {"holdout": {"images": 60, "seed": 0, "sha256": "0" * 64}}}))
    with pytest.raises(ExportError, match="differ"):
        find_holdout(tmp_path / "model.keras", small_dataset)
    (tmp_path / "config.json").write_text(json.dumps({"data": {"holdout": None}}))
    assert find_holdout(tmp_path / "model.keras", small_dataset) is None
    assert np.all(small_dataset.train.balanced_split(60, 0)[1].class_counts() == 6)


def test_zoom_views_are_centred_crops_of_the_square():
    from cifar_edge.runtime.preprocess import zoom_views

    image = np.zeros((480, 640, 3), np.uint8)
    image[120:360, 200:440] = 255  # a white square at half the frame's height, centred
    views = zoom_views(image, 32, "crop", (1.0, 0.5))
    assert views.shape == (2, 32, 32, 3)
    assert views[0].mean() == pytest.approx(255 / 4, rel=0.05)  # a quarter of the whole square
    assert views[1].min() == 255  # the half crop is all subject
    assert np.array_equal(zoom_views(image, 32, "crop", (1.0,))[0], views[0])


def test_zoom_keeps_the_most_confident_view_and_scenes_measure_it(tiny_export, small_dataset, capsys, monkeypatch):
    from cifar_edge.benchmarks import scenes

    out, _ = tiny_export
    zoomed = Classifier(out, zoom=(1.0, 0.75, 0.5), min_score=0)
    frame = scenes.scene(small_dataset.test.images[0], 0.5, "textured", np.random.default_rng(0))
    views = zoomed.preprocess_views(frame)
    probabilities = zoomed.invoke(views)
    best = zoomed.classify(frame)[0]
    assert best.score == pytest.approx(float(probabilities.max()), rel=1e-5)
    settings = [Zoom((1.0,)), Zoom((1.0, 0.5)), Zoom((1.0, 0.5), (3.0, 1.0))]
    split = small_dataset.test.balanced_subset(20, 0)
    made = []
    monkeypatch.setattr(scenes, "scene", lambda *args, _scene=scenes.scene: made.append(_scene(*args)) or made[-1])
    results = scenes.evaluate(str(out), split, settings)
    assert [r.zoom for r in results] == settings
    assert set(results[0].accuracy) == {(f, k) for f in scenes.FILLS for k in scenes.BACKGROUNDS}
    # Every setting sees the same scenes, made once each: those one generator makes, fill by fill, background by
    # background, image by image (the order the figures in BENCHMARKS.md were measured in).
    monkeypatch.undo()
    rng = np.random.default_rng(0)
    expected = [scenes.scene(rgb, fill, kind, rng) for fill in scenes.FILLS for kind in scenes.BACKGROUNDS for rgb in split.images]
    assert len(made) == len(expected) and all(np.array_equal(a, b) for a, b in zip(made, expected, strict=True))
    frames = expected[: len(split)]  # 50% fill, textured
    answers = [Classifier(out, zoom=settings[1]).classify(frame)[0].class_id for frame in frames]
    assert results[1].accuracy[scenes.FILLS[0], scenes.BACKGROUNDS[0]] == pytest.approx(np.mean(np.array(answers) == split.labels))
    table = scenes.markdown(results)
    assert "| 1,0.5 |" in table and "| 1:3,0.5:1 |" in table
    for bad in ("0,1", "1:0.75,0.75", "1:0,0.5:1", "1:a"):
        with pytest.raises(SystemExit):
            main(["x.png", "--zoom", bad])


def test_weighted_zoom_answers_with_the_weighted_mean_of_the_calibrated_views(calibrated_export, small_dataset):
    from cifar_edge.benchmarks import scenes
    from cifar_edge.runtime.cli import zoom_setting

    assert zoom_setting("1,0.75") == Zoom((1.0, 0.75))
    assert zoom_setting("1:0.75,0.75:0.25") == Zoom((1.0, 0.75), (0.75, 0.25))
    out, _ = calibrated_export
    weighted = Classifier(out, zoom="1:3,0.75:1", min_score=0)
    # One setting, however it is spelled: the --zoom text, a Zoom, or (without weights) its fractions.
    assert weighted.zoom == Classifier(out, zoom=Zoom((1.0, 0.75), (3.0, 1.0))).zoom == Zoom((1.0, 0.75), (3.0, 1.0))
    assert Classifier(out, zoom=[1, 0.75]).zoom == Zoom((1.0, 0.75)) == Classifier(out, zoom="1,0.75").zoom
    assert weighted.calibration is not None
    frame = scenes.scene(small_dataset.test.images[1], 0.75, "noise", np.random.default_rng(0))
    calibrated = weighted.calibration.apply(weighted.invoke(weighted.preprocess_views(frame)))
    expected = 0.75 * calibrated[0] + 0.25 * calibrated[1]
    top = weighted.classify(frame, top_k=3)
    assert [p.class_id for p in top] == list(np.argsort(expected)[::-1][:3])
    assert [p.score for p in top] == pytest.approx(list(np.sort(expected)[::-1][:3]), rel=1e-5)
    assert weighted.classify_batch([frame, frame], top_k=3)[1] == top
    with pytest.raises(CifarEdgeError, match="one positive weight per zoom fraction"):
        ClassifierOptions(zoom="1:1,0.75:0")
    for bad in ("1:3,0.75", (1.0, "a"), (1.5,), 0.75):
        with pytest.raises(CifarEdgeError, match="zoom"):
            Classifier(out, zoom=bad)


def test_bench_rows_report_calibration_error_and_coverage(calibrated_export, small_dataset):
    from cifar_edge.benchmarks.bench import BenchOptions, find_candidates, markdown_table, measure

    out, manifest = calibrated_export
    split = small_dataset.test
    options = BenchOptions(batch_sizes=(1,), min_time=0.05, warmup=1)
    rows = [measure(candidate, split, options) for candidate in find_candidates([str(out)], ("litert", "onnxruntime"))]
    assert {row.format for row in rows} == {"tflite-int8", "onnx-fp32"}
    for row in rows:
        assert 0 <= row.ece <= 1 and 0 <= row.ece_calibrated <= 1
        assert set(row.coverage) == {"95%", "98%", "99%"} and all(0 <= v <= 1 for v in row.coverage.values())
        assert row.coverage["95%"] >= row.coverage["98%"] >= row.coverage["99%"]
    from dataclasses import asdict

    table = markdown_table([{"device": {"name": "box"}, "rows": [asdict(r) for r in rows]}])
    assert "ECE" in table.splitlines()[0] and " → " in table.splitlines()[2]


def test_ood_kinds_are_distinct_images_and_the_report_has_both_operating_points(calibrated_export, small_dataset):
    from cifar_edge.benchmarks import ood

    rng = np.random.default_rng(0)
    for kind in ood.KINDS:
        images = ood.generate(kind, 3, rng)
        assert images.shape == (3, ood.SIDE, ood.SIDE, 3) and images.dtype == np.uint8
        assert kind == "flat" or images[0].std() > 0, kind
    with pytest.raises(ValueError):
        ood.generate("moon", 1, rng)
    out, _ = calibrated_export
    report = ood.evaluate(str(out), small_dataset.test.images, per_kind=5)
    assert report["calibrated"] and set(report["operating_points"]) == {
        "max at the model's threshold", "max at 80% test coverage", "margin at 80% test coverage"}
    point = report["operating_points"]["max at 80% test coverage"]
    assert point["test_coverage"] == pytest.approx(0.8, abs=0.05) and set(point["rejected"]) == set(ood.KINDS)
    assert "| max at 80% test coverage |" in ood.markdown(report)
    photos = [np.full((48, 64, 3), 200, np.uint8), rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)]
    with_photos = ood.evaluate(str(out), small_dataset.test.images, per_kind=2, photos=photos)
    assert with_photos["photos"] == 2 and with_photos["kinds"][-1] == "photos"
    assert "photos" in with_photos["operating_points"]["max at 80% test coverage"]["rejected"]
    assert ood.markdown(with_photos).splitlines()[0].endswith("| photos | all |")


def test_ood_under_a_zoom_setting_uses_its_views_and_its_threshold(calibrated_export, small_dataset, tmp_path, capsys):
    from cifar_edge.benchmarks import ood
    from cifar_edge.export.exporter import find_holdout
    from cifar_edge.export.zoom import set_zoom

    out, manifest = calibrated_export
    folder = tmp_path / "zoomed"
    shutil.copytree(out, folder)
    set_zoom(folder, Zoom((1.0, 0.75), (3.0, 1.0)), find_holdout(manifest["source"], small_dataset))
    test = small_dataset.test.images
    default = Classifier(folder)  # cifar-run's default path: the manifest's views and their own threshold
    zoomed = ood.evaluate(str(folder), test, per_kind=3, zoom="auto")
    point = zoomed["operating_points"]["max at the model's threshold"]
    assert zoomed["zoom"] == "1:3,0.75:1" and point["threshold"] == round(default.min_score, 4)
    assert point["test_coverage"] == pytest.approx(np.mean(default.probabilities(test).max(1) >= default.min_score))
    one = ood.evaluate(str(folder), test, per_kind=3)  # the default here: one view, the calibration's threshold
    assert one["zoom"] == "1" and one["operating_points"]["max at the model's threshold"]["threshold"] == round(default.calibration.min_score, 4)
    assert ood.markdown(zoomed).startswith(f"| {zoomed['model']} (--zoom 1:3,0.75:1) |")
    with pytest.raises(SystemExit):
        ood.main(["--model", str(folder), "--zoom", "1:2,0"])
    assert "--zoom" in capsys.readouterr().err


def test_zoom_weights_tool_scores_every_rule_on_held_out_scenes(calibrated_export, image_tree, capsys):
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "zoom_weights.py"
    spec = importlib.util.spec_from_file_location("zoom_weights", tool)
    zoom_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoom_weights)
    out, _ = calibrated_export
    assert zoom_weights.main(["--model", str(out), "--holdout", "20", "--limit", "20", "--rows", "200", "--data", str(image_tree)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("20 held-out images")
    rows = [line for line in printed.splitlines() if line.startswith("| 1")]
    assert len(rows) == len(zoom_weights.rules()) == 1 + len(zoom_weights.CROPS) * (1 + len(zoom_weights.WEIGHTS))
    assert "| 1:0.75,0.75:0.25 |" in printed and "| 1,0.75 |" in printed
    # Three views and the alternatives, on made-up probabilities (N, 1 + len(CROPS), 10).
    wide = zoom_weights.rules(3, alternatives=True)
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), (50, 1 + len(zoom_weights.CROPS)))
    a, b = zoom_weights.CROPS.index(0.85) + 1, zoom_weights.CROPS.index(0.7) + 1
    expected = (0.5 * probabilities[:, 0] + 0.3 * probabilities[:, a] + 0.2 * probabilities[:, b]).argmax(1)
    assert np.array_equal(wide["1:0.5,0.85:0.3,0.7:0.2"](probabilities), expected)
    assert "1:0.2,0.85:0.4,0.7:0.4" not in wide  # the whole view keeps at least 0.3
    margin = wide["(crop 0.85 if it beats the whole view by 0.1)"](probabilities)
    crop_wins = probabilities[:, a].max(1) > probabilities[:, 0].max(1) + 0.1
    assert np.array_equal(margin, np.where(crop_wins, probabilities[:, a].argmax(1), probabilities[:, 0].argmax(1)))


def test_a_zoom_in_the_manifest_is_the_default_and_brings_its_own_threshold(calibrated_export, small_dataset, image_tree, tmp_path, capsys):
    from cifar_edge.export.exporter import find_holdout
    from cifar_edge.export.zoom import main as zoom_main
    from cifar_edge.export.zoom import set_zoom
    from cifar_edge.runtime.calibration import threshold_for_accuracy
    from cifar_edge.runtime.zoom import ONE_VIEW

    out, manifest = calibrated_export
    folder = tmp_path / "zoomed"
    shutil.copytree(out, folder)
    holdout = find_holdout(manifest["source"], small_dataset)
    setting = Zoom((1.0, 0.75), (3.0, 1.0))
    written = set_zoom(folder, setting, holdout)
    assert set(written) == {row["file"] for row in manifest["files"]}
    default = Classifier(folder)
    assert default.zoom.same_views(setting) and default.zoom.images == len(holdout)
    # The threshold is the one that gives the weighted answers on the held-out images the calibration's accepted accuracy.
    expected = threshold_for_accuracy(default.probabilities(holdout.images), holdout.labels, default.calibration.target_accuracy)
    assert default.min_score == pytest.approx(1.0 if expected is None else expected, abs=1e-6) == written[default.model.path.name].min_score
    frame = small_dataset.test.images[2]
    assert default.classify(frame, top_k=3) == Classifier(folder, zoom="1:3,0.75:1", min_score=0).classify(frame, top_k=3)
    one = Classifier(folder, zoom=(1.0,))  # another setting: the single-view threshold, as before
    assert one.zoom == ONE_VIEW and one.min_score == one.calibration.min_score
    assert Classifier(folder, min_score=0.25).min_score == 0.25
    assert main(["--model", str(folder), "--info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["zoom"] == "1:3,0.75:1"
    # The ONNX file carries the entry in its metadata_props (its recorded digest follows the rewrite),
    # so the file alone, without its manifest, answers with the same views and threshold.
    onnx_row = next(r for r in json.loads((folder / "manifest.json").read_text())["files"] if r["format"] == "onnx-fp32")
    beside = Classifier(folder / onnx_row["file"])  # integrity checked against the rewritten row
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / onnx_row["file"], alone)
    lone = Classifier(alone / onnx_row["file"])
    assert lone.model.zoom is None and lone.zoom == beside.zoom == Zoom.from_dict(onnx_row["zoom"])
    assert lone.min_score == beside.min_score == onnx_row["zoom"]["min_score"]
    assert lone.classify(frame, top_k=3) == beside.classify(frame, top_k=3)
    # The command line does the same from the run's config.json; --zoom 1 takes the entry out again.
    assert zoom_main([str(folder), "--zoom", "1,0.5", "--data", str(image_tree)]) == 0
    assert "zoom 1,0.5, min_score" in capsys.readouterr().out and Classifier(folder).zoom.fractions == (1.0, 0.5)
    assert zoom_main([str(folder), "--zoom", "1"]) == 0
    assert all("zoom" not in row for row in json.loads((folder / "manifest.json").read_text())["files"])
    assert Classifier(folder).zoom == ONE_VIEW
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(folder / onnx_row["file"])).metadata_props}
    assert "zoom" not in metadata and json.loads(metadata["calibration"]) == onnx_row["calibration"]
    assert Classifier(folder / onnx_row["file"]).zoom == ONE_VIEW


@pytest.mark.parametrize("entry, message", [({"fractions": [0], "weights": None}, "fractions above 0"),
                                            ({"fractions": [1, 0.5], "weights": [1]}, "one positive weight"),
                                            ({"fractions": [1, 0.5], "weights": None, "min_score": 2}, "min_score"),
                                            ("1,0.5", "zoom must be an object")])
def test_a_damaged_zoom_entry_is_one_line_naming_the_manifest(calibrated_export, tmp_path, capsys, entry, message):
    out, _ = calibrated_export
    folder = tmp_path / "damaged"
    shutil.copytree(out, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][0]["zoom"] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CifarEdgeError, match=message):
        Classifier(folder / manifest["files"][0]["file"])
    assert main(["--model", str(folder / manifest["files"][0]["file"]), "--info"]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "manifest.json" in error and "Traceback" not in error


@pytest.mark.parametrize("key, value", [("zoom", '"1,0.5"'), ("zoom", '{"fractions": [2], "weights": null}'), ("calibration", "{oops")])
def test_damaged_onnx_metadata_is_one_line_naming_the_file(calibrated_export, tmp_path, key, value):
    from cifar_edge.export.converters import update_onnx_metadata

    out, manifest = calibrated_export
    row = next(r for r in manifest["files"] if r["format"] == "onnx-fp32")
    update_onnx_metadata(out / row["file"], tmp_path / row["file"], {key: value})  # alone: no manifest row to prefer
    with pytest.raises(CifarEdgeError, match=f"{row['file']}: {key} metadata is unreadable"):
        Classifier(tmp_path / row["file"])


def test_zoom_settings_parse_and_refuse_as_the_command_line_spells_them():
    from cifar_edge.runtime.cli import zoom_setting

    assert zoom_setting("auto") == "auto"
    assert Zoom.parse("1:0.75,0.75:0.25").text == "1:0.75,0.75:0.25" and Zoom.parse("1,0.5").weights is None
    assert Zoom.from_dict(Zoom.parse("1:3,0.5:1").as_dict()) == Zoom((1.0, 0.5), (3.0, 1.0))
    for bad in ("", "auto,1", "1:0.5,0.5", "1.5", "1:-1", "1:1:1"):
        with pytest.raises(ValueError):
            Zoom.parse(bad)
    assert ClassifierOptions(zoom="auto").zoom == "auto" and ClassifierOptions(zoom="1:3,0.5:1").zoom == Zoom((1.0, 0.5), (3.0, 1.0))

"""`cifar-export`: every format in the table, exported, validated and described."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")

from cifar_edge.export import converters, exporter, writers  # noqa: E402
from cifar_edge.export.cli import main  # noqa: E402
from cifar_edge.export.exporter import ExportError, ExportOptions, export_model, load_keras_model  # noqa: E402
from cifar_edge.runtime.engines import open_engine  # noqa: E402
from cifar_edge.runtime.formats import FORMATS, OPTIONS, select_formats  # noqa: E402
from cifar_edge.runtime.labels import CLASS_NAMES  # noqa: E402

SMALL = ExportOptions(calibration_images=100, validate_images=100, max_accuracy_drop=100.0)


@pytest.fixture(scope="module")
def exported(tiny_export):
    out, manifest = tiny_export
    return out, manifest, {row["format"]: row for row in manifest["files"]}


@pytest.mark.parametrize("export_format", FORMATS, ids=lambda f: f.name)
def test_every_format_exports_and_validates(exported, export_format, small_dataset):
    out, manifest, rows = exported
    row = rows[export_format.name]
    assert row["status"] == "passed", row
    path = out / row["file"]
    assert path.suffix == export_format.suffix
    assert row["size_bytes"] == path.stat().st_size
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["engine"] == export_format.engine and row["precision"] == export_format.precision
    engine = open_engine(path)
    assert engine.input_dtype == np.uint8, "the contract: raw uint8 pixels in"
    probabilities = engine.predict(small_dataset.test.images[:7])
    assert probabilities.shape == (7, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.05)
    assert 0.0 <= row["accuracy"] <= 1.0 and row["keras_accuracy"] == manifest["keras_accuracy"]


@pytest.mark.parametrize("name", [f.name for f in FORMATS if f.precision in ("fp32", "fp16")])
def test_float_formats_agree_with_keras(exported, name):
    row = exported[2][name]
    assert row["agreement"] >= 0.99
    assert row["max_probability_difference"] < 0.01


@pytest.mark.parametrize("name", [f.name for f in FORMATS if f.precision != "fp32"])
def test_compressed_formats_are_smaller(exported, name):
    rows = exported[2]
    assert rows[name]["size_bytes"] < 0.6 * rows["tflite-fp32"]["size_bytes"]


def test_tflite_int8_is_full_integer_without_flex_ops(exported):
    out, _, rows = exported
    engine = open_engine(out / rows["tflite-int8"]["file"])
    assert engine.input_quantization == (1.0, 0), "uint8 pixels must go in unchanged"
    assert "int8" in engine.tensor_dtypes()
    operators = engine.operators()
    assert not [op for op in operators if op.startswith("Flex")], operators
    assert "CONV_2D" in operators or "DELEGATE" in operators


def test_onnx_int8_holds_quantized_nodes(exported):
    out, _, rows = exported
    graph = onnx.load(str(out / rows["onnx-int8"]["file"])).graph
    op_types = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    details = rows["onnx-int8"]["details"]
    assert details["calibration_method"] in details["calibration_accuracy_by_method"]
    assert set(details["calibration_accuracy_by_method"]) == {"minmax", "entropy", "percentile"}


@pytest.mark.parametrize("name", ["onnx-fp32", "onnx-int8"])
def test_onnx_files_carry_class_names_and_contract(exported, name):
    out, _, rows = exported
    metadata = {p.key: p.value for p in onnx.load(str(out / rows[name]["file"])).metadata_props}
    assert json.loads(metadata["class_names"]) == list(CLASS_NAMES)
    assert json.loads(metadata["input"])["dtype"] == "uint8"
    assert open_engine(out / rows[name]["file"]).metadata["class_names"] == metadata["class_names"]


def test_manifest_describes_the_model(exported):
    out, manifest, _ = exported
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["model"] == "resnet8" and manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["input"]["dtype"] == "uint8" and manifest["input"]["shape"] == [None, 32, 32, 3]
    assert manifest["validation_images"] == 100 and manifest["calibration_images"] == 100
    assert [row["format"] for row in manifest["files"]] == [f.name for f in FORMATS]


def test_calibration_comes_from_the_training_split_and_is_balanced(small_dataset):
    calibration, selection = exporter.calibration_sets(small_dataset, ExportOptions(calibration_images=100))
    assert np.bincount(calibration.labels, minlength=10).tolist() == [10] * 10
    train_rows = {image.tobytes() for image in small_dataset.train.images}
    test_rows = {image.tobytes() for image in small_dataset.test.images}
    calibration_rows = {image.tobytes() for image in calibration.images}
    assert calibration_rows <= train_rows and not calibration_rows & test_rows
    assert not calibration_rows & {image.tobytes() for image in selection.images}, "selection must be held out"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, ["tflite-fp32", "onnx-fp32"]),
        ({"options": ["int8"]}, ["tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"]),
        ({"options": ["fp16", "dynamic"]}, ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "onnx-fp32"]),
        ({"every": True}, [f.name for f in FORMATS]),
    ],
)
def test_flags_select_formats_from_the_table(flags, expected):
    assert [f.name for f in select_formats(**flags)] == expected


def test_every_cli_flag_and_writer_comes_from_the_format_table():
    from cifar_edge.export.cli import build_parser

    assert set(OPTIONS) == {f.option for f in FORMATS} - {"default"}
    flags = {action.dest for action in build_parser()._actions}
    assert set(OPTIONS) <= flags
    args = build_parser().parse_args(["m.keras", "--out", "o", *(f"--{o}" for o in OPTIONS)])
    assert [f.name for f in select_formats([o for o in OPTIONS if getattr(args, o)])] == [f.name for f in FORMATS]
    with pytest.raises(ValueError, match="unknown export option"):
        select_formats(["int4"])


@pytest.mark.parametrize("export_format", FORMATS, ids=lambda f: f.name)
def test_every_format_has_a_writer(export_format):
    assert callable(writers.writer_for(export_format))


def test_a_format_without_a_writer_is_named():
    with pytest.raises(KeyError, match="no writer for format tflite-int4"):
        writers.writer_for(dataclasses.replace(FORMATS[0], name="tflite-int4"))


@pytest.mark.parametrize("options, wrong", [
    ({"calibration_method": "foo"}, "calibration_method must be one of auto, minmax, entropy, percentile, not 'foo'"),
    ({"tta": "twice"}, "tta must be one of"),
    ({"calibration_images": 0}, "calibration_images must be a whole number"),
    ({"validate_images": 2.5}, "validate_images must be a whole number"),
    ({"max_accuracy_drop": -1}, "max_accuracy_drop must be 0 or more"),
])
def test_export_options_are_checked_when_made(options, wrong):
    with pytest.raises(ExportError, match=re.escape(wrong)):
        ExportOptions(**options)


def test_a_failing_exporter_marks_only_its_format(tiny_model, small_dataset, tmp_path, monkeypatch):
    def broken(*_):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(writers, "write_tflite_fp16", broken)
    manifest = export_model(tiny_model, tmp_path, select_formats(["fp16"]), small_dataset, SMALL)
    rows = {row["format"]: row for row in manifest["files"]}
    assert rows["tflite-fp16"]["status"] == "export failed" and "converter exploded" in rows["tflite-fp16"]["error"]
    assert not list(tmp_path.glob("*fp16*")), "nothing half-written"
    assert rows["tflite-fp32"]["status"] == rows["onnx-fp32"]["status"] == "passed"


class _OffByOneClass:
    """Wraps an engine so that every prediction names the next class."""

    def __init__(self, engine):
        self.engine = engine

    def predict(self, images, batch_size=256):
        return np.roll(self.engine.predict(images, batch_size), 1, axis=1)


def _break_exported_predictions(monkeypatch):
    real_open = exporter.open_engine
    monkeypatch.setattr(exporter, "open_engine", lambda path: _OffByOneClass(real_open(path)))


def test_an_accuracy_drop_over_the_limit_fails_validation(tiny_model, small_dataset, tmp_path, monkeypatch):
    _break_exported_predictions(monkeypatch)
    options = ExportOptions(calibration_images=100, validate_images=100, max_accuracy_drop=1.0)
    manifest = export_model(tiny_model, tmp_path, select_formats(), small_dataset, options)
    assert {row["status"] for row in manifest["files"]} == {"validation failed"}


def test_cli_writes_files_prints_a_table_and_exits_0(tiny_model, image_tree, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(tiny_model), "--out", str(out), "--data", str(image_tree), "--validate-images", "50", "--max-accuracy-drop", "100"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "tflite-fp32" in printed and "onnx-fp32" in printed and "passed" in printed
    assert (out / "manifest.json").is_file() and (out / "resnet8.tflite-fp32.tflite").is_file()


def test_cli_exits_1_when_a_format_fails_validation(tiny_model, image_tree, tmp_path, capsys, monkeypatch):
    _break_exported_predictions(monkeypatch)
    code = main([str(tiny_model), "--out", str(tmp_path / "out"), "--data", str(image_tree), "--validate-images", "50"])
    assert code == 1
    assert "did not pass" in capsys.readouterr().err


def _save_float_input_model(path):
    inputs = keras.Input((32, 32, 3), dtype="float32")
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(path)


@pytest.mark.parametrize("problem", ["missing", "not-a-zip", "not-keras", "wrong-input"])
def test_bad_model_files_are_one_line_errors(problem, tmp_path, image_tree, capsys):
    path = tmp_path / "model.keras"
    if problem == "not-a-zip":
        path.write_bytes(b"\x00garbage" * 100)
    elif problem == "not-keras":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "not a model")
    elif problem == "wrong-input":
        _save_float_input_model(path)
    code = main([str(path), "--out", str(tmp_path / "out"), "--data", str(image_tree)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("cifar-export: error:"), err
    assert not (tmp_path / "out").exists()


def test_contract_check_names_what_is_wrong(tmp_path):
    path = tmp_path / "float.keras"
    _save_float_input_model(path)
    with pytest.raises(ExportError, match="uint8"):
        load_keras_model(path)


def test_int8_without_data_says_how_to_give_it(tiny_model, tmp_path):
    with pytest.raises(ExportError, match="--data"):
        export_model(tiny_model, tmp_path, select_formats(["int8"]), None)


def test_unwritable_out_is_one_line(tiny_model, image_tree, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([str(tiny_model), "--out", str(blocker / "out"), "--data", str(image_tree)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write there" in err[0]


def test_rerun_replaces_files_cleanly(tiny_model, small_dataset, tmp_path):
    first = export_model(tiny_model, tmp_path, select_formats(), small_dataset, SMALL)
    second = export_model(tiny_model, tmp_path, select_formats(), small_dataset, SMALL)
    assert [r["file"] for r in first["files"]] == [r["file"] for r in second["files"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_package_copies_the_int8_files_and_a_trimmed_manifest(tiny_export, tmp_path):
    from cifar_edge.export.package import package_export
    from cifar_edge.runtime import Classifier

    out, _ = tiny_export
    target = package_export(out, "tiny", destination=tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    assert [row["format"] for row in manifest["files"]] == ["tflite-int8", "onnx-int8"]
    assert sorted(p.name for p in target.iterdir()) == sorted(["manifest.json", *(row["file"] for row in manifest["files"])])
    assert manifest["packaged_name"] == "tiny" and Classifier(target).model.format == "tflite-int8"


def test_package_keeps_the_keras_source_beside_the_packaged_files(tiny_export, tmp_path, monkeypatch):
    from cifar_edge.export.package import package_export

    out, export_manifest = tiny_export
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the manifest's paths must not depend on where this runs
    target = package_export(out, "tiny", destination=tmp_path / "packaged", sources=tmp_path / "sources")
    copied = tmp_path / "sources" / "tiny.keras"
    assert copied.read_bytes() == Path(export_manifest["source"]).read_bytes()
    manifest = json.loads((target / "manifest.json").read_text())
    assert not Path(manifest["source"]).is_absolute()
    assert (target / manifest["source"]).resolve() == copied.resolve()
    assert (target / manifest["exported_to"]).resolve() == Path(out).resolve()


def test_package_refuses_a_format_that_did_not_pass(tmp_path):
    from cifar_edge.export.package import package_export
    from cifar_edge.runtime.errors import CifarEdgeError

    (tmp_path / "manifest.json").write_text(json.dumps({"files": [{"format": "tflite-int8", "status": "validation failed", "file": "x"}]}))
    with pytest.raises(CifarEdgeError, match="no passed export for tflite-int8, onnx-int8"):
        package_export(tmp_path, "bad", destination=tmp_path / "out")


def test_batch_norm_after_relu_folds_into_the_dense_without_changing_the_function():
    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu", name="head")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3)(normed))
    bn = model.get_layer("bn")
    # Multipliers 0.1 to 30 and one negative: what training left in vgg3-plus's head.
    gamma = np.array([0.1, 1.0, -2.0, 30.0, 0.5], np.float32)
    bn.set_weights([gamma, rng.normal(size=5).astype(np.float32), rng.random(5).astype(np.float32), rng.random(5).astype(np.float32) + 0.01])
    x = rng.normal(size=(64, 6)).astype(np.float32)
    before = model.predict(x, verbose=0)
    assert converters.fold_batch_norm_through_relu(model) == ["head"]
    np.testing.assert_allclose(model.predict(x, verbose=0), before, rtol=1e-4, atol=1e-5)
    g, _, _, variance = bn.get_weights()
    np.testing.assert_allclose(np.abs(g / np.sqrt(variance + bn.epsilon)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("scale", [True, False])
def test_batch_norm_after_max_pool_folds_into_the_conv_without_changing_the_function(scale):
    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    pooled = keras.layers.MaxPooling2D(2)(conv)
    normed = keras.layers.BatchNormalization(scale=scale, epsilon=1e-12 if not scale else 1e-3, name="bn")(pooled)
    second = keras.layers.BatchNormalization(name="plain")(keras.layers.Conv2D(2, 1, name="conv2")(normed))  # no pool: left alone
    model = keras.Model(inputs, second)
    bn = model.get_layer("bn")
    if scale:
        bn.gamma.assign(np.array([0.1, -2.0, 30.0, 0.5], np.float32))
    bn.beta.assign(rng.normal(size=4).astype(np.float32))
    bn.moving_mean.assign(rng.normal(size=4).astype(np.float32))
    bn.moving_variance.assign(np.array([1e-4, 0.3, 5.0, 40.0], np.float32))
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    assert converters.fold_batch_norm_through_max_pool(model) == ["conv"]
    np.testing.assert_allclose(model.predict(x, verbose=0), before, rtol=1e-4, atol=1e-4)
    gamma = np.asarray(bn.gamma) if scale else 1.0
    np.testing.assert_allclose(np.abs(gamma / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)), 1.0, rtol=1e-5)


def test_batch_norm_is_left_alone_where_folding_would_change_the_function(tiny_model):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    both = keras.layers.Concatenate()([keras.layers.BatchNormalization()(hidden), hidden])  # a second reader of the ReLU
    linear = keras.layers.BatchNormalization()(keras.layers.Dense(4)(inputs))  # no ReLU in between
    model = keras.Model(inputs, [both, linear])
    assert converters.fold_batch_norm_through_relu(model) == []
    assert converters.fold_batch_norm_through_relu(load_keras_model(tiny_model)) == []


def test_tta_graph_computes_the_runtime_tables_views(tiny_model, small_dataset):
    from cifar_edge.export.tta_graph import with_tta
    from cifar_edge.runtime import tta

    model = load_keras_model(tiny_model)
    images = small_dataset.test.images[:16]
    for mode in tta.TTA_MODES:
        in_graph = with_tta(converters.float_input_copy(model), mode).predict(images, verbose=0)
        in_numpy = tta.predict(lambda x: model.predict(x, verbose=0), images, mode)
        np.testing.assert_allclose(in_graph, in_numpy, atol=2e-5)


def test_export_with_tta_puts_the_views_in_every_file(tiny_model, small_dataset, tmp_path):
    from cifar_edge.runtime import tta

    formats = select_formats(["int8"])
    options = ExportOptions(calibration_images=100, validate_images=100, max_accuracy_drop=100.0, tta="flip", calibration_method="minmax")
    manifest = export_model(tiny_model, tmp_path, formats, small_dataset, options)
    assert manifest["tta"] == "flip" and manifest["tta_views"] == 2
    rows = {row["format"]: row for row in manifest["files"]}
    assert all(row["status"] == "passed" for row in rows.values()), rows
    model = load_keras_model(tiny_model)
    images = small_dataset.test.images[:8]
    expected = tta.predict(lambda x: model.predict(x, verbose=0), images, "flip")
    for name in ("tflite-fp32", "onnx-fp32"):
        np.testing.assert_allclose(open_engine(tmp_path / rows[name]["file"]).predict(images), expected, atol=1e-4)
    assert rows["tflite-int8"]["agreement"] >= 0.9
    int8 = open_engine(tmp_path / rows["tflite-int8"]["file"])
    assert "float32" not in int8.tensor_dtypes(), "the views are integer ops too"
    assert not [op for op in int8.operators() if op.startswith("Flex")]


def test_gelu_models_export_to_onnx(small_dataset, tmp_path):
    """Keras' TensorFlow GELU uses Erfc, which tf2onnx cannot convert; the exporter writes it with Erf."""
    from cifar_edge.train.models import create_model

    model = create_model("airbench94")
    model.get_layer("logits").kernel.assign(np.random.default_rng(0).normal(0, 3, (256, 10)).astype(np.float32))
    path = tmp_path / "airbench94.keras"
    model.save(path)
    formats = [f for f in FORMATS if f.name in ("tflite-fp32", "onnx-fp32")]
    manifest = export_model(path, tmp_path / "out", formats, small_dataset, ExportOptions(validate_images=50))
    for row in manifest["files"]:
        assert row["status"] == "passed", row
        assert row["max_probability_difference"] < 1e-3

"""Weight interpolation between a run and its fine-tune (`python -m cifar_edge.train.soup`)."""

import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar_edge.runtime.files import sha256_file  # noqa: E402
from cifar_edge.train.soup import main  # noqa: E402


@pytest.fixture
def pair(tiny_model, tmp_path):
    """The tiny run and a "fine-tune" of it: every weight moved, BatchNorm statistics included."""
    base_dir, tuned_dir = tmp_path / "base", tmp_path / "tuned"
    base_dir.mkdir(), tuned_dir.mkdir()
    base = base_dir / "model.keras"
    shutil.copy(tiny_model, base)
    shutil.copy(tiny_model.parent / "config.json", base_dir / "config.json")
    model = keras.models.load_model(base, compile=False)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) + 0.1 for w in model.get_weights()])
    tuned = tuned_dir / "model.keras"
    model.save(tuned)
    config = json.loads((base_dir / "config.json").read_text())
    config["data"]["holdout"] = {"images": 30, "seed": 1, "sha256": "ab" * 32}
    (tuned_dir / "config.json").write_text(json.dumps(config))
    config_base = json.loads((base_dir / "config.json").read_text())
    config_base["data"]["holdout"] = config["data"]["holdout"]
    (base_dir / "config.json").write_text(json.dumps(config_base))
    return base, tuned


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_every_weight_is_the_weighted_mean_and_the_record_names_both_files(pair, alpha, tmp_path, small_dataset):
    base, tuned = pair
    assert main([str(base), str(tuned), "--alpha", str(alpha), "--out", str(tmp_path / "soup")]) == 0
    soup = keras.models.load_model(tmp_path / "soup" / "model.keras")
    a = keras.models.load_model(base, compile=False)
    b = keras.models.load_model(tuned, compile=False)
    names = [w.path for w in soup.weights]
    assert any("moving_mean" in name for name in names), "BatchNorm statistics are interpolated too"
    for got, x, y in zip(soup.get_weights(), a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(got, (1 - alpha) * x + alpha * y, rtol=1e-6, atol=1e-6)
    if alpha == 0.0:
        images = small_dataset.test.images[:16]
        np.testing.assert_allclose(soup.predict(images, verbose=0), a.predict(images, verbose=0), atol=1e-6)
    config = json.loads((tmp_path / "soup" / "config.json").read_text())
    assert config["interpolation"] == {"base": {"path": str(base), "sha256": sha256_file(base)},
                                       "tuned": {"path": str(tuned), "sha256": sha256_file(tuned)}, "alpha": alpha}
    # The fine-tune's run record travels, so cifar-export finds the held-out images.
    assert config["data"]["holdout"] == json.loads((tuned.parent / "config.json").read_text())["data"]["holdout"]


def _other_holdout(pair):
    config_path = pair[0].parent / "config.json"
    config = json.loads(config_path.read_text())
    config["data"]["holdout"] = None
    config_path.write_text(json.dumps(config))
    return pair


def _other_shape(pair):
    from cifar_edge.train.models import create_model

    other = pair[0].parent / "wide.keras"
    create_model("resnet8-w20").save(other)
    return other, pair[1]


@pytest.mark.parametrize(("case", "expected"), [
    ("alpha", "alpha must be between 0 and 1"),
    ("missing", "no such model file"),
    ("holdout", "different held-out images"),
    ("shape", "differ in shape"),
])
def test_bad_input_is_one_line_and_writes_nothing(pair, case, expected, tmp_path, capsys):
    base, tuned = {"holdout": _other_holdout, "shape": _other_shape}.get(case, lambda p: p)(pair)
    alpha = "1.5" if case == "alpha" else "0.5"
    if case == "missing":
        base = tmp_path / "nothing.keras"
    out = tmp_path / "soup"
    assert main([str(base), str(tuned), "--alpha", alpha, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (out / "model.keras").exists() and not (out / "config.json").exists()

"""Every registry model keeps the contract: uint8 RGB in, float32 probabilities out."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar_edge.train.models import UnknownModelError, create_model, get_spec, list_models  # noqa: E402

MODEL_NAMES = [spec.name for spec in list_models()]
TUTORIAL_MODELS = {"vgg1", "vgg2", "vgg3", "vgg3-dropout", "vgg3-plus", "deep15"}


def test_registry_holds_the_tutorial_edge_and_fast_models():
    assert TUTORIAL_MODELS | {"resnet8", "fast"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_model_keeps_the_contract(name, policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = create_model(name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)
    assert tuple(model.outputs[0].shape) == (None, 10)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert (probabilities >= 0).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scaling_is_inside_the_model(name):
    # The first layer after the input rescales pixels, so no caller ever has to.
    model = create_model(name)
    first = model.layers[1]
    assert isinstance(first, keras.layers.Rescaling)


def test_resnet8_matches_the_mlperf_tiny_reference_size():
    model = create_model("resnet8")
    assert 75_000 <= model.count_params() <= 80_000
    widths = sorted({layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)})
    assert widths == [16, 32, 64]


def test_fast_model_uses_wide_blocks():
    widths = [layer.filters for layer in create_model("fast").layers if isinstance(layer, keras.layers.Conv2D)]
    assert max(widths) == 256 and 64 in widths


def test_deep15_has_fifteen_convolutions():
    convs = [layer for layer in create_model("deep15").layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 15


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="resnet8"):
        get_spec("resnet9000")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_is_named_by_its_registry_entry(name):
    assert create_model(name).name == name


def test_tune_candidates_and_the_tutorial_models_share_one_vgg_builder():
    from cifar_edge.train.blocks import vgg
    from cifar_edge.train.tune import build_candidate

    values = {"blocks": 3, "filters_0": 32, "filters_1": 64, "filters_2": 128, "dense_layers": 1, "units_0": 128,
              "dropout": 0.0, "batch_norm": False, "learning_rate": 0.01}
    # The same choices as vgg3 give vgg3's layers, and the builder is the one the registry uses.
    assert [type(layer).__name__ for layer in build_candidate(values).layers] == [type(layer).__name__ for layer in create_model("vgg3").layers]
    assert build_candidate(values).count_params() == create_model("vgg3").count_params() == vgg("x", (32, 64, 128)).count_params()


def test_tune_resnet_candidates_are_the_registry_resnets():
    from cifar_edge.train.tune import build_candidate, count_macs

    def candidate(width, separable=False, depth=1):
        return build_candidate({"family": "resnet", "width": width, "depth": depth, "separable": separable, "learning_rate": 0.1})

    # Width 16, one block per stage is resnet8 itself; 20 is resnet8-w20; separable 40 is resnet8-sep40.
    for values, name in (((16,), "resnet8"), ((20,), "resnet8-w20"), ((40, True), "resnet8-sep40")):
        built, registered = candidate(*values), create_model(name)
        assert [type(layer).__name__ for layer in built.layers] == [type(layer).__name__ for layer in registered.layers]
        assert built.count_params() == registered.count_params()
    assert create_model("resnet8").count_params() == 78_666
    # Two blocks per stage: ResNet-14, three more residual additions and six more 3x3 convs.
    adds = {depth: sum(type(layer).__name__ == "Add" for layer in candidate(16, depth=depth).layers) for depth in (1, 2)}
    assert adds == {1: 3, 2: 6}
    # MACs count the depthwise convs too (one input channel per output), so separable blocks cost less, not nothing.
    plain, separable = count_macs(candidate(40)), count_macs(candidate(40, separable=True))
    assert count_macs(candidate(16)) == pytest.approx(12.5e6, rel=0.05), "MLPerf Tiny's ~12.5 M MACs"
    assert 0.1 * plain < separable < 0.5 * plain

"""The model registry: `create_model(name)` looks up a small builder function.

Every model keeps the contract: input `image`, uint8 RGB (N, 32, 32, 3); scaling inside
the model; output `probabilities`, softmax over the 10 classes in float32 even under mixed
precision. Only built-in Keras layers are used, so a saved `.keras` file loads anywhere
Keras does, with no cifar_edge import.

Each entry also carries its default training `Recipe`, because a model and the schedule
that makes it reach its figure belong together.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.labels import NUM_CLASSES
from cifar_edge.train.blocks import (
    BN_MOMENTUM,
    CIFAR10_MEAN,
    CIFAR10_STD,
    contract_input,
    functional_model,
    keras_layers,
    probability_head,
    scale_to_unit,
    standardize,
    vgg,
)


@dataclass(frozen=True)
class Recipe:
    """How a model trains by default; `cifar-train` flags override parts of it."""

    epochs: int
    """Full passes over the training images."""
    batch_size: int
    """Images per optimizer step."""
    learning_rate: float
    """Peak learning rate (the constant one for `schedule="constant"`)."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """Nesterov momentum for SGD."""
    weight_decay: float = 0.0
    """Decoupled weight decay, multiplied by the learning rate at each step."""
    schedule: str = "constant"
    """`constant`; `cosine` decay to zero after a linear warm-up from zero; or `linear`:
    up from `lr_start_factor` x peak to the peak, then down to `lr_end_factor` x peak."""
    warmup_epochs: float = 0.0
    """Linear warm-up from zero, for `cosine`."""
    warmup_fraction: float = 0.0
    """Fraction of all steps spent warming up, for `linear`."""
    lr_start_factor: float = 1.0
    """Learning rate at the first step as a fraction of the peak, for `linear`."""
    lr_end_factor: float = 1.0
    """Learning rate at the last step as a fraction of the peak, for `linear`."""
    bias_lr_multiplier: float = 1.0
    """Learning-rate multiplier for BatchNorm biases (beta); weight decay is not multiplied."""
    whiten_bias_epochs: float = 0.0
    """Epochs the whitening layer's bias trains before it is frozen; 0 leaves it free throughout."""
    label_smoothing: float = 0.0
    """Weight moved from the true class to a uniform target."""
    flip: bool = False
    """Random horizontal flips."""
    shift_pixels: int = 0
    """Random translations of up to this many pixels each way (reflect-padded)."""
    alternating_flip: bool = False
    """With `flip`: each image's flip is random in the first epoch, then inverted every epoch,
    so every image is seen both ways in any two consecutive epochs."""
    drop_last: bool = False
    """Drop each epoch's last partial batch (its small, noisy step)."""
    weight_averaging: bool = False
    """Evaluate and save an exponential moving average of the trainable weights (Keras `use_ema`)."""
    lookahead_every: int = 0
    """Every this many steps, move an average of all weights (BN statistics included) towards
    the live ones and reset the live weights to it; 0 turns lookahead off."""
    lookahead_decay: float = 0.95
    """Per-step decay of the lookahead average; the decay used is decay**every * (t/T)**3,
    so the average follows the live weights closely early and smooths more and more late."""
    tta: str = "none"
    """Test-time augmentation for the reported `test_accuracy_tta`: none, flip or 6 views
    (`cifar_edge.runtime.tta`); `model.keras` itself always sees one view."""


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry."""

    name: str
    builder: Callable[[], object]
    """Builds the model, named after its registry entry."""
    description: str
    recipe: Recipe
    prepare: Callable[[object, object], None] | None = None
    """Sets data-dependent weights on a new model from training images (uint8 NHWC)."""
    frozen: tuple[str, ...] = ()
    """Paths of variables (`layer/variable`) that training never changes."""


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(CifarEdgeError):
    pass


def register(name: str, description: str, recipe: Recipe, **extra):
    """Add the decorated `builder(name)` to the registry under `name`, which it is called with:
    the name is typed once, and the built model carries it."""
    def decorate(builder: Callable[[str], object]) -> Callable[[str], object]:
        _REGISTRY[name] = ModelSpec(name, functools.partial(builder, name), description, recipe, **extra)
        return builder

    return decorate


def list_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


@contextlib.contextmanager
def registered(spec: ModelSpec):
    """`spec` in the registry for the duration of the block: variants of a model for an ablation."""
    if spec.name in _REGISTRY:
        raise CifarEdgeError(f"model name {spec.name!r} is taken")
    _REGISTRY[spec.name] = spec
    try:
        yield spec
    finally:
        del _REGISTRY[spec.name]


def create_model(name: str):
    """Build the named model (a `keras.Model`, uncompiled)."""
    return get_spec(name).builder()


# --- the tutorials' VGG-style models -------------------------------------------------

# The tutorials' optimizer: plain SGD at 0.001 with momentum 0.9, batch 64, 100 epochs.
_TUTORIAL = Recipe(epochs=100, batch_size=64, learning_rate=0.001, momentum=0.9)


@register("vgg1", "tutorial baseline: 1 VGG block (32 filters), dense 128; 67.1% reported", _TUTORIAL)
def vgg1(name):
    return vgg(name, (32,))


@register("vgg2", "tutorial baseline: 2 VGG blocks (32, 64); 71.1% reported", _TUTORIAL)
def vgg2(name):
    return vgg(name, (32, 64))


@register("vgg3", "tutorial baseline: 3 VGG blocks (32, 64, 128); 73.5% reported", _TUTORIAL)
def vgg3(name):
    return vgg(name, (32, 64, 128))


@register("vgg3-dropout", "3 VGG blocks with dropout 0.2 after each block and the dense layer; 83.5% reported", _TUTORIAL)
def vgg3_dropout(name):
    return vgg(name, (32, 64, 128), block_dropouts=(0.2, 0.2, 0.2), dense_dropouts=(0.2,))


@register(
    "vgg3-plus",
    "3 VGG blocks, dropout growing 0.2/0.3/0.4/0.5, batch norm, flip + 10% shift; 88.6% reported after 400 epochs",
    Recipe(epochs=400, batch_size=64, learning_rate=0.001, momentum=0.9, flip=True, shift_pixels=3),
)
def vgg3_plus(name):
    return vgg(name, (32, 64, 128), block_dropouts=(0.2, 0.3, 0.4), dense_dropouts=(0.5,), batch_norm=True)


@register(
    "deep15",
    "15 3x3 convs in 3 stages (32/64/128, batch norm), global max pool, dropout 0.25, dense 500",
    Recipe(
        epochs=60, batch_size=128, learning_rate=0.05, nesterov=True, weight_decay=5e-4,
        schedule="cosine", warmup_epochs=2, label_smoothing=0.1, flip=True, shift_pixels=4,
    ),
)
def deep15(name):
    layers = keras_layers()
    inputs = contract_input()
    x = scale_to_unit(layers, inputs)
    for stage, width in enumerate((32, 64, 128)):
        if stage:
            x = layers.MaxPooling2D(2)(x)
        for _ in range(5):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.ReLU()(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Dense(500, activation="relu")(x)
    return functional_model(inputs, probability_head(layers, x), name)


# --- the edge model ------------------------------------------------------------------


_RESNET8_RECIPE = Recipe(
    epochs=40, batch_size=128, learning_rate=0.1, nesterov=True, weight_decay=0.0,
    schedule="cosine", warmup_epochs=2, label_smoothing=0.1, flip=True, shift_pixels=4,
)


def resnet(name: str, widths: tuple[int, int, int] = (16, 32, 64), separable: bool = False, depth: int = 1):
    """MLPerf Tiny's ResNet-8 (ResNet v1, a stem and three residual stages of `widths`).

    `separable` makes the residual blocks' 3x3 convs depthwise-separable (a 3x3 depthwise
    conv, BN, then a 1x1 conv), at about 1/8 of their MACs. `depth` is the residual blocks
    per stage (1: ResNet-8, 2: ResNet-14, 3: ResNet-20); the later blocks of a stage keep its
    width and have identity shortcuts.
    """
    import keras

    layers = keras_layers()
    # As in the MLPerf Tiny reference: he_normal kernels with L2 1e-4, BN after every conv.
    # Only the BN momentum differs (0.9, not 0.99); inference is the same graph.
    regularizer = keras.regularizers.L2(1e-4)
    conv_options = dict(padding="same", kernel_initializer="he_normal", kernel_regularizer=regularizer)

    def conv3x3(x, width, stride=1):
        if not separable:
            return layers.Conv2D(width, 3, strides=stride, **conv_options)(x)
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", depthwise_initializer="he_normal",
                                   depthwise_regularizer=regularizer)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        return layers.Conv2D(width, 1, **conv_options)(x)

    inputs = contract_input()
    x = scale_to_unit(layers, inputs)
    x = layers.Conv2D(widths[0], 3, **conv_options)(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM)(x))
    stages = zip(widths, (1, 2, 2), strict=True)
    for width, stride in ((width, stride if block == 0 else 1) for width, stride in stages for block in range(depth)):
        y = conv3x3(x, width, stride)
        y = layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM)(y))
        y = conv3x3(y, width)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM)(y)
        if stride != 1:
            x = layers.Conv2D(width, 1, strides=stride, **conv_options)(x)  # projection shortcut
        x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.AveragePooling2D(pool_size=8)(x)
    x = layers.Flatten()(x)
    return functional_model(inputs, probability_head(layers, x), name)


def _register_resnet(name: str, description: str, **options) -> None:
    register(name, description, _RESNET8_RECIPE)(lambda registered_name: resnet(registered_name, **options))


_register_resnet("resnet8", "MLPerf Tiny image-classification reference: ResNet v1, 16/32/64 filters, ~78K params, ~12.5M MACs")
# Candidates for the edge model of the same cost (issue 14; BENCHMARKS.md compares them).
_register_resnet("resnet8-w20", "ResNet-8 at 20/40/80 filters: ~1.55x the params and MACs of resnet8", widths=(20, 40, 80))
_register_resnet("resnet8-sep40", "ResNet-8 at 40/80/160 filters with depthwise-separable residual convs: ~resnet8's params",
                 widths=(40, 80, 160), separable=True)
# Depth instead of width at the same file size: 13/26/52 is the widest ResNet-14 whose int8 file stays
# near resnet8-w20's (14/28/56 is about 150 KB, the issue's limit).
_register_resnet("resnet14-w13", "ResNet-14 (two blocks per stage) at 13/26/52 filters: about resnet8-w20's params",
                 widths=(13, 26, 52), depth=2)


# --- the time-to-accuracy model ------------------------------------------------------


@register(
    "fast",
    "speed-record style net: conv-pool-BN-ReLU blocks 64/256/256, label smoothing, Nesterov SGD, weight averaging, flip TTA",
    Recipe(
        epochs=20, batch_size=512, learning_rate=0.4, nesterov=True, weight_decay=5e-4,
        schedule="cosine", warmup_epochs=3, label_smoothing=0.2, flip=True, shift_pixels=2, weight_averaging=True,
        tta="flip",
    ),
)
def fast(name):
    layers = keras_layers()

    def conv_bn_relu(x, width, pool=False):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        if pool:
            # Pool before BN and the activation: the same result at a quarter of their cost.
            x = layers.MaxPooling2D(2)(x)
        # Low BN momentum: statistics must keep up over a run of only a few epochs.
        x = layers.BatchNormalization(momentum=0.6)(x)
        return layers.ReLU()(x)

    inputs = contract_input()
    x = standardize(layers, inputs)
    x = conv_bn_relu(x, 32)
    for width in (64, 256, 256):
        x = conv_bn_relu(x, width, pool=True)
        x = conv_bn_relu(x, width)
    x = layers.GlobalMaxPooling2D()(x)
    return functional_model(inputs, probability_head(layers, x, use_bias=False), name)


# --- the speed-record model ----------------------------------------------------------

# airbench94 (KellerJordan/cifar10-airbench, legacy/airbench94.py): 94.0% in 9.9 epochs on
# the official pixels, averaged over many runs, with 6-view TTA. Its hyperparameters are
# PyTorch's; converted here to Keras' (derivation in each comment), with momentum mu = 0.85.
_AIRBENCH_MOMENTUM = 0.85
# Learning rate. airbench's PyTorch lr is 11.5 / (1024 (1 + 1/(1 - mu))) = 1.465e-3 on a
# loss summed over the batch of 1024, so 1.465e-3 x 1024 = 1.50 on Keras' mean loss. Keras'
# and PyTorch's Nesterov SGD take the same step for the same lr and gradient.
_AIRBENCH_LR = 11.5 / (1 + 1 / (1 - _AIRBENCH_MOMENTUM))
# Weight decay. airbench gives each PyTorch group weight_decay = wd/lr with
# wd = 0.0153 x 1024 / (1024 (1 + 1/(1 - mu))) = 1.996e-3: coupled L2, added to the
# gradient, so it passes through the momentum buffer and, for slowly changing weights,
# shrinks each weight by wd / (1 - mu) = 0.0133 per step (times the schedule's factor).
# Keras' decay is decoupled: p <- p (1 - lr_t wd_k), outside the momentum, with
# lr_t = 1.50 x the same factor. Equal shrinkage needs wd_k = wd / ((1 - mu) 1.50)
# = 0.0153 / (11.5 (1 - mu)) = 8.87e-3. That is first order in the shrink: PyTorch's
# momentum recurrence adds mu^2 s^2 / (1 - mu), so on an idle weight it decays 6% faster
# (tests/test_airbench.py measures both). Copying a PyTorch number such as 5e-4 instead
# decays about 18x too weakly per step.
_AIRBENCH_WEIGHT_DECAY = 0.0153 / (11.5 * (1 - _AIRBENCH_MOMENTUM))

AIRBENCH_RECIPE = Recipe(
    # 9.9 epochs in airbench94; Keras counts whole epochs, and 10 is 1% more steps.
    epochs=10, batch_size=1024, learning_rate=_AIRBENCH_LR, momentum=_AIRBENCH_MOMENTUM, nesterov=True,
    weight_decay=_AIRBENCH_WEIGHT_DECAY, schedule="linear", warmup_fraction=0.23, lr_start_factor=0.2, lr_end_factor=0.07,
    # BN biases learn 64x faster (airbench's bias_scaler); the whitening bias trains for 3 epochs.
    bias_lr_multiplier=64.0, whiten_bias_epochs=3, label_smoothing=0.2, flip=True, alternating_flip=True, shift_pixels=2,
    drop_last=True, lookahead_every=5, lookahead_decay=0.95, tta="6",
)


def _prepare_airbench(model, images) -> None:
    """Set the whitening kernel from the patch covariance of the first training images."""
    import numpy as np

    from cifar_edge.train.whitening import WHITENING_IMAGES, whitening_kernel

    sample = np.asarray(images[:WHITENING_IMAGES], np.float32) / 255
    standardized = (sample - np.array(CIFAR10_MEAN, np.float32)) / np.array(CIFAR10_STD, np.float32)
    model.get_layer("whiten").kernel.assign(whitening_kernel(standardized))


def _airbench(name: str, widths: tuple[int, int, int]):
    import keras

    from cifar_edge.train.whitening import with_identity

    layers = keras_layers()
    # PyTorch's default init for conv and linear layers: uniform within +-1/sqrt(fan_in).
    init = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")
    inputs = contract_input()
    x = standardize(layers, inputs)
    # 2x2 patch whitening, 24 filters, no padding (32 -> 31): its kernel is set from the
    # data before training and then frozen; its bias trains for the first epochs.
    x = layers.Conv2D(24, 2, padding="valid", kernel_initializer=init, name="whiten")(x)
    x = layers.Activation("gelu", name="whiten_gelu")(x)
    for block, width in enumerate(widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init, name=f"block{block}_conv{conv}")(x)
            if conv == 1:
                x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)  # 31 -> 15 -> 7 -> 3
            # Momentum 0.6 as airbench's (PyTorch 0.4); no scale: only the bias learns.
            x = layers.BatchNormalization(momentum=0.6, epsilon=1e-12, scale=False, name=f"block{block}_norm{conv}")(x)
            x = layers.Activation("gelu", name=f"block{block}_gelu{conv}")(x)
    x = layers.GlobalMaxPooling2D(name="pool")(x)  # airbench's MaxPool2d(3) over the last 3x3
    x = layers.Dense(NUM_CLASSES, use_bias=False, kernel_initializer=init, name="logits")(x)
    x = layers.Rescaling(1 / 9, name="logit_scale")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = functional_model(inputs, outputs, name)
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D) and layer.kernel_size == (3, 3):
            layer.kernel.assign(with_identity(keras.ops.convert_to_numpy(layer.kernel)))
    return model


@register(
    "airbench94",
    "Keras port of airbench94: 2x2 whitening stem, GELU, conv-pool-BN blocks 64/256/256, lookahead, alternating flip, 6-view TTA",
    AIRBENCH_RECIPE, prepare=_prepare_airbench, frozen=("whiten/kernel",),
)
def airbench94(name):
    return _airbench(name, (64, 256, 256))

"""The pieces every registry model is built from: the contract's input and output, pixel
scaling, and `vgg`, the one parameterised VGG builder that the tutorials' models and
`cifar-tune`'s candidates share.

Keras is imported on first build, so listing the registry stays instant.
"""

from __future__ import annotations

from cifar_edge.runtime.labels import NUM_CLASSES

# Keras' default BN momentum, 0.99, leaves a third of the initial statistics in the
# moving averages after 100 steps: short runs then test far below their training
# accuracy (resnet8, 3 epochs of 5,000 images: 17.9% against 42.4% with 0.9). Long runs
# do as well with 0.9, so our own models use it throughout.
BN_MOMENTUM = 0.9

# Per-channel statistics of the CIFAR-10 training split, on the 0..1 scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def keras_layers():
    # Keras is imported on first build, so listing the registry stays instant.
    import keras

    return keras.layers


def contract_input():
    import keras

    return keras.Input(shape=(32, 32, 3), dtype="uint8", name="image")


def scale_to_unit(layers, inputs):
    return layers.Rescaling(1.0 / 255, name="scale")(inputs)


def standardize(layers, inputs):
    # One multiply-add per channel: (x / 255 - mean) / std.
    scale = [1.0 / (255 * s) for s in CIFAR10_STD]
    offset = [-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True)]
    return layers.Rescaling(scale=scale, offset=offset, name="standardize")(inputs)


def probability_head(layers, x, use_bias: bool = True):
    x = layers.Dense(NUM_CLASSES, use_bias=use_bias, name="logits")(x)
    # float32 softmax even under a mixed policy: half-precision probabilities round badly.
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def functional_model(inputs, outputs, name: str):
    import keras

    return keras.Model(inputs, outputs, name=name)


def vgg(name: str, widths: tuple[int, ...], *, dense_units: tuple[int, ...] = (128,), block_dropouts=None, dense_dropouts=None,
        batch_norm: bool = False, bn_momentum: float | None = None):
    """VGG blocks (two 3x3 ReLU convs, max-pool) of `widths`, then ReLU dense layers of `dense_units`.

    `block_dropouts[i]` follows block i and `dense_dropouts[j]` dense layer j (None or 0: no
    layer); `batch_norm` puts a BatchNormalization after every conv and dense layer, with
    `bn_momentum` (None: Keras' 0.99, as the tutorials' models were trained with).
    """
    layers = keras_layers()
    norm = {} if bn_momentum is None else {"momentum": bn_momentum}
    inputs = contract_input()
    x = scale_to_unit(layers, inputs)
    for block, width in enumerate(widths):
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer="he_uniform")(x)
            if batch_norm:
                x = layers.BatchNormalization(**norm)(x)
        x = layers.MaxPooling2D(2)(x)
        if block_dropouts and block_dropouts[block]:
            x = layers.Dropout(block_dropouts[block])(x)
    x = layers.Flatten()(x)
    for index, units in enumerate(dense_units):
        x = layers.Dense(units, activation="relu", kernel_initializer="he_uniform")(x)
        if batch_norm:
            x = layers.BatchNormalization(**norm)(x)
        if dense_dropouts and dense_dropouts[index]:
            x = layers.Dropout(dense_dropouts[index])(x)
    return functional_model(inputs, probability_head(layers, x), name)

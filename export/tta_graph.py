"""Test-time augmentation built into an exported graph, from built-in ops only.

`with_tta(model, mode)` wraps a contract model: the views of `cifar_edge.runtime.tta`
are made inside the graph (reflect padding, slices, a mirror), run through the network as
one batch, and their log-probabilities averaged with the table's weights. The result
keeps the contract (raw pixels in, 10 probabilities out), so every format and every
runtime engine gets TTA with nothing new on the device.

The wrapper is only ever converted, never saved as `.keras`, so it may use `keras.ops`.
"""

from __future__ import annotations

import numpy as np

from cifar_edge.runtime.tta import MAX_SHIFT, views


def logits_of(model):
    """The model's pre-softmax tensor: the input of a final softmax Activation, else log(probabilities)."""
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.layers.Activation) and last.activation is keras.activations.softmax:
        return last.input
    return keras.ops.log(keras.ops.maximum(model.outputs[0], 1e-30))


def with_tta(model, mode: str, input_dtype: str = "uint8"):
    """`model` (a float-input network) with the views of `mode` averaged inside the graph.

    `model` must take float pixel values (0..255) so the views are computed in float32;
    the wrapper takes `input_dtype` pixels, like the model it stands for.
    """
    import keras
    from keras import ops

    chosen = views(mode)
    network = keras.Model(model.inputs, logits_of(model), name=f"{model.name}_logits")
    inputs = keras.Input((32, 32, 3), dtype=input_dtype, name="image")
    x = ops.cast(inputs, "float32")
    pad = MAX_SHIFT
    padded = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
    batch = []
    for view in chosen:
        y = x
        if view.dy or view.dx:
            top, left = pad - view.dy, pad - view.dx
            y = padded[:, top : top + 32, left : left + 32, :]
        if view.flip:
            y = ops.flip(y, axis=2)
        batch.append(y)
    logits = network(ops.concatenate(batch, axis=0) if len(batch) > 1 else batch[0])
    # (views x N, 10) -> (views, N, 10). The softmax of the weighted mean of the logits is
    # the table's rule (the weighted mean of log-probabilities), without a log in the graph.
    per_view = ops.reshape(logits, (len(chosen), -1, logits.shape[-1]))
    weights = np.array([view.weight for view in chosen], np.float32).reshape(-1, 1, 1)
    averaged = ops.sum(per_view * weights, axis=0)
    outputs = ops.softmax(averaged, axis=-1)
    return keras.Model(inputs, outputs, name=model.name)

"""Keras' epoch log names for our test subset.

`cifar-train` hands Keras its test images as `validation_data`, so Keras names their figures
`val_loss` and `val_accuracy`, and its progress bar prints them as if they were a validation
split. They are not: cifar-train's validation-free runs evaluate the test split (or `--limit-test`
of it) each epoch, and `history.csv` and `metrics.json` call them `test_*`.
"""

from __future__ import annotations

import keras

KERAS_PREFIX = "val_"
OUR_PREFIX = "test_"


class SubsetLogNames(keras.callbacks.Callback):
    """Renames `val_*` to `test_*` in the epoch logs, for the callbacks after it: Keras' History and progress bar.

    It must be the last of our callbacks: ours (the checkpointing recorder, TensorBoard's train and
    validation folders) read the Keras names, and Keras adds History and the progress bar after
    every callback it is given.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            for key in [k for k in logs if k.startswith(KERAS_PREFIX)]:
                logs[OUR_PREFIX + key[len(KERAS_PREFIX):]] = logs.pop(key)

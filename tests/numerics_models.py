"""Models whose numerics, not their structure, trip a naive gate: reduced precision, long reductions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow
from tests.models import _save_serving

tf = import_tensorflow()


def mixed_precision_cnn(directory: Path) -> Path:
    """A Keras image classifier under the mixed_float16 policy, as Keras' guide builds one: layers compute
    in float16, the last activation is kept in float32."""
    import keras

    keras.utils.set_random_seed(7)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        image = keras.Input(shape=(16, 16, 3), name="image")
        hidden = keras.layers.Conv2D(16, 3, activation="relu")(image)
        hidden = keras.layers.GlobalAveragePooling2D()(hidden)
        hidden = keras.layers.Dense(32, activation="relu")(hidden)
        logits = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(hidden)
        probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
        model = keras.Model(image, {"probabilities": probabilities})
        model.export(str(directory), format="tf_saved_model", verbose=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return directory


class _LongReduction(tf.Module):
    """One dense layer over 102,400 features: outputs reach the hundreds, and a batch and a single row may
    take matmul kernels that sum in another order."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.random.default_rng(2).standard_normal((102_400, 8)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 102_400], tf.float32, name="features")])
    def __call__(self, features):
        return {"scores": tf.matmul(features, self.kernel)}


def long_reduction(directory: Path) -> Path:
    return _save_serving(_LongReduction(), directory)

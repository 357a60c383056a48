"""Models the remediation search is tested on: each fails one reduced-precision target for one reason that a
variant of the target's conversion removes (float16's overflow is tests/divergence_models.py's float16_overflow)."""

from __future__ import annotations

from pathlib import Path

OUTLIER = 1000.0  # the outlier channel's level: int8's per-tensor scale over it (about 4) rounds O(1) values away


def int8_outlier(directory: Path) -> Path:
    """A Keras CNN whose Conv "outlier" writes one channel near 1e3 beside seven of O(1). The next Conv ("head")
    ignores that channel (zero weights), so TensorFlow's logits come from the small channels alone; int8's
    per-tensor activation scale, set by the outlier, rounds those to a few steps, and onnx-int8 misses its
    criteria. Kept float32 (excluded from quantization), the layer passes."""
    import keras

    keras.utils.set_random_seed(11)
    image = keras.Input(shape=(16, 16, 3), name="image")
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="stem")(image)
    outlier = keras.layers.Conv2D(8, 1, name="outlier")
    hidden = outlier(hidden)
    head = keras.layers.Conv2D(16, 3, activation="relu", name="head")
    hidden = head(hidden)
    hidden = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    logits = keras.layers.Dense(10, name="logits", kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))(hidden)
    model = keras.Model(image, {"logits": logits})
    kernel, bias = outlier.get_weights()
    bias[0] = OUTLIER
    outlier.set_weights([kernel, bias])
    kernel, bias = head.get_weights()
    kernel[:, :, 0, :] = 0.0  # the head reads the small channels only
    head.set_weights([kernel, bias])
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return directory

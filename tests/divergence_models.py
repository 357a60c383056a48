"""Keras models built to diverge in known places once converted: the first-divergence report must find them
(tests/targets/test_localise.py), and the remediation search must fix the float16 one.

Each is exported with model.export, as tests/models.py and tests/benign_models.py export Keras models, and
takes the comparison batch modelgate draws by default (standard normal inputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow

tf = import_tensorflow()

FLOAT16_MAX = 65504.0


def _export(model, directory: Path) -> Path:
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def float16_overflow(directory: Path) -> Path:
    """Dense "amplify" (relu) takes 16 activations near 2 through weights of 5000 (under onnxconverter-common's
    1e4 clamp of constants, so the float16 file keeps them): its outputs are about 1.6e5, past float16's 65504.
    Layers "split" (Reshape), "regroup" (Permute) and "join" (Flatten) move them around, and Dense "shrink"
    scales them back by 1e-5 to O(1) outputs. TensorFlow (float32) is exact to the eye; the onnx-fp16 file's
    outputs are NaN.

    Why the reshuffle: ONNX Runtime's CPU has no float16 MatMul, Add or Relu kernels, and computes them in
    float32 between casts it removes where they meet, so Dense layers alone never overflow on CPU. Reshape and
    Transpose run in any type, so ONNX Runtime keeps them float16: amplify's output is cast to float16 on its
    way into "split", and is Inf there. Read back as the file declares it (float16), amplify's MatMul output is
    Inf already: the first-divergence report names amplify. A float16 variant passes once amplify's ops and
    every op up to shrink's MatMul (which brings the values back into range) stay float32."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = keras.Input((8,), name="features")
    entry = keras.layers.Dense(16, activation="relu", name="entry")
    amplify = keras.layers.Dense(16, activation="relu", name="amplify")
    shrink = keras.layers.Dense(4, name="shrink")
    amplified = amplify(entry(inputs))
    regrouped = keras.layers.Permute((2, 1), name="regroup")(keras.layers.Reshape((4, 4), name="split")(amplified))
    outputs = shrink(keras.layers.Flatten(name="join")(regrouped))
    model = keras.Model(inputs, {"scores": outputs}, name="overflow")
    entry.set_weights([rng.uniform(-0.1, 0.1, (8, 16)).astype("float32"), np.full(16, 2.0, "float32")])
    amplify.set_weights([np.full((16, 16), 5000.0, "float32"), np.ones(16, "float32")])
    shrink.set_weights([(rng.standard_normal((16, 4)) * 1e-5).astype("float32"), np.zeros(4, "float32")])
    return _export(model, directory)


SPREAD_DEPTH = 24


def spread_drift(directory: Path, depth: int = SPREAD_DEPTH) -> Path:
    """A chain of `depth` Dense layers of width 64 with orthogonal kernels (norm-preserving: activations stay
    O(1) all the way) and tanh between them. In float16 every layer rounds its weights and activations by
    about 5e-4, and the errors add up layer after layer, each step a little over the one before: no single
    op is where it goes wrong. tests/targets/test_localise.py picks criteria that the first layers meet and
    the last ones miss."""
    import keras

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    inputs = keras.Input((64,), name="features")
    x = inputs
    layers = []
    for index in range(depth):
        layer = keras.layers.Dense(64, activation="tanh" if index < depth - 1 else None, name=f"drift_{index:02d}")
        layers.append(layer)
        x = layer(x)
    model = keras.Model(inputs, {"values": x}, name="drift")
    for layer in layers:
        kernel, _ = np.linalg.qr(rng.standard_normal((64, 64)))
        # Scaled a little above 1 so that tanh keeps a gain near 1 and the signal neither dies nor saturates.
        layer.set_weights([(kernel * 1.5).astype("float32"), (rng.standard_normal(64) * 0.05).astype("float32")])
    return _export(model, directory)


class _RootOfExcess:
    """Holds the Layer subclass, built when Keras is imported (not at module import)."""

    layer = None


def _root_layer():
    import keras

    if _RootOfExcess.layer is None:
        class RootOfExcess(keras.layers.Layer):
            """sqrt(x - 0.5) where x > 0.5, else 0: the square root runs on every element, so it makes NaN for
            every x under 0.5, and the select hides them from the output."""

            def call(self, x):
                return keras.ops.where(x > 0.5, keras.ops.sqrt(x - 0.5), keras.ops.zeros_like(x))

        _RootOfExcess.layer = RootOfExcess
    return _RootOfExcess.layer


def nan_op(directory: Path) -> Path:
    """A NaN made by TensorFlow itself, in one named op: layer "root" takes the square root of (x - 0.5) for
    every element, NaN wherever x < 0.5, and selects 0 there, so TensorFlow's outputs are finite (the classic
    where-of-sqrt trap: the NaN is still there, and breaks the gradient in training). tf2onnx converts the
    select into arithmetic (cond * sqrt + (1 - cond) * 0), where NaN * 0 is NaN: the onnx target's outputs are
    NaN. The first-divergence report names root's Sqrt as the first op to make a NaN from finite inputs, on
    TensorFlow's side, and root's SelectV2 as where the target lets it through."""
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(8, name="project")(inputs)
    rooted = _root_layer()(name="root")(hidden)
    outputs = keras.layers.Dense(3, name="head")(rooted)
    model = keras.Model(inputs, {"scores": outputs}, name="nan_op")
    return _export(model, directory)

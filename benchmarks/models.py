"""Models the performance suite measures: built here, from nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow


def mobilenet_v2(directory: Path) -> Path:
    """keras.applications.MobileNetV2 with random weights (weights=None: nothing is downloaded)."""
    import keras

    import_tensorflow()
    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(weights=None).export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def efficientnet_b0(directory: Path) -> Path:
    """keras.applications.EfficientNetB0 with random weights (weights=None: nothing is downloaded), exported for
    serving (model.export)."""
    import keras

    import_tensorflow()
    keras.utils.set_random_seed(0)
    keras.applications.EfficientNetB0(weights=None).export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def tiny_keras(directory: Path) -> Path:
    """A Keras Dense layer exported for serving, as Keras users do (model.export)."""
    import keras

    import_tensorflow()
    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).export(str(directory), verbose=False)
    return directory


# Nonzero weights per output of dense_of_size, however large the kernel.
NONZERO_ROWS = 256


def dense_of_size(directory: Path, weight_bytes: int) -> Path:
    """One matmul whose kernel holds about weight_bytes of float32 variables. Each output sums NONZERO_ROWS
    products whatever the size, so float32 sums in any order (TensorFlow's, ONNX Runtime's) stay within the
    default tolerances; with every weight nonzero, 100 MiB of them already miss."""
    tf = import_tensorflow()
    columns = 256
    rows = max(1, weight_bytes // (4 * columns))
    rng = np.random.default_rng(0)

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            kernel = np.zeros((rows, columns), np.float32)
            kernel[rng.choice(rows, min(rows, NONZERO_ROWS), replace=False)] = rng.standard_normal(
                (min(rows, NONZERO_ROWS), columns), dtype=np.float32)
            self.kernel = tf.Variable(kernel)

        @tf.function(input_signature=[tf.TensorSpec([None, rows], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.matmul(x, self.kernel)}

    module = Dense()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


def variables_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in (Path(model_dir) / "variables").glob("variables.data-*"))


def identity_onnx(path: Path) -> Path:
    """The most trivial ONNX model: y = x, so a measured call is almost all harness."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def random_feeds(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}

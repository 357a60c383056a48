"""The raw steps of one validation, in a plain script: no Prefect, no child processes, no report, no plots.

Load, wrap and prove the wrapper, check the outputs, time TensorFlow and the wrapper, convert with tf2onnx,
compare ONNX Runtime on 8 batches, time it, and record the figures and the ONNX model in an MLflow run,
as the flow does with its default settings: the same batch sweep, budget and thread counts, measured by the
same engine (modelgate.numerics.benchmark.sweep), so that the two do the same work. The suite times this against the
real flow on the same model; run as `python -m benchmarks.plain_validation MODEL_DIR WORKDIR`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def main(model_dir: str, workdir: str) -> None:
    import keras
    import mlflow
    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    from modelgate.numerics.benchmark import Measured, sweep
    from modelgate.numerics.benchmark_plan import sweep_plan, thread_counts
    from modelgate.request import ValidationRequest

    defaults = ValidationRequest(source=model_dir)
    plan = sweep_plan(defaults, fixed=None)
    intra, inter = thread_counts(defaults)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)

    def timed(runtime_name, call):
        return [point for point in sweep(call, feeds, plan, runtime_name=runtime_name, device="cpu",
                                         intra_op_threads=intra, inter_op_threads=inter) if isinstance(point, Measured)]

    loaded = tf.saved_model.load(model_dir)
    signature = loaded.signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    rng = np.random.default_rng(0)
    feeds = {
        name: rng.standard_normal([1, *spec.shape[1:]]).astype(spec.dtype.as_numpy_dtype)
        for name, spec in input_specs.items()
    }

    def run_signature(batch=feeds):
        return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in batch.items()}).items()}

    inputs = {name: keras.Input(shape=spec.shape[1:], dtype=spec.dtype.name, name=name)
              for name, spec in input_specs.items()}

    class Call(keras.layers.Layer):
        def call(self, x):
            return signature(**x)

        def compute_output_spec(self, x):
            return {k: keras.KerasTensor(v.shape, dtype=v.dtype.name) for k, v in signature.structured_outputs.items()}

    model = keras.Model(inputs, Call()(inputs))
    reference = run_signature()
    assert all(np.array_equal(reference[k], v) for k, v in model.predict(feeds, verbose=0).items())
    again = run_signature()
    assert all(np.array_equal(reference[k], again[k]) and np.isfinite(v).all() for k, v in reference.items())

    latency = {
        "tensorflow": timed("tensorflow", run_signature),
        "keras": timed("keras", lambda batch: {k: np.asarray(v) for k, v in model(batch, training=False).items()}),
    }

    onnx_path = str(Path(workdir) / "plain.onnx")
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", model_dir, "--signature_def", "serving_default",
         "--opset", "18", "--output", onnx_path], check=True, capture_output=True,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = intra, inter
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for seed in range(8):  # the flow compares ONNX Runtime with TensorFlow on 8 seeded batches too
        batch_rng = np.random.default_rng(seed)
        batch = {name: batch_rng.standard_normal(value.shape).astype(value.dtype) for name, value in feeds.items()}
        expected = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in batch.items()}).items()}
        outputs = dict(zip(names, session.run(names, batch)))
        assert all(np.allclose(outputs[k], expected[k], atol=1e-3, rtol=1e-2) for k in expected)
    latency["onnxruntime"] = timed("onnxruntime", lambda batch: session.run(names, batch))

    mlflow.set_tracking_uri(f"sqlite:///{Path(workdir) / 'plain-mlflow.db'}")
    with mlflow.start_run():
        mlflow.log_params({"model_dir": model_dir, "signature": "serving_default", "opset": 18})
        mlflow.log_metrics({f"latency_p50_ms.{runtime}.cpu.bs{point.result.batch_size}": point.result.p50_ms
                            for runtime, points in latency.items() for point in points})
        mlflow.onnx.log_model(
            onnx.load(onnx_path), name="onnx-model", input_example=feeds,
            signature=mlflow.models.infer_signature(feeds, reference),
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

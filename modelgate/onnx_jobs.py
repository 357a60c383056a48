"""The ONNX stage's work inside sandboxed child processes (see modelgate.jobs for the conventions).

TensorFlow's outputs on the extra comparison batches, ONNX Runtime held against them with one set of
providers, and the MLflow logged model (whose input-example check runs the model, so it runs here too).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from modelgate.compare import compare_stacked, errors, stack_batches, tolerance_for
from modelgate.inputs import read_npz, save_npz
from modelgate.pools import ONNXRUNTIME, TENSORFLOW
from modelgate.runners import OnnxRuntimeRunner, load_reference_runner
from modelgate.sandbox import shares_process
from modelgate.schemas import RuntimeComparison, SignatureSpec, Tolerance

UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
MLFLOW_MODEL_NAME = "onnx-model"

Batch = tuple[str, str]  # (inputs .npz, TensorFlow reference outputs .npz)


@shares_process(TENSORFLOW)
def tensorflow_references_job(
    model_dir: str, tags: list[str], model_format: str, signature_key: str, batches: list[Batch],
) -> None:
    """The reference runtime's outputs for the extra batches, from the model the validation's process already loaded."""
    runner = load_reference_runner(model_dir, tags, signature_key, model_format)
    for inputs_path, reference_path in batches:
        save_npz(runner(read_npz(inputs_path)), reference_path)


@shares_process(ONNXRUNTIME)
def onnx_comparison_job(
    onnx_path: str, batches: list[Batch], atol: Tolerance, rtol: Tolerance,
    providers: list[str], histogram_dir: str, label: str,
) -> RuntimeComparison:
    from modelgate.plots import error_histogram

    runner = OnnxRuntimeRunner(onnx_path, providers=providers)
    references = [read_npz(reference_path) for _, reference_path in batches]
    candidates = [runner(read_npz(inputs_path)) for inputs_path, _ in batches]
    stacked, problems = stack_batches(references, candidates)
    outputs = compare_stacked(stacked, problems, references, candidates, atol, rtol)
    histograms = {}
    for name, (reference, candidate) in stacked.items():
        if reference.dtype.kind not in "fciub":
            continue
        path = Path(histogram_dir) / f"onnx_abs_error_{label}_{UNSAFE_FILE_CHARS.sub('_', name)}.png"
        histograms[name] = str(error_histogram(
            errors(reference, candidate)[0], tolerance_for(atol, name), path,
            f"{name}: ONNX Runtime ({', '.join(runner.providers)}) vs TensorFlow, {len(batches)} batches",
        ))
    return RuntimeComparison(
        providers=runner.providers, graph_optimization_level=runner.graph_optimization_level,
        outputs=outputs, batches=len(batches), histograms=histograms,
    )


def _numpy_dtype(tf_dtype: str) -> np.dtype:
    return np.dtype(object) if tf_dtype == "string" else np.dtype(tf_dtype)


def mlflow_signature(signature: SignatureSpec):
    """The TF signature in MLflow's terms: one named tensor per input and output, -1 for dynamic dims."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def schema(specs) -> Schema:
        return Schema([
            TensorSpec(_numpy_dtype(spec.dtype), (-1,) if spec.shape is None else tuple(
                -1 if dim is None else dim for dim in spec.shape), name)
            for name, spec in specs.items()
        ])

    return ModelSignature(inputs=schema(signature.inputs), outputs=schema(signature.outputs))


@shares_process(ONNXRUNTIME)
def log_onnx_model_job(
    tracking_uri: str, run_id: str, onnx_path: str, signature: SignatureSpec,
    inputs_path: str | None, external_data: bool,
) -> str:
    """mlflow.onnx.log_model against the validation's run; returns the logged model's URI.

    Its fluent API keeps the tracking URI and active run per process and thread, and Prefect runs tasks in
    threads, so this child sets its own and names the run explicitly."""
    import mlflow
    import onnx

    mlflow.set_tracking_uri(tracking_uri)
    example = None
    if inputs_path:
        example = {name: value[:1] if value.ndim else value for name, value in read_npz(inputs_path).items()}
    info = mlflow.onnx.log_model(
        onnx.load(onnx_path), name=MLFLOW_MODEL_NAME, run_id=run_id, signature=mlflow_signature(signature),
        input_example=example, save_as_external_data=external_data,
        # Serving the ONNX model takes onnx and ONNX Runtime, not this environment's TensorFlow and Prefect;
        # left to infer, MLflow exports the uv project or imports the model in yet another process.
        pip_requirements=mlflow.onnx.get_default_pip_requirements(),
    )
    return info.model_uri

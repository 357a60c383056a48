"""The ONNX target's MLflow logged model (its `log_model`), written in the child process that modelgate.tracking
logs models in, never in the parent: mlflow.onnx imports onnx, and MLflow's input-example check runs the model
with ONNX Runtime."""

from __future__ import annotations

from modelgate.numerics.inputs import no_batch_dimension, read_npz
from modelgate.targets import LoggedModelSource
from modelgate.tracking.mlflow_model import mlflow_signature

MLFLOW_MODEL_NAME = "onnx-model"


def log_onnx_model(source: LoggedModelSource) -> str:
    """mlflow.onnx.log_model against the validation's run; returns the logged model's URI.

    Its fluent API keeps the tracking URI and active run per process and thread, and Prefect runs tasks in
    threads, so this child sets its own and names the run explicitly."""
    import mlflow
    import mlflow.onnx
    import onnx

    mlflow.set_tracking_uri(source.tracking_uri)
    signature = source.signature
    example = None
    if source.inputs_path and signature.inputs:
        feeds = read_npz(source.inputs_path)
        # One row of a batch; a signature without a batch dimension takes its inputs whole.
        example = feeds if no_batch_dimension(signature) else {
            name: value[:1] if value.ndim else value for name, value in feeds.items()
        }
    info = mlflow.onnx.log_model(
        onnx.load(source.artifact), name=MLFLOW_MODEL_NAME, run_id=source.run_id,
        signature=mlflow_signature(signature), input_example=example,
        save_as_external_data=bool(source.details.get("external_data")),
        # Serving the ONNX model takes onnx and ONNX Runtime, not this environment's TensorFlow and Prefect;
        # left to infer, MLflow exports the uv project or imports the model in yet another process.
        pip_requirements=mlflow.onnx.get_default_pip_requirements(),
    )
    return info.model_uri

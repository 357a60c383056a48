"""The child processes of one validation, each warmed up (frameworks imported) as the flow starts.

TensorFlow and ONNX Runtime get separate shared children: each keeps its own thread pools, and a model
loaded by one does not count against the other's memory limit. tf2onnx gets a single-use child: the
conversion changes TensorFlow's global state, so nothing runs after it in that interpreter.
"""

from __future__ import annotations

from modelgate.benchmark_plan import thread_environment
from modelgate.op_allowlist import import_op_libraries_from_environment, op_library_environment
from modelgate.quiet import import_tensorflow
from modelgate.sandbox import SharedProcess
from modelgate.schemas import ValidationRequest

TENSORFLOW = "tensorflow"
ONNXRUNTIME = "onnxruntime"
TF2ONNX = "tf2onnx"


def import_tensorflow_stack() -> None:
    import_tensorflow()
    import_op_libraries_from_environment()
    import keras  # noqa: F401


def import_onnxruntime_stack() -> None:
    import mlflow.onnx  # noqa: F401 - the logged ONNX model is written from this pool
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401


def import_tf2onnx_stack() -> None:
    """What tf2onnx's command line imports, without importing tf2onnx.convert itself (the conversion runs
    that module as __main__)."""
    import_tensorflow()
    import_op_libraries_from_environment()
    import onnxruntime  # noqa: F401 - the converted file is loaded once to check it
    from tf2onnx import optimizer, tf_loader, tf_utils, tfonnx  # noqa: F401


def validation_pools(request: ValidationRequest) -> dict[str, SharedProcess]:
    """TensorFlow starts with the request's thread counts (it reads them once); ONNX Runtime takes its
    own per session. The ONNX pools open only when ONNX is asked for. Whatever loads the TensorFlow model
    imports the request's op libraries first."""
    op_libraries = op_library_environment(request.op_libraries)
    pools = {TENSORFLOW: SharedProcess(
        environment={**thread_environment(request), **op_libraries}, warm_up=import_tensorflow_stack,
    )}
    if request.export_onnx:
        # Outside the OS sandbox: it runs only the ONNX file tf2onnx (sandboxed) wrote, with ONNX Runtime's own
        # operators, and it logs that file to MLflow, which may take the network and files beyond the workdir.
        pools[ONNXRUNTIME] = SharedProcess(warm_up=import_onnxruntime_stack, sandboxed=False)
        pools[TF2ONNX] = SharedProcess(environment=op_libraries, warm_up=import_tf2onnx_stack, single_use=True)
    return pools

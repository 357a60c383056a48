"""What the reduced-precision ONNX targets share: their file judged by modelgate.targets.onnx.conversion's checks, as a
ConversionRecord. Not a target (no TARGET): the registry passes it by."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from modelgate.execution.os_sandbox import DENIED
from modelgate.report import ConversionRecord
from modelgate.targets import ConversionSource
from modelgate.targets.onnx.conversion import EXTERNAL_DATA_FILE, FATAL_CHECKS, verify_onnx_file

MODEL_FILE = "model.onnx"


def reproduce(call: str) -> str:
    """One `python -c` line calling the function convert used, so the command redoes exactly that."""
    return shlex.join(["python", "-c", call])


def refused_by_sandbox(exc: BaseException) -> bool:
    """A write or read the OS sandbox refused is its verdict, for run_isolated to report as such, not a model
    the converter cannot handle (ONNX Runtime's C++ errors carry the denial only in their text)."""
    return isinstance(exc, PermissionError) or DENIED in str(exc)


def failed(why: str, started: float, details: dict, command: str) -> ConversionRecord:
    return ConversionRecord(path=None, duration_s=time.monotonic() - started, failure=why, details=details,
                            reproduce=command)


def checked(output: Path, source: ConversionSource, started: float, details: dict, command: str) -> ConversionRecord:
    """The written file through verify_onnx_file; a file ONNX Runtime or the checker refuses is a failure."""
    checks = verify_onnx_file(str(output), source.signature)
    fatal = [check.message for check in checks if check.status == "failed" and check.name in FATAL_CHECKS]
    external = output.with_name(EXTERNAL_DATA_FILE)
    size = output.stat().st_size + (external.stat().st_size if external.is_file() else 0)
    return ConversionRecord(
        path=str(output), size_bytes=size, duration_s=time.monotonic() - started,
        checks=checks, failure="; ".join(fatal) or None, details=details, reproduce=command,
    )


def activations(model, feed_paths: list[str]):
    """Every float tensor the graph's nodes write (its outputs too), run in ONNX Runtime on CPU: one mapping of
    name to value per .npz of inputs. For variants that keep the tensors float16 or int8 cannot hold; a tensor
    whose type shape inference cannot tell is left out."""
    import onnx
    import onnxruntime

    from modelgate.numerics.inputs import read_npz

    float_type = onnx.TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {info.name: info for info in [*inferred.graph.value_info, *inferred.graph.output]}
    written = [name for node in model.graph.node for name in node.output if name in typed]
    chosen = [typed[name] for name in dict.fromkeys(written) if typed[name].type.tensor_type.elem_type == float_type]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(chosen)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    names = [output.name for output in session.get_outputs()]
    for path in feed_paths:
        feeds = read_npz(path)
        yield dict(zip(names, session.run(names, {name: feeds[name] for name in inputs}), strict=True))

"""ONNX conversion with tf2onnx, judged by what the file does rather than by what tf2onnx says.

tf2onnx logs 'Unsupported ops' and still reports success, writing a file ONNX Runtime refuses
(INVALID_GRAPH). So a conversion only counts once the ONNX checker passes and ONNX Runtime loads it.
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from modelgate.errors import OnnxConversionError

UNSUPPORTED_OPS = re.compile(r"Unsupported ops: Counter\((\{.*?\})\)")


@dataclass(frozen=True)
class ConversionPlan:
    model_dir: str
    signature_key: str
    tags: list[str]
    opset: int
    output_path: str

    def argv(self) -> list[str]:
        return [
            "--saved-model", self.model_dir, "--signature_def", self.signature_key,
            "--tag", ",".join(self.tags), "--opset", str(self.opset), "--output", self.output_path,
        ]

    def shell_command(self) -> str:
        return shlex.join(["python", "-m", "tf2onnx.convert", *self.argv()])


def default_opset() -> int:
    """The highest opset both tf2onnx and the installed onnx package know."""
    import onnx
    from tf2onnx import constants

    return min(max(constants.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())


def unsupported_ops(log_text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for match in UNSUPPORTED_OPS.finditer(log_text):
        for op, count in ast.literal_eval(match.group(1)).items():
            found[op] = found.get(op, 0) + int(count)
    return found


def convert_job(plan: ConversionPlan, log_path: str) -> None:
    """Runs in a sandboxed child: tf2onnx changes TensorFlow's global state, and a crash must stay here."""
    sys.argv = ["tf2onnx.convert", *plan.argv()]
    try:
        runpy.run_module("tf2onnx.convert", run_name="__main__")
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise OnnxConversionError(f"tf2onnx exited with code {exit_.code}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    unsupported = unsupported_ops(Path(log_path).read_text(errors="replace"))
    if unsupported:
        listing = ", ".join(f"{op} x{count}" for op, count in sorted(unsupported.items()))
        raise OnnxConversionError(f"tf2onnx cannot convert these ops: {listing}")
    if not Path(plan.output_path).is_file():
        raise OnnxConversionError("tf2onnx wrote no ONNX file")
    verify_onnx_file(plan.output_path)


def verify_onnx_file(path: str) -> None:
    import onnx
    import onnxruntime as ort

    try:
        # By path, so models stored with external data are checked too.
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as exc:
        raise OnnxConversionError(f"the ONNX checker rejects the converted model: {str(exc).splitlines()[0]}") from exc
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types for invalid graphs
        raise OnnxConversionError(
            f"ONNX Runtime cannot load the converted model: {str(exc).splitlines()[0]}"
        ) from exc

"""LiteRT (TFLite) conversion with TensorFlow's TFLiteConverter: builtin ops only, no optimizations, float32.

A model needing TensorFlow kernels (Flex, "select TF ops") would need the Flex delegate, which ai-edge-litert's
interpreter lacks, so such ops make the conversion a failure that names them. The file is then checked by what
ai-edge-litert's interpreter makes of it: that it loads and allocates, and that its signature has the
SavedModel signature's inputs and outputs by name and dtype.

No remediation variants (no `variants`): the file is float32 builtins with no optimizations, so there is no
quantized op to fall back to float and no precision to raise; "select TF ops" would make a file this
interpreter cannot run (no Flex delegate). A mismatch here is XNNPACK's or the converter's op lowering, which no
converter setting exposed here changes; the report says "no variants".
"""

from __future__ import annotations

import json
import shlex
import time
from collections import Counter
from pathlib import Path

from modelgate.criteria import Criteria
from modelgate.description import SignatureSpec
from modelgate.report import Check, ConversionRecord
from modelgate.runtimes.litert import DELEGATE_NODE
from modelgate.targets import ConversionSource, Target
from modelgate.targets.onnx.conversion import tensorflow_complaints

FILE_NAME = "model.tflite"
FILE_CHECKS = ["litert_interpreter_load", "litert_inputs", "litert_outputs"]
TARGET = Target(
    name="litert", artifact_format="tflite", packages=("ai_edge_litert", "tensorflow"), module=__name__,
    description="LiteRT (TFLite) flatbuffer from tf.lite.TFLiteConverter, builtin ops only, float32, "
    "run by ai-edge-litert's interpreter (XNNPACK on CPU)",
    # Measured on the tests' Keras CNN (tests/models.py keras_cnn, logits spread over tens of units, batches 1
    # and 4): XNNPACK's float32 kernels agree with TensorFlow's to 6e-6 absolute and 8e-6 relative at worst,
    # well within float32's defaults (1e-4, 1e-3), which stay.
    criteria=Criteria(), file_checks=tuple(FILE_CHECKS),
)
# Without these the file cannot be run on the signature's feeds at all; a differing output is left to the
# comparison, which says which outputs it misses.
FATAL_CHECKS = ["litert_interpreter_load", "litert_inputs"]
MESSAGE_LIMIT = 400
# The converter's error codes (tensorflow/compiler/mlir/lite/metrics/converter_error_data.proto) for ops
# the builtin op set lacks: what the model would need instead, and the details key listing them.
OP_ERRORS = {"ERROR_NEEDS_FLEX_OPS": ("TensorFlow (Flex) kernels", "unconvertible_flex_ops"),
             "ERROR_NEEDS_CUSTOM_OPS": ("custom ops", "unconvertible_custom_ops")}


def _first_line(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= MESSAGE_LIMIT else f"{line[:MESSAGE_LIMIT]}…"


def conversion_code(source: ConversionSource, output_path: str) -> str:
    """The conversion as one line of Python, for `reproduce`. Its strings are JSON's (valid Python, double
    quotes), so the shell's single quotes around it need no escaping."""
    tags = ", ".join(json.dumps(tag) for tag in source.tags)
    return (
        "import tensorflow as tf; "
        f"converter = tf.lite.TFLiteConverter.from_saved_model({json.dumps(source.model_dir)}, "
        f"signature_keys=[{json.dumps(source.signature.key)}], tags={{{tags}}}); "
        "converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]; "
        f'open({json.dumps(output_path)}, "wb").write(converter.convert())'
    )


def unconvertible_ops(exc) -> dict[str, dict[str, int]]:
    """By error code, the op types the converter could not map to builtins, with counts. The converter
    reports one error per op it stopped at, structured, beside its MLIR dump."""
    found: dict[str, Counter] = {}
    for error in getattr(exc, "errors", []):
        code = type(error).ErrorCode.Name(error.error_code)
        if code in OP_ERRORS and error.operator.name:
            found.setdefault(code, Counter())[error.operator.name.removeprefix("tf.")] += 1
    return {code: dict(sorted(ops.items())) for code, ops in found.items()}


def failure_reason(exc) -> str:
    ops = unconvertible_ops(exc)
    if ops:
        return "; ".join(
            f"LiteRT's builtin ops cannot express {', '.join(f'{op} x{n}' for op, n in found.items())} "
            f"(they need {OP_ERRORS[code][0]})"
            for code, found in ops.items()
        )
    errors = [error.error_message for error in getattr(exc, "errors", []) if error.error_message]
    return f"the TFLite converter failed: {_first_line(errors[0] if errors else str(exc))}"


def converter_message(exc: BaseException | None, log_text: str) -> str:
    """The converter's own errors, else what TensorFlow complained of in the log."""
    if exc is not None:
        errors = [_first_line(error.error_message) for error in getattr(exc, "errors", []) if error.error_message]
        return "\n".join(errors[-20:]) or _first_line(str(exc))
    return "\n".join(tensorflow_complaints(log_text)[-20:])


def convert(source: ConversionSource) -> ConversionRecord:
    from modelgate.execution.quiet import import_tensorflow

    tf = import_tensorflow()
    from tensorflow.lite.python.convert_phase import ConverterError

    output_path = str(Path(source.output_dir) / FILE_NAME)
    reproduce = shlex.join(["python", "-c", conversion_code(source, output_path)])
    details: dict = {"converter": "tf.lite.TFLiteConverter", "tensorflow": tf.__version__, "supported_ops": "TFLITE_BUILTINS"}
    started = time.monotonic()

    def failed(reason: str, message: str) -> ConversionRecord:
        return ConversionRecord(
            path=None, duration_s=time.monotonic() - started, failure=reason, details=details, reproduce=reproduce,
            converter_message=message,
            checks=[Check(name=name, status="skipped", message=f"no file was written: {reason}") for name in FILE_CHECKS],
        )

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            source.model_dir, signature_keys=[source.signature.key], tags=set(source.tags)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = converter.convert()
    except tf.errors.InvalidArgumentError as exc:
        # The converter reads through tf.saved_model.load, which cannot wrap some TF1 graphs a Session runs
        # (reference-typed VariableV2 weights): the model, not the converter, is what fails here.
        message = _first_line(exc.message)
        return failed(f"TensorFlow's SavedModel loader, which the TFLite converter reads through, refuses the model: "
                      f"{message}", message)
    except ConverterError as exc:
        for code, ops in unconvertible_ops(exc).items():
            details[OP_ERRORS[code][1]] = ops
        return failed(failure_reason(exc), converter_message(exc, ""))
    Path(source.output_dir).mkdir(parents=True, exist_ok=True)
    Path(output_path).write_bytes(flatbuffer)
    duration_s = time.monotonic() - started
    checks, file_details = verify_tflite_file(output_path, source.signature)
    fatal = [check.message for check in checks if check.status == "failed" and check.name in FATAL_CHECKS]
    return ConversionRecord(
        path=output_path, size_bytes=Path(output_path).stat().st_size, duration_s=duration_s, checks=checks,
        converter_message=converter_message(None, Path(source.log_path).read_text(errors="replace")),
        failure="; ".join(fatal) or None, details={**details, **file_details}, reproduce=reproduce,
    )


def _dtype_name(dtype) -> str:
    """A LiteRT tensor dtype as the signature names it: numpy's name, TFLite's strings (bytes) as string."""
    import numpy as np

    found = np.dtype(dtype)
    return "string" if found.kind in "SOU" else found.name


def verify_tflite_file(path: str, signature: SignatureSpec) -> tuple[list[Check], dict]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=path)
        interpreter.allocate_tensors()
        runner = interpreter.get_signature_runner(signature.key)
    except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError or RuntimeError with LiteRT's words
        reason = f"the LiteRT interpreter cannot load and allocate {path}: {_first_line(str(exc))}"
        return [Check(name="litert_interpreter_load", status="failed", message=reason), *(
            Check(name=name, status="skipped", message=reason) for name in FILE_CHECKS[1:])], {}
    ops = [op["op_name"] for op in interpreter._get_ops_details() if op["op_name"] != DELEGATE_NODE]  # noqa: SLF001
    details = {
        "ops": len(ops), "op_types": dict(sorted(Counter(ops).items())),
        # A Flex op would need a delegate this interpreter lacks; the builtin-only converter should write none.
        "flex_ops": sum(op.startswith("Flex") for op in ops),
    }
    checks = [
        Check(name="litert_interpreter_load", status="passed",
              message=f"the LiteRT interpreter loads the file and allocates its tensors ({len(ops)} ops)"),
        _io_check("litert_inputs", "input", signature.inputs, runner.get_input_details()),
        _io_check("litert_outputs", "output", signature.outputs, runner.get_output_details()),
    ]
    return checks, details


def _listed(dtypes: dict[str, str]) -> str:
    return ", ".join(f"{tensor} ({dtype})" for tensor, dtype in sorted(dtypes.items())) or "none"


def _io_check(name: str, kind: str, expected: dict, found: dict) -> Check:
    """The TFLite signature's inputs or outputs against the SavedModel signature's, by name and dtype."""
    expected_dtypes = {tensor: spec.dtype for tensor, spec in expected.items()}
    found_dtypes = {tensor: _dtype_name(detail["dtype"]) for tensor, detail in found.items()}
    if expected_dtypes == found_dtypes:
        return Check(name=name, status="passed",
                     message=f"{kind}s {_listed(expected_dtypes)} match the signature by name and dtype")
    return Check(name=name, status="failed", message=(
        f"the TFLite signature's {kind}s differ from the SavedModel signature's: expected {_listed(expected_dtypes)}, "
        f"found {_listed(found_dtypes)}"
    ))

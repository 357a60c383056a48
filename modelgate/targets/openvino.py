"""OpenVINO IR, converted by openvino.convert_model straight from the SavedModel directory.

OpenVINO's TensorFlow frontend reads saved_model.pb itself (TensorFlow runs no model code for it) and names the
IR's ports after the serving_default signature's keys. It reads only that signature, and the MetaGraph tagged
'serve': other signatures or tag sets of a model that has them are failures, not silently swapped. A
SavedModel without serving_default comes out with every signature's ports, so the chosen signature's inputs
and outputs are asked for by name. Weights stay float32: save_model compresses them to float16 unless told not to.

No remediation variants (no `variants`): the IR already keeps float32 weights (compress_to_fp16=False) and runs
at the f32 inference-precision hint, so no conversion setting raises its precision; a mismatch is an op's
conversion rule or the CPU plugin's kernel, which convert_model offers no setting to change. The report says
"no variants".
"""

from __future__ import annotations

import logging
import re
import shlex
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from modelgate.criteria import Criteria
from modelgate.description import SignatureSpec, TensorSpec
from modelgate.numerics.checks import signature_io_check
from modelgate.report import Check, ConversionRecord
from modelgate.runtimes import CPU
from modelgate.runtimes.openvino import import_openvino, load
from modelgate.targets import ConversionSource, Target

IO_CHECKS = ["openvino_compile", "openvino_inputs", "openvino_outputs"]
TARGET = Target(
    name="openvino", artifact_format="openvino", packages=("openvino",), module=__name__,
    description="OpenVINO IR (model.xml + model.bin, float32 weights) from openvino.convert_model on the SavedModel, "
    "run by OpenVINO's CPU plugin at f32 inference precision",
    # float32 defaults: on the test CNN OpenVINO's CPU kernels stay within a few float32 epsilons of TensorFlow.
    criteria=Criteria(), file_checks=tuple(IO_CHECKS),
)
IR_FILE = "model.xml"
FRONTEND_SIGNATURE = "serving_default"
FRONTEND_TAGS = ["serve"]
NO_RULE = re.compile(r"No conversion rule found for operations: (.+)")
FAILED_OPS = re.compile(r"Conversion is failed for: (.+)")
# OpenVINO's C++ checks open with where in its sources they failed; the reason is on a later line.
BOILERPLATE = re.compile(r"^(Check '.*' failed at |FrontEnd API failed with |Exception from src/)")
MESSAGE_LIMIT = 4000


def convert(source: ConversionSource) -> ConversionRecord:
    xml_path = Path(source.output_dir) / IR_FILE
    inputs, outputs = list(source.signature.inputs), list(source.signature.outputs)
    reproduce = reproduce_command(source.model_dir, inputs, outputs, str(xml_path))
    details: dict = {"compress_to_fp16": False, "signature": source.signature.key}
    unreadable = frontend_cannot_read(source)
    if unreadable:
        return ConversionRecord(path=None, failure=unreadable, details=details, reproduce=reproduce,
                                checks=skipped(unreadable))
    openvino = import_openvino()
    from openvino.frontend import GeneralFailure, InitializationFailure, NotImplementedFailure, OpConversionFailure
    from openvino.tools.ovc.error import Error as ConverterError

    started = time.monotonic()
    with converter_warnings() as said:
        try:
            model = openvino.convert_model(source.model_dir, input=inputs, output=outputs)
        except (OpConversionFailure, GeneralFailure, InitializationFailure, NotImplementedFailure,
                ConverterError) as exc:
            failure = conversion_failure(str(exc))
            return ConversionRecord(
                path=None, duration_s=time.monotonic() - started, failure=failure, details=details,
                converter_message="\n".join([*said, str(exc).strip()[:MESSAGE_LIMIT]]), reproduce=reproduce,
                checks=skipped(failure),
            )
    keep_signature_names(model, source.signature)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(model, str(xml_path), compress_to_fp16=False)
    duration = time.monotonic() - started
    opsets = Counter(op.get_type_info().version_id for op in model.get_ops())
    details.update(ops=sum(opsets.values()), opsets=dict(sorted(opsets.items())),
                   ir_version=int(ElementTree.parse(xml_path).getroot().get("version", 0)),
                   openvino_version=openvino.get_version())
    checks = verify_ir(str(xml_path), source.signature)
    fatal = [check.message for check in checks if check.status == "failed"]
    bin_path = xml_path.with_suffix(".bin")
    return ConversionRecord(
        path=str(xml_path), size_bytes=xml_path.stat().st_size + (bin_path.stat().st_size if bin_path.exists() else 0),
        duration_s=duration, checks=checks, converter_message="\n".join(said), failure="; ".join(fatal) or None,
        details=details, reproduce=reproduce,
    )


def frontend_cannot_read(source: ConversionSource) -> str | None:
    """Why convert_model would convert another signature or MetaGraph than the validation chose, if it would."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(source.model_dir) / "saved_model.pb").read_bytes())
    meta_graphs = list(saved_model.meta_graphs)
    if sorted(source.tags) != FRONTEND_TAGS and len(meta_graphs) > 1:
        return (f"OpenVINO's convert_model reads only the MetaGraph tagged {','.join(FRONTEND_TAGS)}; the validation "
                f"chose the one tagged {','.join(source.tags)}")
    chosen = next((m for m in meta_graphs if sorted(m.meta_info_def.tags) == sorted(source.tags)), meta_graphs[0])
    key = source.signature.key
    if key != FRONTEND_SIGNATURE and FRONTEND_SIGNATURE in chosen.signature_def:
        return (f"OpenVINO's TensorFlow frontend converts a SavedModel's {FRONTEND_SIGNATURE} signature only; the "
                f"validation chose {key}")
    return None


@contextmanager
def converter_warnings():
    """What the converter logs at WARNING and above (which signature it fell back to, and such)."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    handler = Keep(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield said
    finally:
        root.removeHandler(handler)


def conversion_failure(message: str) -> str:
    """The converter's refusal in one line: the ops it lacks by name, else its first line that says why."""
    no_rule = NO_RULE.search(message)
    failed = FAILED_OPS.search(message)
    if no_rule or failed:
        parts = ([f"no conversion rule for {no_rule.group(1).strip()}"] if no_rule else []) + (
            [f"its conversion failed for {failed.group(1).strip()}"] if failed else [])
        return f"OpenVINO cannot convert the model's ops: {'; '.join(parts)}"
    lines = [line.strip() for line in message.splitlines() if line.strip() and not BOILERPLATE.match(line.strip())]
    return f"OpenVINO cannot convert the model: {lines[0] if lines else message.strip() or 'no reason given'}"


def skipped(why: str) -> list[Check]:
    return [Check(name=name, status="skipped", message=f"no IR was written: {why}") for name in IO_CHECKS]


def keep_signature_names(model, signature: SignatureSpec) -> None:
    """Where one port carries several tensor names (the frontend gives a tensor that several signatures share
    every signature's name), it keeps the signature's only, which the runtime keys its inputs and outputs by."""
    for ports, names in ((model.inputs, signature.inputs), (model.outputs, signature.outputs)):
        for port in ports:
            wanted = set(port.get_names()) & set(names)
            if len(wanted) == 1 and len(port.get_names()) > 1:
                port.get_tensor().set_names(wanted)


def reproduce_command(model_dir: str, inputs: list[str], outputs: list[str], xml_path: str) -> str:
    script = "\n".join([
        "import sys",
        "sys.modules['openvino_telemetry'] = None  # no telemetry: OpenVINO falls back to its stub",
        "import openvino as ov",
        f"model = ov.convert_model({model_dir!r}, input={inputs!r}, output={outputs!r})",
        f"for ports, names in ((model.inputs, set({sorted(inputs)!r})), (model.outputs, set({sorted(outputs)!r}))):",
        "    for port in ports:",
        "        wanted = port.get_names() & names",
        "        if len(wanted) == 1 and len(port.get_names()) > 1:",
        "            port.get_tensor().set_names(wanted)",
        f"ov.save_model(model, {xml_path!r}, compress_to_fp16=False)",
    ])
    return shlex.join(["python", "-c", script])


def _spec(port) -> TensorSpec:
    shape = port.get_partial_shape()
    dims = None if shape.rank.is_dynamic else [dim.get_length() if dim.is_static else None for dim in shape]
    element_type = port.get_element_type()
    dtype = "string" if element_type.get_type_name() == "string" else element_type.to_dtype().name
    return TensorSpec(dtype=dtype, shape=dims)


def verify_ir(xml_path: str, signature: SignatureSpec) -> list[Check]:
    """The IR read back and compiled on CPU as the runtime compiles it, its ports against the signature."""
    try:
        runner = load(xml_path, CPU, 0, 0)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError or its own types from C++
        why = str(exc).strip().splitlines()
        failed = Check(name="openvino_compile", status="failed",
                       message=f"OpenVINO cannot compile the IR on CPU: {why[-1] if why else type(exc).__name__}")
        return [failed, *(Check(name=name, status="skipped", message="the IR does not compile")
                          for name in IO_CHECKS[1:])]
    compiled = runner.compiled
    return [
        Check(name="openvino_compile", status="passed",
              message=f"OpenVINO compiles the IR on {', '.join(runner.placement)}"),
        _io_check("openvino_inputs", "input", signature.inputs, compiled.inputs),
        _io_check("openvino_outputs", "output", signature.outputs, compiled.outputs),
    ]


def _io_check(name: str, kind: str, expected: dict[str, TensorSpec], ports) -> Check:
    problems = []
    found: dict[str, TensorSpec] = {}
    for port in ports:
        names = sorted(port.get_names())
        if len(names) != 1:
            problems.append(f"an IR {kind} carries the names {', '.join(names) or '(none)'}, not one signature name")
        for port_name in names:
            found[port_name] = _spec(port)
    return signature_io_check(name, kind, expected, found, "IR", problems)

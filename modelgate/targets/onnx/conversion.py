"""ONNX conversion with tf2onnx, judged by what the file does rather than by what tf2onnx says.

tf2onnx logs 'Unsupported ops' and still reports success, writing a file ONNX Runtime refuses
(INVALID_GRAPH). So a conversion only counts once tf2onnx converted every op, the ONNX checker passes and
ONNX Runtime loads the file; shape inference and the graph's inputs and outputs against the TensorFlow
signature are checked too, each as a named check.
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from modelgate.description import SignatureSpec, TensorSpec
from modelgate.numerics.checks import signature_io_check
from modelgate.report import Check, ConversionRecord

UNSUPPORTED_OPS = re.compile(r"Unsupported ops: Counter\((\{.*?\})\)")
CONVERTER_COMPLAINT = re.compile(r" - (?:ERROR|CRITICAL) - (.*)")
# TensorFlow's C++ errors (absl format): where tf2onnx only says "check error log", the reason is here.
TENSORFLOW_COMPLAINT = re.compile(r"^E\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] (.*)$", re.MULTILINE)
# A CPU build probing for CUDA, on every machine without a GPU: not about the conversion.
TENSORFLOW_NOISE = ("failed call to cuInit",)
FILE_CHECKS = ["onnx_checker", "onnx_shape_inference", "onnx_runtime_load", "onnx_inputs", "onnx_outputs"]
# Without these the file cannot stand in for the TensorFlow model at all; the others are reported as mismatches.
FATAL_CHECKS = ["onnx_ops_converted", "onnx_checker", "onnx_runtime_load"]


EXTERNAL_DATA_FILE = "model.onnx.data"
EXTERNAL_DATA_MIN_BYTES = 1024
# A single protobuf cannot pass 2 GiB. The ONNX file holds about the variables' bytes, plus constants tf2onnx
# folds, so models whose variables pass this margin get external data.
EXTERNAL_DATA_ABOVE_BYTES = int(1.5 * 2**30)
# tf2onnx's default path freezes the model into a new TF function and runs grappler on it: 25 copies of the
# weights at its peak (2.4 GB over the child's own 0.75 GB for 100 MiB; 1 GiB outgrew a 24 GB machine). Its
# large-model path does neither, and holds 4 copies with pure-Python protobuf, which shares a tensor's bytes
# where the C implementation (upb) copies them at every access (28 copies with upb). Small models keep the
# default path: grappler folds a few more nodes there, and lookup tables convert only there.
LARGE_MODEL_ABOVE_BYTES = 16 * 2**20
PURE_PYTHON_PROTOBUF = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


@dataclass(frozen=True)
class ConversionPlan:
    model_dir: str
    signature_key: str
    tags: list[str]
    opset: int
    output_path: str
    large_model: bool = False
    external_data: bool = False  # only with large_model: the default path writes one protobuf

    @property
    def tf2onnx_output(self) -> str:
        """tf2onnx's large-model mode writes a zip of the graph and one file per big tensor."""
        return f"{self.output_path}.zip" if self.large_model else self.output_path

    def argv(self) -> list[str]:
        return [
            "--saved-model", self.model_dir, "--signature_def", self.signature_key,
            "--tag", ",".join(self.tags), "--opset", str(self.opset), "--output", self.tf2onnx_output,
            *(["--large_model"] if self.large_model else []),
        ]

    def shell_command(self) -> str:
        if not self.large_model:
            return shlex.join(["python", "-m", "tf2onnx.convert", *self.argv()])
        convert = (
            "import runpy, sys, numpy; numpy.product = numpy.prod; "
            f"sys.argv = {['tf2onnx.convert', *self.argv()]!r}; runpy.run_module('tf2onnx.convert', run_name='__main__')"
        )
        unpack = (
            "from modelgate.targets.onnx.conversion import unpack_large_model; "
            f"unpack_large_model({self.tf2onnx_output!r}, {self.output_path!r}, external_data={self.external_data!r})"
        )
        layout = "model.onnx + model.onnx.data (standard ONNX external data)" if self.external_data else "one model.onnx"
        environment = " ".join(f"{name}={value}" for name, value in PURE_PYTHON_PROTOBUF.items())
        return "\n".join([
            "# tf2onnx 1.17's --large_model still calls numpy.product, which NumPy 2 removed: alias it back.",
            "# Pure-Python protobuf shares the weights' bytes instead of copying them at every access.",
            f"{environment} {shlex.join(['python', '-c', convert])}",
            f"# Unpack tf2onnx's zip into {layout}.",
            shlex.join(["python", "-c", unpack]),
        ])


def highest_runtime_opset(ceiling: int) -> int:
    """The highest opset up to ceiling whose models this ONNX Runtime loads: it exposes no such number itself."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "opset_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for opset in range(ceiling, 6, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        # The lowest IR version that carries this opset, so an older Runtime is not refused for the IR alone.
        model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - ONNX Runtime raises its own types for an unknown opset
            continue
        return opset
    return 7


def default_opset() -> int:
    """The highest opset tf2onnx, the installed onnx package and the installed ONNX Runtime all support."""
    import onnx
    from tf2onnx import constants

    return highest_runtime_opset(min(max(constants.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version()))


def variables_size(model_dir: str | Path) -> int:
    variables = Path(model_dir) / "variables"
    return sum(f.stat().st_size for f in variables.rglob("*") if f.is_file()) if variables.is_dir() else 0


def needs_external_data(model_dir: str | Path) -> bool:
    return variables_size(model_dir) > EXTERNAL_DATA_ABOVE_BYTES


def needs_large_model(model_dir: str | Path) -> bool:
    return variables_size(model_dir) > LARGE_MODEL_ABOVE_BYTES


def unsupported_ops(log_text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for match in UNSUPPORTED_OPS.finditer(log_text):
        for op, count in ast.literal_eval(match.group(1)).items():
            found[op] = found.get(op, 0) + int(count)
    return found


def tensorflow_complaints(log_text: str) -> list[str]:
    return [line for line in TENSORFLOW_COMPLAINT.findall(log_text)
            if not any(noise in line for noise in TENSORFLOW_NOISE)]


def converter_message(log_text: str) -> str:
    """tf2onnx's own complaints (its ERROR lines) and TensorFlow's, else tf2onnx's last word."""
    complaints = CONVERTER_COMPLAINT.findall(log_text) + tensorflow_complaints(log_text)
    if complaints:
        return "\n".join(complaints[-20:])
    lines = [line for line in log_text.splitlines() if " - INFO - " in line or " - WARNING - " in line]
    return lines[-1].split(" - ", 2)[-1] if lines else ""


def unpack_large_model(zip_path: str, output_path: str, external_data: bool) -> None:
    """tf2onnx's large-model zip as one model.onnx, or model.onnx plus one model.onnx.data: the layouts the
    checker, ONNX Runtime and MLflow expect. Tensors under EXTERNAL_DATA_MIN_BYTES stay inline: ONNX Runtime
    infers shapes at load from small constants (Slice starts, Reshape shapes) and refuses to read those from
    external data."""
    import onnx

    unpacked = Path(f"{output_path}.unpacked")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(unpacked)
    # Loading resolves tf2onnx's per-tensor files; with external data the proto is never serialised whole, so
    # 2 GiB is no limit.
    model = onnx.load(str(unpacked / "__MODEL_PROTO.onnx"))
    if external_data:
        onnx.save_model(
            model, output_path, save_as_external_data=True, all_tensors_to_one_file=True,
            location=EXTERNAL_DATA_FILE, size_threshold=EXTERNAL_DATA_MIN_BYTES,
        )
    else:
        onnx.save_model(model, output_path)
    for leftover in sorted(unpacked.rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    unpacked.rmdir()
    Path(zip_path).unlink()


def splice_constant_identities(graph_def, protected: set[str]) -> None:
    """Consumers of an Identity that only passes a constant on (a frozen variable read, an inlined function's
    input) read the constant itself, and the Identity goes. tf2onnx folds every such Identity by running it in
    TensorFlow and keeps each result until its consumers are converted: a copy of the weights per Identity,
    two per variable in a frozen TF2 function. TF's remove_training_nodes spares exactly these (they carry
    control edges); grappler removes them on tf2onnx's default path only. Outputs (`protected`) stay."""
    nodes = {node.name: node for node in graph_def.node}

    def constant_behind(node) -> str | None:
        while node is not None and node.op == "Identity" and len(node.input) == 1:
            name, _, port = node.input[0].partition(":")
            if name.startswith("^") or port not in ("", "0"):
                return None
            node = nodes.get(name)
        return node.name if node is not None and node.op == "Const" else None

    spliced = {node.name: constant_behind(node) for node in graph_def.node
               if node.op == "Identity" and node.name not in protected}
    spliced = {name: constant for name, constant in spliced.items() if constant}
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            control = name.startswith("^")
            source = name[1:] if control else name.partition(":")[0]
            if source in spliced:
                node.input[index] = f"^{spliced[source]}" if control else spliced[source]
    for index in reversed(range(len(graph_def.node))):
        if graph_def.node[index].name in spliced:
            del graph_def.node[index]


def _release_copies_after_freezing() -> None:
    """Once tf2onnx has frozen the weights into its graph, the loaded model goes, but its objects point at each
    other and nothing triggers the cyclic collector before the conversion's peak: collected at once, its
    variables' copy of the weights is gone before tf2onnx makes the next ones. Then the constant Identities
    are spliced out (splice_constant_identities). This child is single-use, so the patch dies with it."""
    import gc

    from tf2onnx import tf_loader

    freeze = tf_loader.from_saved_model

    def from_saved_model(*args, **kwargs):
        frozen = freeze(*args, **kwargs)
        gc.collect()
        graph_def, _, outputs = frozen[:3]
        splice_constant_identities(graph_def, {name.partition(":")[0] for name in outputs})
        return frozen

    tf_loader.from_saved_model = from_saved_model


def _collect_before_each_optimizer_copy() -> None:
    """tf2onnx's optimizer deep-copies the whole graph, weights included, before each of its ~20 passes and
    drops the old copy; graph and nodes point at each other, so only the cyclic collector frees it, and that
    counts objects, not bytes: a few large arrays never trigger it. Copies then pile up (6.7 GB for 100 MiB
    of weights, 3.1 GB with a collection before each copy). This child is single-use, so the patch dies
    with it.

    Each collection would walk every object the process holds, TensorFlow's, Keras's and a loaded model's
    among them: about 0.4 s each, 11 s of a tiny model's conversion in TensorFlow's child. So what exists before
    the conversion is frozen out of the collector's reach first (gc.freeze: the child closes after, nothing of it
    needs collecting), and each collection walks only what the conversion made."""
    import copy
    import gc
    import types

    import tf2onnx.optimizer

    gc.collect()
    gc.freeze()

    def deepcopy(value, memo=None):
        gc.collect()
        return copy.deepcopy(value, memo)

    tf2onnx.optimizer.copy = types.SimpleNamespace(deepcopy=deepcopy)


def _run_tf2onnx(plan: ConversionPlan) -> str | None:
    """tf2onnx's command-line entry point in this process; returns why it failed, if it did."""
    _collect_before_each_optimizer_copy()
    _release_copies_after_freezing()
    if plan.large_model:
        import numpy

        # tf2onnx 1.17's large-model path (graph.py, get_value_attr) calls numpy.product, removed in NumPy 2.
        # Converting normally and re-saving with external data is no way round it: past 2 GiB tf2onnx cannot
        # even freeze the graph without --large_model. So the alias comes back, in this child process only.
        numpy.product = numpy.prod
    sys.argv = ["tf2onnx.convert", *plan.argv()]
    try:
        runpy.run_module("tf2onnx.convert", run_name="__main__")
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return f"tf2onnx exited with code {exit_.code}"
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises whatever its handlers raise; keep the message
        return f"tf2onnx failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if not Path(plan.tf2onnx_output).is_file():
        return "tf2onnx wrote no ONNX file"
    if plan.large_model:
        unpack_large_model(plan.tf2onnx_output, plan.output_path, plan.external_data)
    return None


def convert_with_tf2onnx(plan: ConversionPlan, signature: SignatureSpec, log_path: str) -> ConversionRecord:
    """Runs in a single-use sandboxed child: tf2onnx changes TensorFlow's global state, and a crash must stay
    there. `log_path` holds the child's output, where tf2onnx says what it could not convert."""
    tf2onnx_failure = _run_tf2onnx(plan)
    log_text = Path(log_path).read_text(errors="replace")
    tensorflow_said = tensorflow_complaints(log_text)
    if tf2onnx_failure and "check error log" in tf2onnx_failure and tensorflow_said:
        # tf2onnx's own words only point at the log; TensorFlow's there are the reason.
        tf2onnx_failure = f"tf2onnx failed: TensorFlow could not import the model's graph: {tensorflow_said[-1]}"
    elif tf2onnx_failure and tensorflow_said:
        tf2onnx_failure = f"{tf2onnx_failure.rstrip('.')}; TensorFlow: {tensorflow_said[-1]}"
    ops = unsupported_ops(log_text)
    if ops:
        ops_check = Check(name="onnx_ops_converted", status="failed",
                          message=f"tf2onnx cannot convert {', '.join(f'{op} x{n}' for op, n in sorted(ops.items()))}")
    elif tf2onnx_failure:
        ops_check = Check(name="onnx_ops_converted", status="skipped", message=f"no op was converted: {tf2onnx_failure}")
    else:
        ops_check = Check(name="onnx_ops_converted", status="passed", message="tf2onnx converted every op")
    checks = [ops_check]
    if tf2onnx_failure:
        checks += [Check(name=name, status="skipped", message=tf2onnx_failure) for name in FILE_CHECKS]
    else:
        checks += verify_onnx_file(plan.output_path, signature)
    fatal = [check.message for check in checks if check.status == "failed" and check.name in FATAL_CHECKS]
    return ConversionRecord(
        path=plan.output_path if not tf2onnx_failure else None,
        converter_message=converter_message(log_text),
        checks=checks,
        failure="; ".join(([tf2onnx_failure] if tf2onnx_failure else []) + fatal) or None,
        details={"opset": plan.opset, "large_model": plan.large_model, "external_data": plan.external_data,
                 "unsupported_ops": ops},
        reproduce=plan.shell_command(),
    )


MESSAGE_LIMIT = 400


def _first_line(exc: BaseException) -> str:
    """ONNX Runtime's INVALID_GRAPH message lists every input of the node: keep the start, which says why."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= MESSAGE_LIMIT else f"{line[:MESSAGE_LIMIT]}…"


def verify_onnx_file(path: str, signature: SignatureSpec) -> list[Check]:
    import onnx
    import onnxruntime as ort

    checks = []
    try:
        # By path: a model with external data cannot be checked in memory past 2 GiB.
        onnx.checker.check_model(path, full_check=False)
        checks.append(Check(name="onnx_checker", status="passed", message="the ONNX checker accepts the model"))
    except Exception as exc:  # noqa: BLE001 - ValidationError, or a C++ error surfacing as another type
        checks.append(Check(name="onnx_checker", status="failed",
                            message=f"the ONNX checker rejects the model: {_first_line(exc)}"))
    inferred = Path(f"{path}.inferred")
    try:
        onnx.shape_inference.infer_shapes_path(path, str(inferred), strict_mode=True, data_prop=True)
        checks.append(Check(name="onnx_shape_inference", status="passed", message="strict shape inference passes"))
    except Exception as exc:  # noqa: BLE001 - InferenceError, or a checker error for an unknown op
        checks.append(Check(name="onnx_shape_inference", status="failed",
                            message=f"shape inference fails: {_first_line(exc)}"))
    finally:
        inferred.unlink(missing_ok=True)
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        checks.append(Check(name="onnx_runtime_load", status="passed", message="ONNX Runtime (CPU) loads the model"))
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types for invalid graphs
        checks.append(Check(name="onnx_runtime_load", status="failed",
                            message=f"ONNX Runtime cannot load the model: {_first_line(exc)}"))
    try:
        graph = onnx.load(path, load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - not even a readable ModelProto
        return checks + [Check(name=name, status="failed", message=f"the file is not a readable ONNX model: "
                               f"{_first_line(exc)}") for name in ("onnx_inputs", "onnx_outputs")]
    initializers = {init.name for init in graph.initializer}
    graph_inputs = {value.name: value for value in graph.input if value.name not in initializers}
    checks.append(signature_io_check(
        "onnx_inputs", "input", signature.inputs, {name: _onnx_spec(value) for name, value in graph_inputs.items()},
        "ONNX graph",
    ))
    checks.append(signature_io_check(
        "onnx_outputs", "output", signature.outputs, {value.name: _onnx_spec(value) for value in graph.output},
        "ONNX graph",
    ))
    return checks


def _onnx_spec(value) -> TensorSpec:
    """An ONNX graph input or output as a signature TensorSpec: numpy dtype name, None for dynamic dims."""
    from onnx import TensorProto, helper

    tensor_type = value.type.tensor_type
    if tensor_type.elem_type == TensorProto.STRING:
        dtype = "string"
    else:
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    if not tensor_type.HasField("shape"):
        return TensorSpec(dtype=dtype, shape=None)
    return TensorSpec(dtype=dtype, shape=[d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim])



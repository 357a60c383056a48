"""Static reading of a SavedModel: the protobuf only, no graph is run and no model code is loaded."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from modelgate.description import MetaGraphInfo, SignatureSpec, SparseTensorNames, TensorSpec
from modelgate.errors import ModelRejected, NotASavedModel, SignatureNotFound
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.model_source import SAVED_MODEL_FILES, holds_saved_model
from modelgate.model.op_allowlist import import_op_libraries, import_op_libraries_from_environment
from modelgate.model.op_scan import scan_meta_graph
from modelgate.numerics.precision import lowest_float_precision
from modelgate.report import Check

INIT_OP_KEY = "__saved_model_init_op"
PREDICT_METHOD = "tensorflow/serving/predict"
DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
# The SavedModel formats: a TF1 graph (no object graph), TF2, and tf_keras model.save.
TF1_GRAPH, TF2, KERAS2 = "tf1-graph", "tf2", "keras2"


def find_saved_model_file(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not path.exists():
        raise NotASavedModel(f"{path}: no such directory")
    if not path.is_dir():
        raise NotASavedModel(f"{path}: not a directory (a SavedModel is a directory holding saved_model.pb)")
    if holds_saved_model(path):
        return next(path / name for name in SAVED_MODEL_FILES if (path / name).is_file())
    present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise NotASavedModel(f"{path}: not a SavedModel (no saved_model.pb or saved_model.pbtxt; found {present})")


def read_saved_model_proto(model_dir: str | Path):
    import_tensorflow()
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto_file = find_saved_model_file(model_dir)
    proto = saved_model_pb2.SavedModel()
    try:
        if proto_file.suffix == ".pbtxt":
            text_format.Parse(proto_file.read_text(), proto)
        else:
            proto.ParseFromString(proto_file.read_bytes())
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as exc:
        raise NotASavedModel(f"{proto_file}: not a readable SavedModel protobuf ({exc})") from exc
    if not proto.meta_graphs:
        raise NotASavedModel(f"{proto_file}: the SavedModel holds no MetaGraph")
    return proto


def _dtype_names(enum_value: int) -> tuple[str, str | None]:
    """The dtype's name and, for a TF1 reference type (float32_ref), the declared name as well: its values
    are plain float32, which is what inputs, outputs and contracts deal in."""
    tf = import_tensorflow()
    try:
        dtype = tf.dtypes.as_dtype(enum_value)
    except TypeError:
        return f"unknown({enum_value})", None
    if dtype.base_dtype != dtype:
        return dtype.base_dtype.name, dtype.name
    return dtype.name, None


def _shape_list(shape) -> list[int | None] | None:
    return None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]


def _compatible(declared: list[int | None] | None, actual: list[int | None] | None) -> bool:
    if declared is None or actual is None:
        return True
    return len(declared) == len(actual) and all(d is None or a is None or d == a for d, a in zip(declared, actual))


def _graph_shapes(meta_graph) -> dict[str, list[int | None] | None]:
    """The shape of each tensor of a TF1 graph as the graph itself infers it (TF1's exporter writes every node's
    _output_shapes), by tensor name: a signature's TensorInfo may declare another, which TF1 never checks.
    TF2 signatures are traced from their functions, so they are left as declared."""
    shapes = {}
    if meta_graph.object_graph_def.nodes:
        return shapes
    for node in meta_graph.graph_def.node:
        if "_output_shapes" in node.attr:  # a membership test: indexing a protobuf map would add the key
            for index, shape in enumerate(node.attr["_output_shapes"].list.shape):
                shapes[f"{node.name}:{index}"] = _shape_list(shape)
    return shapes


def _tensor_spec(tensor_info, graph_shapes: dict[str, list[int | None] | None]) -> TensorSpec:
    dtype, declared = _dtype_names(tensor_info.dtype)
    shape = _shape_list(tensor_info.tensor_shape)
    if tensor_info.WhichOneof("encoding") == "coo_sparse":
        components = tensor_info.coo_sparse
        sparse = SparseTensorNames(indices=components.indices_tensor_name, values=components.values_tensor_name,
                                   dense_shape=components.dense_shape_tensor_name)
        return TensorSpec(dtype=dtype, declared_dtype=declared, shape=shape, sparse=sparse)
    graph_shape = graph_shapes.get(tensor_info.name)
    if not _compatible(shape, graph_shape):
        return TensorSpec(dtype=dtype, declared_dtype=declared, tensor_name=tensor_info.name, shape=graph_shape,
                          declared_shape=shape)
    return TensorSpec(dtype=dtype, declared_dtype=declared, tensor_name=tensor_info.name or None, shape=shape)


def describe_meta_graph(meta_graph, model_dir: str | Path, op_libraries: list[str] = ()) -> MetaGraphInfo:
    graph_shapes = _graph_shapes(meta_graph)
    signatures = {
        key: SignatureSpec(
            key=key,
            method_name=sig.method_name,
            inputs={name: _tensor_spec(info, graph_shapes) for name, info in sorted(sig.inputs.items())},
            outputs={name: _tensor_spec(info, graph_shapes) for name, info in sorted(sig.outputs.items())},
        )
        for key, sig in sorted(meta_graph.signature_def.items())
        if key != INIT_OP_KEY
    }
    nodes = [*meta_graph.graph_def.node,
             *(node for function in meta_graph.graph_def.library.function for node in function.node_def)]
    return MetaGraphInfo(
        tags=sorted(meta_graph.meta_info_def.tags), signatures=signatures, ops=sorted({node.op for node in nodes}),
        op_scan=scan_meta_graph(meta_graph, model_dir, op_libraries),
        float_precision=lowest_float_precision(meta_graph), functions=saved_functions(meta_graph),
        devices=sorted({node.device for node in nodes if node.device}),
    )


def saved_functions(meta_graph) -> list[str]:
    """The paths of the object graph's function nodes (predict, encoder.call, ...), from the root object."""
    nodes = meta_graph.object_graph_def.nodes
    if not nodes:
        return []
    found, seen, queue = [], {0}, [(0, "")]
    while queue:
        index, path = queue.pop(0)
        for child in nodes[index].children:
            if child.node_id in seen or child.local_name.startswith("_"):
                continue
            seen.add(child.node_id)
            child_path = f"{path}.{child.local_name}" if path else child.local_name
            if nodes[child.node_id].WhichOneof("kind") == "function":
                found.append(child_path)
            else:
                queue.append((child.node_id, child_path))
    return sorted(found)


def inspect_saved_model(model_dir: str | Path, op_libraries: list[str] = ()) -> list[MetaGraphInfo]:
    import_op_libraries(list(op_libraries))
    saved_model = read_saved_model_proto(model_dir)
    return [describe_meta_graph(meta_graph, model_dir, op_libraries) for meta_graph in saved_model.meta_graphs]


def model_format(model_dir: str | Path, saved_model) -> str:
    """What saved the SavedModel, which decides the runtimes that serve it (their RUNTIME.model_formats)."""
    if (Path(model_dir) / "keras_metadata.pb").is_file():
        return KERAS2
    if any(meta_graph.object_graph_def.nodes for meta_graph in saved_model.meta_graphs):
        return TF2
    return TF1_GRAPH


def reference_outputs(saved_model) -> list[str]:
    return sorted(
        {
            f"{key}/{name}"
            for meta_graph in saved_model.meta_graphs
            for key, signature in meta_graph.signature_def.items()
            for name, info in signature.outputs.items()
            if _dtype_names(info.dtype)[1]
        }
    )


def write_loadable_copy(model_dir: Path, saved_model, target: Path) -> Path:
    """A copy whose signatures read reference-typed outputs through an Identity.

    TF2's loader refuses a signature tensor of reference type (a TF1 variable, float32_ref) while TF1
    sessions and TF Serving read it as its value; the Identity is exactly that read. Everything but the
    protobuf is linked, not copied."""
    tf = import_tensorflow()
    for meta_graph in saved_model.meta_graphs:
        for signature in meta_graph.signature_def.values():
            for info in signature.outputs.values():
                if not _dtype_names(info.dtype)[1]:
                    continue
                read = meta_graph.graph_def.node.add()
                read.name = f"modelgate_read/{info.name.replace(':', '_')}"
                read.op = "Identity"
                read.input.append(info.name[:-2] if info.name.endswith(":0") else info.name)
                base = tf.dtypes.as_dtype(info.dtype).base_dtype.as_datatype_enum
                read.attr["T"].type = base
                info.name, info.dtype = f"{read.name}:0", base
    target.mkdir(parents=True, exist_ok=False)
    (target / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    for entry in model_dir.resolve().iterdir():
        if entry.name not in SAVED_MODEL_FILES:
            (target / entry.name).symlink_to(entry)
    return target


_TF_BOILERPLATE = re.compile(
    r"^(Graph execution error:|Detected at node|Node: '|<stack traces|File \"|\[\[|Encountered when|Op:__"
    r"|Exception encountered when calling)"  # Keras's header above the reason
)
_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_meaningful_line(message: str) -> str:
    """TensorFlow's error messages open with boilerplate and end with node listings; keep the line that says why.
    Keras colours that line for a terminal: a report gets it plain."""
    lines = [line.strip() for line in _TERMINAL_ESCAPES.sub("", message).splitlines()]
    useful = [line for line in lines if line and not _TF_BOILERPLATE.match(line)]
    if len(useful) > 1 and useful[0].endswith("Original error:"):
        # A restore that failed explains itself, then says why on the next line.
        return f"{useful[0]} {useful[1]}"
    return (useful or [message.strip() or "no message"])[0]


@contextlib.contextmanager
def rejected_unless_loaded(loader: str) -> Iterator[None]:
    """A load that fails rejects the model on model_loads, in one line that says why (it runs in a model
    stage's child process)."""
    tf = import_tensorflow()
    import_op_libraries_from_environment()
    try:
        yield
    except (tf.errors.OpError, ValueError, RuntimeError, OSError, KeyError) as exc:
        detail = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
        raise ModelRejected("model_loads", f"{loader} cannot load the SavedModel: {first_meaningful_line(detail)}") from exc


def load_saved_model(model_dir: str | Path, tags: list[str]):
    with rejected_unless_loaded("TensorFlow"):
        return import_tensorflow().saved_model.load(str(model_dir), tags=tags)


def nothing_to_serve(meta_graphs: list[MetaGraphInfo]) -> ModelRejected | None:
    """A SavedModel with no signature under any tag-set was judged: no server can call anything in it."""
    if any(mg.signatures for mg in meta_graphs):
        return None
    tag_sets = "; ".join(",".join(mg.tags) or "(no tags)" for mg in meta_graphs)
    functions = sorted({name for mg in meta_graphs for name in mg.functions})
    holds = (f"its only functions are tf.functions without a signature: {', '.join(functions)}" if functions
             else "it holds no saved functions either (a TF1 graph exported without a signature_def_map)")
    return ModelRejected("signature_selection", (
        f"nothing in the SavedModel can be served: no signature under any tag-set (tag-sets: {tag_sets}); {holds}; "
        "re-export it with signatures (tf.saved_model.save(..., signatures=...), or a TF1 signature_def_map)"
    ))


def choose_meta_graph(meta_graphs: list[MetaGraphInfo], tags: list[str] | None) -> MetaGraphInfo:
    if rejected := nothing_to_serve(meta_graphs):
        raise rejected
    available = "; ".join(",".join(mg.tags) or "(no tags)" for mg in meta_graphs)
    if tags:
        wanted = sorted(set(tags))
        for mg in meta_graphs:
            if mg.tags == wanted:
                return mg
        raise SignatureNotFound(f"no MetaGraph with tag-set {','.join(wanted)}; available tag-sets: {available}")
    if len(meta_graphs) == 1:
        return meta_graphs[0]
    serving = [mg for mg in meta_graphs if mg.tags == [SERVE_TAG]]
    if serving:
        return serving[0]
    raise SignatureNotFound(f"several MetaGraphs and none tagged only 'serve'; pick one with --tag: {available}")


def choose_signature(meta_graph: MetaGraphInfo, key: str | None) -> tuple[SignatureSpec, list[Check]]:
    """The asked key, else serving_default, else the single predict-style signature, with a warning."""
    candidates = meta_graph.signatures
    listing = ", ".join(sorted(candidates)) or "none"
    if key:
        if key not in candidates:
            raise SignatureNotFound(f"signature '{key}' not found; available signatures: {listing}")
        return candidates[key], [Check(name="signature_selection", status="passed", message=f"'{key}' as asked")]
    if DEFAULT_SIGNATURE in candidates:
        return candidates[DEFAULT_SIGNATURE], [
            Check(name="signature_selection", status="passed", message=f"'{DEFAULT_SIGNATURE}' found")
        ]
    predict_style = [k for k, sig in candidates.items() if sig.method_name in (PREDICT_METHOD, "")]
    if len(predict_style) == 1:
        chosen = predict_style[0]
        return candidates[chosen], [
            Check(
                name="signature_selection",
                status="warning",
                message=f"no '{DEFAULT_SIGNATURE}' signature; fell back to the only predict-style signature '{chosen}'",
            )
        ]
    if not candidates:
        raise SignatureNotFound(f"tag-set {','.join(meta_graph.tags) or '(no tags)'} has no signatures")
    raise SignatureNotFound(
        f"no '{DEFAULT_SIGNATURE}' signature and {len(predict_style) or 'no'} predict-style candidates; "
        f"pick one with --signature: {listing}"
    )

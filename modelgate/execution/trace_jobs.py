"""The first-divergence stage's jobs (tasks/localise_target.py): TensorFlow's intermediate tensors, in a child of
TensorFlow's kind, and the target's, in its runtime's pool, which holds both against each other
(modelgate.numerics.divergence) and sends back only the figures.

TensorFlow's trace runs the frozen graph a converter sees, so that the tensor names are the ones it keeps:
tf2onnx's own freezing (tf2onnx.tf_loader.from_saved_model: the signature's function with its variables made
constants, inlined and constant-folded by grappler) for ONNX files, whose tensors tf2onnx names after that
graph's; for the other formats the same graph without constant folding (LiteRT and OpenVINO read the
SavedModel's function, whose ops keep their own names, a batch norm unfolded, say). It takes the first rows of
the first comparison batch (TRACE_ROWS), fetches every float tensor of every op that depends on the inputs but
placeholders and identities (a graph output's identity is kept, under its signature name too; what only
constants feed, a batch norm's scale, is left to the converters' folding), and writes them to an .npz in the
target's folder until MAX_TRACE_BYTES; what it leaves out is said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelgate.criteria import Criteria
from modelgate.execution.quiet import import_tensorflow
from modelgate.execution.target_jobs import UNSAFE_FILE_CHARS
from modelgate.numerics.divergence import (
    Judge,
    NpzValues,
    ReferenceTensor,
    Trace,
    kept_within,
    localised_with_figures,
    save_values,
    tensor_name,
)
from modelgate.numerics.inputs import read_npz, save_npz
from modelgate.report import Localisation
from modelgate.runtimes import runtime

TRACE_ROWS = 4
MAX_TRACE_BYTES = 256 * 2**20  # per side: TensorFlow's stay on disk in the target's folder
FETCHED_TOGETHER = 256  # tensors per Session.run: the graph runs again for each group, memory stays bounded
SKIPPED_OPS = frozenset({"Const", "Placeholder", "PlaceholderWithDefault", "NoOp", "Identity", "IdentityN"})
TF2ONNX_GRAPH, INLINED_GRAPH = "tf2onnx", "inlined"


@dataclass
class ReferenceTrace:
    """What TensorFlow's trace job sends back: the tensors in graph order and where their values are."""

    tensors: list[ReferenceTensor]
    values_path: str
    keys: dict[str, str]
    inputs_path: str  # the rows both sides ran, as the signature names its inputs
    rows: int
    graph: str
    left_out: list[str] = field(default_factory=list)

    def trace(self) -> Trace:
        return Trace(tensors=self.tensors, values=NpzValues(self.values_path, self.keys), left_out=self.left_out)


def first_rows(feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    return {name: value[:rows] if np.ndim(value) else value for name, value in feeds.items()}


def _optimize(tf, graph_def, fetches: list[str], optimizers: list[str]):
    """Grappler on a frozen graph, as tf2onnx's tf_optimize_grappler runs it, with the optimizers given."""
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    config = config_pb2.ConfigProto()
    config.graph_options.infer_shapes = True
    config.graph_options.rewrite_options.optimizers[:] = optimizers
    meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def)
    collection = meta_graph_pb2.CollectionDef()
    collection.node_list.value.extend(fetches)
    meta_graph.collection_def["train_op"].CopyFrom(collection)
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def frozen_graph(model_dir: str, tags: list[str], key: str, graph: str):
    """The signature's frozen graph as tf2onnx builds it (graph "tf2onnx"), or without its constant folding
    ("inlined"): (graph_def, input tensor names, output tensor names, {graph tensor: signature name})."""
    from tf2onnx import tf_loader

    from modelgate.targets.onnx.conversion import needs_large_model

    tf = import_tensorflow()
    if graph == INLINED_GRAPH:
        original = tf_loader.tf_optimize_grappler
        tf_loader.tf_optimize_grappler = lambda inputs, outputs, graph_def: _optimize(
            tf, graph_def, inputs + outputs, ["function", "dependency"])
    try:
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            model_dir, None, None, tag=list(tags), signatures=[key], large_model=needs_large_model(model_dir),
            return_tensors_to_rename=True)
    finally:
        if graph == INLINED_GRAPH:
            tf_loader.tf_optimize_grappler = original
    return graph_def, list(inputs), list(outputs), dict(renames)


def graph_order(operations) -> list:
    """The operations in a topological order, the graph's own where it allows (an imported graph_def need not be)."""
    position = {op.name: index for index, op in enumerate(operations)}
    pending = {op.name: {i.op.name for i in op.inputs} | {c.name for c in op.control_inputs} for op in operations}
    consumers: dict[str, list] = {}
    for op in operations:
        for source in pending[op.name]:
            consumers.setdefault(source, []).append(op)
    import heapq

    ready = [(position[op.name], op.name) for op in operations if not pending[op.name]]
    heapq.heapify(ready)
    by_name = {op.name: op for op in operations}
    ordered = []
    while ready:
        _, name = heapq.heappop(ready)
        ordered.append(by_name[name])
        for consumer in consumers.get(name, []):
            pending[consumer.name].discard(name)
            if not pending[consumer.name]:
                heapq.heappush(ready, (position[consumer.name], consumer.name))
    return ordered


def _feeds_for(inputs: list[str], renames: dict[str, str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    fed = {}
    for name in inputs:
        signature_name = renames.get(name, name.split(":")[0])
        if signature_name not in feeds:
            raise ValueError(f"the frozen graph's input {name} is none of the signature's inputs "
                             f"({', '.join(sorted(feeds))}): its trace cannot be fed")
        fed[name] = feeds[signature_name]
    return fed


def tensorflow_trace_job(
    model_dir: str, tags: list[str], key: str, inputs_path: str, folder: str, graph: str,
    rows: int = TRACE_ROWS, max_bytes: int = MAX_TRACE_BYTES,
) -> ReferenceTrace:
    """Every float intermediate tensor of the signature's frozen graph (see the module's docstring) on the first
    rows of inputs_path, written to <folder>/tensorflow_trace.npz."""
    tf = import_tensorflow()
    graph_def, inputs, outputs, renames = frozen_graph(model_dir, tags, key, graph)
    feeds = first_rows(read_npz(inputs_path), rows)
    folder_path = Path(folder)
    folder_path.mkdir(parents=True, exist_ok=True)
    traced_inputs = save_npz(feeds, folder_path / "trace_inputs.npz")
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf.import_graph_def(graph_def, name="")
    output_names = set(outputs)
    fetched, tensors = [], []
    fed_ops = {name.split(":")[0] for name in inputs}
    live: set[str] = set()  # ops that depend on the graph's inputs: the others are constants (a batch norm's scale)
    for op in graph_order(tf_graph.get_operations()):
        if op.name in fed_ops or any(i.op.name in live for i in op.inputs):
            live.add(op.name)
        else:
            continue
        for output in op.outputs:
            if not output.dtype.is_floating:
                continue
            if op.type in SKIPPED_OPS and output.name not in output_names:
                continue
            aliases = (renames[output.name],) if output.name in renames else ()
            tensors.append(ReferenceTensor(output.name, op.type, tuple(tensor_name(i.name) for i in op.inputs),
                                           aliases))
            fetched.append(output)
    fed = _feeds_for(inputs, renames, feeds)
    values: list[tuple[str, np.ndarray]] = []
    with tf.compat.v1.Session(graph=tf_graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=True)) as session:
        for start in range(0, len(fetched), FETCHED_TOGETHER):
            group = fetched[start:start + FETCHED_TOGETHER]
            values.extend(zip((t.name for t in group), session.run(group, fed)))
            if sum(v.nbytes for _, v in values) > max_bytes:
                values.extend((t.name, np.zeros(0)) for t in fetched[start + FETCHED_TOGETHER:])
                break
    kept, left_out = kept_within(values, max_bytes)
    values_path = str(folder_path / "tensorflow_trace.npz")
    keys = save_values(kept, values_path)
    sizes = {np.shape(v)[0] for v in feeds.values() if np.ndim(v)}
    return ReferenceTrace(tensors=tensors, values_path=values_path, keys=keys, inputs_path=str(traced_inputs),
                          rows=min(sizes) if sizes else 1, graph=graph, left_out=left_out)


def target_trace_job(
    runtime_name: str, artifact: str, reference: ReferenceTrace, criteria: Criteria, precision: str, folder: str,
    label: str, max_bytes: int = MAX_TRACE_BYTES,
) -> Localisation:
    """The runtime's own intermediate tensors on the rows TensorFlow's trace ran, held against TensorFlow's
    (modelgate.numerics.divergence), with a plot of each matched tensor's error in graph order."""
    from modelgate.reporting.plots import divergence_plot

    tracer = getattr(runtime(runtime_name).implementation(), "trace", None)
    if tracer is None:
        return Localisation(runtime=runtime_name, verdict="unmatched", rows=reference.rows,
                            summary=f"{runtime_name} cannot read back its intermediate tensors: nothing to localise with")
    target = tracer(artifact, read_npz(reference.inputs_path), max_bytes)
    tensorflow = reference.trace()
    try:
        found, figures = localised_with_figures(tensorflow, target, criteria, runtime_name, precision,
                                                rows=reference.rows)
        found.plot = str(divergence_plot(
            found, figures, Path(folder) / f"divergence_{UNSAFE_FILE_CHARS.sub('_', label)}.png",
            f"{label}: each matched tensor against TensorFlow's, in graph order ({reference.rows} rows)",
            criteria_line(Judge.of(criteria, precision)),
        )) if found.matched else None
    finally:
        tensorflow.values.close()
    return found


def criteria_line(judge: Judge) -> tuple[float, str] | None:
    """The criteria's bound on a relative error, where they have one, for the plot (cosine has none)."""
    if judge.elementwise or (judge.min_cosine is None and judge.max_p99_rel is None):
        return (judge.rtol, f"rtol {judge.rtol:g} (plus atol {judge.atol:g} per element)") if judge.rtol > 0 else None
    if judge.min_cosine is None:
        return judge.max_p99_rel, f"p99 relative error bound {judge.max_p99_rel:g}"
    return None

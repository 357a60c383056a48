"""SavedModels an attacker would publish, built the way they would build them: each reaches outside its process
when loaded or served. UNSAFE_MODELS says what each does and what the op scan must name: the op and the rule.

The peer table (python -m benchmarks.security) runs every scanner on these same models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from modelgate.execution.quiet import import_tensorflow
from tests.benign_models import save_tf1, text_file_table

tf = import_tensorflow()
v1 = tf.compat.v1

ROW = tf.TensorSpec([None, 2], tf.float32, name="x")
# Where a model that got to run would write: a name no test creates otherwise, so its absence proves the point.
TRACE_DIR = Path("/tmp/modelgate-unsafe-model-trace")


def _save(module: tf.Module, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


def _module(call) -> tf.Module:
    module = tf.Module()
    module.__call__ = tf.function(call, input_signature=[ROW])
    return module


def _after(effect) -> Callable[[Path], Path]:
    """A builder of a model whose signature does effect(x) before it returns x."""
    def build(directory: Path) -> Path:
        def call(x):
            with tf.control_dependencies([effect(x)]):
                return {"y": tf.identity(x)}
        return _save(_module(call), directory)
    return build


def _leaking(output) -> Callable[[Path], Path]:
    """A builder of a model whose signature returns output(x) beside x."""
    return lambda directory: _save(_module(lambda x: {"y": x, "leak": output(x)}), directory)


def _after_writing(path: Path, value):
    with tf.control_dependencies([tf.io.write_file(str(path), "pwned")]):
        return tf.identity(value)


print_to_file = _after(lambda x: tf.print(x, output_stream=f"file://{TRACE_DIR}/printed.txt"))
save_in_signature = _after(lambda x: tf.raw_ops.SaveV2(
    prefix=str(TRACE_DIR / "stolen"), tensor_names=["x"], shape_and_slices=[""], tensors=[x]
))
writes_file = _after(lambda x: tf.io.write_file(str(TRACE_DIR / "written.txt"), "pwned"))
reads_file = _leaking(lambda x: tf.io.read_file("/etc/passwd"))
lists_files = _leaking(lambda x: tf.io.matching_files("/etc/*"))
python_function = _leaking(lambda x: tf.py_function(lambda t: t * 2, [x], tf.float32))
numpy_function = _leaking(lambda x: tf.numpy_function(lambda t: t * 2, [x], tf.float32))


def _total(dataset):
    return dataset.reduce(tf.constant(0, tf.int64), lambda total, element: total + tf.cast(element, tf.int64))


csv_dataset = _leaking(lambda x: _total(
    tf.data.experimental.CsvDataset("/etc/passwd", [tf.string], field_delim="\x01").map(tf.strings.length)
))
network_data_service = _leaking(lambda x: _total(tf.data.experimental.service.from_dataset_id(
    "parallel_epochs", "grpc://127.0.0.1:5050", dataset_id="0", element_spec=tf.TensorSpec([], tf.int64),
)))
write_in_dataset_map = _leaking(
    lambda x: _total(tf.data.Dataset.range(1).map(lambda i: _after_writing(TRACE_DIR / "mapped.txt", i)))
)


def dataset_from_graph(directory: Path) -> Path:
    """A serialized dataset GraphDef whose map function writes a file, run by DatasetFromGraph: no node of the
    model's own graph or function library names WriteFile."""
    hidden = tf.data.Dataset.range(1).map(lambda i: _after_writing(TRACE_DIR / "from_graph.txt", i))
    serialized = hidden._as_serialized_graph().numpy()
    return _leaking(lambda x: _total(tf.data.experimental.from_variant(
        tf.raw_ops.DatasetFromGraph(graph_def=tf.constant(serialized)), hidden.element_spec
    )))(directory)


def table_outside_assets(directory: Path) -> Path:
    """A TF1 lookup table filled from /etc/passwd at load: a TextFileInitializer whose path the builder was not
    told is an asset, so it stays the constant it was instead of a file of the model's own."""
    def build_graph():
        words = v1.placeholder(tf.string, [None], name="words")
        return {"words": words}, {"ids": text_file_table("/etc/passwd").lookup(words)}, v1.tables_initializer(), None

    return save_tf1(directory, build_graph)


def init_op_writes(directory: Path) -> Path:
    """A TF1 model whose main_op writes a file: it runs when the model loads, before any signature is called."""
    def build_graph():
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        return {"x": x}, {"y": tf.identity(x, name="y")}, tf.io.write_file(str(TRACE_DIR / "init.txt"), "pwned"), None

    return save_tf1(directory, build_graph)


class Attack(NamedTuple):
    build: Callable[[Path], Path]
    does: str
    op: str  # the op the scan must refuse
    rule: str  # words of the rule it must give


UNSAFE_MODELS = {
    "print_to_file": Attack(print_to_file, "tf.print to file:///tmp/... (PrintV2)", "PrintV2",
                            "may print only to stdout, stderr or the log"),
    "save_in_signature": Attack(save_in_signature, "tf.raw_ops.SaveV2 to /tmp/... in the signature", "SaveV2",
                                "checkpoint writes"),
    "csv_dataset": Attack(csv_dataset, "tf.data.experimental.CsvDataset('/etc/passwd')", "CSVDatasetV2",
                          "takes a file, path or address"),
    "dataset_from_graph": Attack(dataset_from_graph, "WriteFile inside a serialized GraphDef run by DatasetFromGraph",
                                 "DatasetFromGraph", "serialized graph"),
    "table_outside_assets": Attack(table_outside_assets, "TF1 lookup table filled from /etc/passwd at load (not an asset)",
                                   "InitializeTableFromTextFileV2", "'/etc/passwd'"),
    "reads_file": Attack(reads_file, "tf.io.read_file('/etc/passwd')", "ReadFile", "takes a file, path or address"),
    "writes_file": Attack(writes_file, "tf.io.write_file to /tmp/...", "WriteFile", "takes a file, path or address"),
    "lists_files": Attack(lists_files, "tf.io.matching_files('/etc/*')", "MatchingFiles", "lists files"),
    "python_function": Attack(python_function, "tf.py_function (a Python call)", "EagerPyFunc", "runs Python code"),
    "numpy_function": Attack(numpy_function, "tf.numpy_function (a Python call)", "PyFunc", "runs Python code"),
    "network_data_service": Attack(network_data_service, "tf.data service over grpc://127.0.0.1 (network)",
                                   "DataServiceDatasetV4", "takes a file, path or address"),
    "write_in_dataset_map": Attack(write_in_dataset_map, "WriteFile in a dataset map function", "WriteFile",
                                   "takes a file, path or address"),
    "init_op_writes": Attack(init_op_writes, "TF1 main_op writing a file at load", "WriteFile",
                             "takes a file, path or address"),
}

"""What a SavedModel's graph says about the values its signature inputs may take, read from the MetaGraph
protobuf alone (no graph runs): the rows of the tables an integer input indexes, the vocabulary of the
model's string lookup tables, and the tf.Example spec a serialized input is parsed with.

The walk follows each input forward through ops that pass its values on unchanged, into the functions
that TF2 exports call (StatefulPartitionedCall's `f`, and back out through their returns), and resolves
a table backward to the variable or constant that holds it, through reads and the callers' arguments.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from modelgate.description import ExampleFeature, InputFacts, MetaGraphInfo
from modelgate.execution.quiet import import_tensorflow

VOCABULARY_SAMPLE = 32
_VOCABULARY_MAX_BYTES = 1 << 20

CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
# Ops whose output holds (a selection of) the values of the listed inputs: an index stays an index.
PASS_THROUGH = {
    "Identity": (0,), "IdentityN": None, "Snapshot": (0,), "StopGradient": (0,), "Cast": (0,), "Reshape": (0,),
    "ExpandDims": (0,), "Squeeze": (0,), "Transpose": (0,), "StridedSlice": (0,), "Slice": (0,), "Tile": (0,),
    "BroadcastTo": (0,), "Reverse": (0,), "ReverseV2": (0,), "ConcatV2": None, "Pack": None, "Unpack": (0,),
    "SelectV2": (1, 2), "Select": (1, 2),  # Keras' take(): where(ids < 0, ids + rows, ids)
}
GATHERS = {"GatherV2": (0, 1), "Gather": (0, 1), "ResourceGather": (0, 1)}  # op: (table input, indices input)
EXAMPLE_PARSERS = frozenset({"ParseExample", "ParseExampleV2", "ParseSingleExample"})
# Reads that lead from a table's tensor back to the variable or constant holding it.
READS = frozenset({"Identity", "ReadVariableOp", "Snapshot", "StopGradient"})
TABLE_INITS = {"LookupTableImportV2": 1, "LookupTableImport": 1, "InitializeTableV2": 1, "InitializeTable": 1}
TEXT_FILE_INITS = frozenset({"InitializeTableFromTextFileV2", "InitializeTableFromTextFile"})
_WHOLE_LINE, _LINE_NUMBER = -2, -1  # TextFileInitializer's key_index for keys that are not a column

MAIN = ""  # the scope of the graph itself; functions are scoped by their name


class _Tensor(NamedTuple):
    stack: tuple[tuple[str, str], ...]  # (caller scope, call node) of each function entered
    scope: str
    node: str  # a node, or an argument of the scope's function
    output: int


def _is_control(ref: str) -> bool:
    return ref.startswith("^")


class GraphIndex:
    """The graph and its function library, indexed for walking across function boundaries."""

    def __init__(self, graph_def):
        self.functions = {function.signature.name: function for function in graph_def.library.function}
        self.nodes = {MAIN: {node.name: node for node in graph_def.node}}
        self.nodes.update({name: {n.name: n for n in f.node_def} for name, f in self.functions.items()})
        self.consumers: dict[tuple[str, str], list[tuple[object, int, int]]] = defaultdict(list)
        self.callers: dict[str, list[tuple[str, object]]] = defaultdict(list)
        self.returned: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for scope, nodes in self.nodes.items():
            for node in nodes.values():
                data_inputs = [ref for ref in node.input if not _is_control(ref)]
                for position, ref in enumerate(data_inputs):
                    source, output = self.split(scope, ref)
                    self.consumers[(scope, source)].append((node, position, output))
                if self.callee(node):
                    self.callers[self.callee(node)].append((scope, node))
        for name, function in self.functions.items():
            for index, arg in enumerate(function.signature.output_arg):
                node, output = self.split(name, function.ret[arg.name])
                self.returned[(name, node)].append((index, output))

    def split(self, scope: str, ref: str) -> tuple[str, int]:
        """A tensor reference as (node or argument, output index). In function bodies outputs are written
        node:output_arg:index; the index counts within that output argument, which for calls is all of them."""
        parts = ref.split(":")
        if scope == MAIN:
            return parts[0], int(parts[1]) if len(parts) > 1 else 0
        return parts[0], int(parts[-1]) if len(parts) == 3 else 0

    def callee(self, node) -> str | None:
        if node.op in CALL_OPS:
            return node.attr["f"].func.name
        return node.op if node.op in self.functions else None

    def node(self, scope: str, name: str):
        return self.nodes[scope].get(name)

    def data_input(self, scope: str, node, position: int) -> str:
        """The reference at that data input; "" (no tensor) for a node that has fewer."""
        refs = [ref for ref in node.input if not _is_control(ref)]
        return refs[position] if position < len(refs) else ""

    def same_value(self, tensor: _Tensor, output: int) -> bool:
        """Whether output `output` of the tensor's node holds its values: a call's other outputs are other
        values; any output of a pass-through op (Unpack, IdentityN) holds some of them."""
        node = self.node(tensor.scope, tensor.node)
        return node is None or not self.callee(node) or output == tensor.output

    def forward(self, start: _Tensor) -> Iterator[tuple[_Tensor, object, int]]:
        """Every (tensor, consumer, input position) the start's values reach unchanged."""
        seen, frontier = set(), [start]
        while frontier:
            tensor = frontier.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            frontier.extend(self._returns(tensor))
            for consumer, position, output in self.consumers.get((tensor.scope, tensor.node), []):
                if not self.same_value(tensor, output):
                    continue
                yield tensor, consumer, position
                callee = self.callee(consumer)
                if callee:
                    args = self.functions[callee].signature.input_arg
                    if position < len(args):
                        frame = (tensor.scope, consumer.name)
                        frontier.append(_Tensor((*tensor.stack, frame), callee, args[position].name, 0))
                elif consumer.op in PASS_THROUGH and position in (PASS_THROUGH[consumer.op] or (position,)):
                    frontier.append(_Tensor(tensor.stack, tensor.scope, consumer.name, 0))

    def _returns(self, tensor: _Tensor) -> list[_Tensor]:
        """A function's returned value continues at its call's output, in the caller that entered it."""
        if not tensor.stack:
            return []
        (caller_scope, call_node), outer = tensor.stack[-1], tensor.stack[:-1]
        return [
            _Tensor(outer, caller_scope, call_node, index)
            for index, output in self.returned.get((tensor.scope, tensor.node), [])
            if self.same_value(tensor, output)
        ]

    def sources(self, stack: tuple, scope: str, ref: str) -> list[tuple[str, object]]:
        """The nodes a tensor is read from, backward through reads, arguments and calls: (scope, node).
        An argument of a function entered from nowhere known resolves through every caller."""
        name, output = self.split(scope, ref)
        node = self.node(scope, name)
        if node is None:  # an argument of the function `scope`, or nothing the graph defines
            args = [arg.name for arg in self.functions[scope].signature.input_arg] if scope != MAIN else []
            if name not in args:
                return []
            index = args.index(name)
            if stack:
                (caller_scope, call_name), outer = stack[-1], stack[:-1]
                call = self.node(caller_scope, call_name)
                return self.sources(outer, caller_scope, self.data_input(caller_scope, call, index))
            return [
                found
                for caller_scope, call in self.callers.get(scope, [])
                for found in self.sources((), caller_scope, self.data_input(caller_scope, call, index))
            ]
        callee = self.callee(node)
        if callee:
            outputs = self.functions[callee].signature.output_arg
            if output >= len(outputs):
                return []
            returned = self.functions[callee].ret[outputs[output].name]
            return self.sources((*stack, (scope, node.name)), callee, returned)
        if node.op in READS:
            return self.sources(stack, scope, self.data_input(scope, node, 0))
        return [(scope, node)]

    def constant(self, stack: tuple, scope: str, ref: str):
        """The value of a tensor that resolves to one Const, else None."""
        tf = import_tensorflow()
        found = self.sources(stack, scope, ref)
        if len(found) == 1 and found[0][1].op == "Const":
            return tf.make_ndarray(found[0][1].attr["value"].tensor)
        return None


def _first_dimension(node, axis: int) -> int | None:
    if node.op == "Const":
        shape = node.attr["value"].tensor.tensor_shape
    elif "shape" in node.attr:
        shape = node.attr["shape"].shape
    else:
        return None
    if shape.unknown_rank or len(shape.dim) <= axis or shape.dim[axis].size < 0:
        return None
    return shape.dim[axis].size


def _gathered_tables(index: GraphIndex, tensor: _Tensor, gather) -> list[tuple[str, int]]:
    """The tables a gather reads (one, unless the function has several callers) with their rows along the
    gathered axis; none where the graph does not tell them all."""
    table_position, _ = GATHERS[gather.op]
    axis = 0
    if gather.op == "GatherV2":
        axis_value = index.constant(tensor.stack, tensor.scope, index.data_input(tensor.scope, gather, 2))
        if axis_value is None or axis_value.ndim or int(axis_value) < 0 or gather.attr["batch_dims"].i:
            return []
        axis = int(axis_value)
    tables = index.sources(tensor.stack, tensor.scope, index.data_input(tensor.scope, gather, table_position))
    rows = [(node.name, _first_dimension(node, axis)) for _, node in tables]
    return rows if rows and all(size for _, size in rows) else []


def _strings(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.ravel().tolist()]


def _dtype_name(enum_value: int) -> str:
    return import_tensorflow().dtypes.as_dtype(enum_value).name


def _shape(proto) -> list[int]:
    return [d.size for d in proto.dim]


def _features(kind: str, keys: list[str], types, shapes=None) -> list[ExampleFeature]:
    return [
        ExampleFeature(key=key, kind=kind, dtype=_dtype_name(dtype), shape=_shape(shapes[i]) if shapes else [])
        for i, (key, dtype) in enumerate(zip(keys, types))
    ]


def _example_spec(index: GraphIndex, tensor: _Tensor, parser) -> list[ExampleFeature] | None:
    """The features a ParseExample(V2)/ParseSingleExample node reads; None where its keys are not constants."""
    attr = parser.attr
    if parser.op == "ParseSingleExample":
        sparse = [k.decode() for k in attr["sparse_keys"].list.s]
        dense = [k.decode() for k in attr["dense_keys"].list.s]
        ragged = []
    else:
        def keys(position: int, count: int | None = None) -> list[str] | None:
            if count is None:  # V2: one vector of keys
                value = index.constant(tensor.stack, tensor.scope, index.data_input(tensor.scope, parser, position))
                return None if value is None else _strings(value)
            values = [index.constant(tensor.stack, tensor.scope, index.data_input(tensor.scope, parser, position + i))
                      for i in range(count)]
            return None if any(v is None for v in values) else [s for v in values for s in _strings(v)]

        if parser.op == "ParseExampleV2":
            sparse, dense, ragged = keys(2), keys(3), keys(4)
        else:
            sparse, dense, ragged = keys(2, attr["Nsparse"].i), keys(2 + attr["Nsparse"].i, attr["Ndense"].i), []
        if sparse is None or dense is None or ragged is None:
            return None
    return [
        *_features("dense", dense, attr["Tdense"].list.type, attr["dense_shapes"].list.shape),
        *_features("sparse", sparse, attr["sparse_types"].list.type),
        *_features("ragged", ragged, attr["ragged_value_types"].list.type if "ragged_value_types" in attr else []),
    ]


def _asset_files(meta_graph, model_dir: Path) -> dict[str, Path]:
    """The asset map: the graph node holding each asset's path, and the file under assets/. TF2 keeps the
    path in a variable the loader assigns from that node, so the variable holds it too."""
    files = {
        asset.tensor_info.name.split(":")[0]: model_dir / "assets" / asset.filename
        for asset in meta_graph.asset_file_def
    }
    for node in meta_graph.graph_def.node:
        if node.op == "AssignVariableOp" and node.input[1].split(":")[0] in files:
            files[node.input[0].split(":")[0]] = files[node.input[1].split(":")[0]]
    return files


def _vocabulary_file_lines(path: Path, key_index: int, delimiter: str) -> list[str]:
    try:
        with path.open("rb") as handle:
            text = handle.read(_VOCABULARY_MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return []  # not a text vocabulary: nothing to learn from it
    lines = text.splitlines()[:-1] if len(text) == _VOCABULARY_MAX_BYTES else text.splitlines()
    if key_index == _WHOLE_LINE:
        return lines
    return [line.split(delimiter)[key_index] for line in lines if len(line.split(delimiter)) > key_index]


def vocabulary(index: GraphIndex, meta_graph, model_dir: Path) -> list[str]:
    """String keys of the model's lookup tables: constants the tables are filled with, and the lines of the
    asset files their text-file initializers read. An evenly spread sample, so special tokens at the start
    of a vocabulary file do not fill it."""
    assets = _asset_files(meta_graph, model_dir)
    words: list[str] = []
    for scope, nodes in index.nodes.items():
        for node in nodes.values():
            if node.op in TABLE_INITS:
                keys = index.constant((), scope, index.data_input(scope, node, TABLE_INITS[node.op]))
                if keys is not None and keys.dtype == object:
                    words += _strings(keys)
            elif node.op in TEXT_FILE_INITS and node.attr["key_index"].i != _LINE_NUMBER:
                delimiter = node.attr["delimiter"].s.decode() or "\t"
                for _, source in index.sources((), scope, index.data_input(scope, node, 1)):
                    if source.name in assets:
                        words += _vocabulary_file_lines(assets[source.name], node.attr["key_index"].i, delimiter)
    distinct = list(dict.fromkeys(word for word in words if word.strip()))
    step = max(1, len(distinct) // VOCABULARY_SAMPLE)
    return distinct[::step][:VOCABULARY_SAMPLE]


def input_facts(index: GraphIndex, tensor_name: str, dtype: str, words: list[str]) -> InputFacts | None:
    name, output = index.split(MAIN, tensor_name)
    start = _Tensor((), MAIN, name, output)
    tables: list[tuple[str, int]] = []
    for tensor, consumer, position in index.forward(start):
        if consumer.op in GATHERS and position == GATHERS[consumer.op][1]:
            tables += _gathered_tables(index, tensor, consumer)
        elif dtype == "string" and consumer.op in EXAMPLE_PARSERS and position == 0:
            spec = _example_spec(index, tensor, consumer)
            if spec is not None:
                return InputFacts(example_features=spec, parsed_by=consumer.op, vocabulary=words)
    if dtype == "string":
        return InputFacts(vocabulary=words) if words else None
    if not tables:
        return None
    rows = min(size for _, size in tables)
    described = ", ".join(f"'{t}' ({n} rows)" for t, n in sorted(set(tables)))
    return InputFacts(value_range=[0, rows - 1], range_detail=f"indexes {described}")


def with_input_facts(info: MetaGraphInfo, meta_graph, model_dir: str | Path) -> MetaGraphInfo:
    """The MetaGraph's description with what its graph says about each signature input's values."""
    index = GraphIndex(meta_graph.graph_def)
    words = vocabulary(index, meta_graph, Path(model_dir))
    for signature in info.signatures.values():
        found = {
            name: input_facts(index, spec.tensor_name, spec.dtype, words)
            for name, spec in signature.inputs.items()
            if spec.tensor_name
        }
        signature.input_facts = {name: facts for name, facts in found.items() if facts is not None}
    return info

"""The op scan: a default-deny reading of what loading and serving a SavedModel can execute, from its protobuf
alone (no graph runs, nothing of the model is imported).

Entry points: each signature (the graph nodes its output tensors depend on), the init ops (TF2's
`__saved_model_init_op`, TF1's main_op, legacy_init_op and table initializers), the loader's restore
(saver_def) and the functions the TF2 object graph hands to a Python caller of the loaded model (resource
creators, initializers and destroyers among them). From there the walk follows every function a node names,
by op type or through a func or list(func) attribute: calls, While/If/Case bodies and branches, dataset
functions. Every op it reaches must be a computation op or one of the reviewed stateful ops
(modelgate.model.op_allowlist), and the one-form ops must be in their one form.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelgate.description import OpFinding, OpScan, ReachableCode
from modelgate.errors import MissingOps, UnsafeModel
from modelgate.model.op_allowlist import (
    CHECKPOINT_RESTORES,
    CHECKPOINT_WRITES,
    REVIEWED_STATEFUL_OPS,
    SERIALIZED_PROGRAM_OPS,
    TABLE_FILE_INITIALIZERS,
    lookup_op_def,
    package_registering,
    why_not_computation,
)

INIT_OP_SIGNATURE = "__saved_model_init_op"
INIT_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "table_initializer")
ASSETS_COLLECTION = "saved_model_assets"
INIT, RESTORE, LOADED_OBJECT = "init", "restore", "loaded object"
PRINT_STREAMS = frozenset({"stdout", "stderr", "log(info)", "log(warning)", "log(error)"})
# Where a called function's arguments start among the calling node's inputs (If and Case take the branch
# selector first). Other callers (While loops, datasets) pass values the scan does not follow.
ARGUMENT_OFFSET = {"PartitionedCall": 0, "StatefulPartitionedCall": 0, "If": 1, "StatelessIf": 1, "Case": 1,
                   "StatelessCase": 1}
PASS_THROUGH = frozenset({"Identity", "Snapshot"})
API_IMPLEMENTS = "api_implements"
SHOWN_FINDINGS = 3
ONE_FORM_OPS = frozenset({"PrintV2", *CHECKPOINT_RESTORES, *CHECKPOINT_WRITES, *SERIALIZED_PROGRAM_OPS, *TABLE_FILE_INITIALIZERS})


@dataclass(frozen=True)
class _Source:
    """Where a string tensor (a file name, a checkpoint prefix) comes from."""

    kind: str  # "asset", "saver" or "other"
    description: str


@dataclass
class _Scope:
    """The graph itself (name None) or one library function, as the tracer reads it."""

    name: str | None
    nodes: dict
    arguments: dict[str, int]


def _node_name(ref: str) -> str:
    return ref.partition(":")[0].removeprefix("^")


def _data_inputs(node) -> list[str]:
    return [ref for ref in node.input if not ref.startswith("^")]


def _data_input(node, index: int) -> str | None:
    """The node's index-th data input; None where a malformed graph has no such input."""
    inputs = _data_inputs(node)
    return inputs[index] if index < len(inputs) else None


def _tensor(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _tensor_names(tensor_info) -> list[str]:
    """A signature tensor's graph tensors: one, or the components of a sparse or composite tensor."""
    encoding = tensor_info.WhichOneof("encoding")
    if encoding == "coo_sparse":
        sparse = tensor_info.coo_sparse
        return [sparse.values_tensor_name, sparse.indices_tensor_name, sparse.dense_shape_tensor_name]
    if encoding == "composite_tensor":
        return [name for component in tensor_info.composite_tensor.components for name in _tensor_names(component)]
    return [tensor_info.name] if tensor_info.name else []


def _string_constant(node) -> str:
    values = node.attr["value"].tensor.string_val
    return repr(values[0].decode(errors="replace")) if values else "a constant"


class _Walk:
    """One pass over the protobuf gathers, per graph node and per function, the op types and the functions
    called; the walks from each entry point then run on those plain sets. Nodes are read again only where an
    op type needs judging node by node."""

    def __init__(self, meta_graph, model_dir: Path, op_libraries: list[str]):
        self.meta_graph = meta_graph
        self.op_libraries = op_libraries
        self.function_defs = {function.signature.name: function for function in meta_graph.graph_def.library.function}
        self._op_defs: dict[str, object] = {}
        self._function_attributes: dict[str, tuple[str, ...] | None] = {}
        self.graph_nodes = {node.name: node for node in meta_graph.graph_def.node}
        self._graph_calls: dict[str, list[str]] = {}
        self.function_ops: dict[str, set[str]] = {}
        self.function_calls: dict[str, list[tuple[object, list[str]]]] = {}
        for name, function in self.function_defs.items():
            ops, calls = set(), []
            for node in function.node_def:
                op = node.op
                ops.add(op)
                if self._may_call(op) and (callees := self._called_by(node)):
                    calls.append((node, callees))
            self.function_ops[name], self.function_calls[name] = ops, calls
        # Grappler may swap a call for any function implementing the same API (Keras 2 RNNs: the cuDNN kernel
        # on a GPU for the generic one), so reaching one reaches them all.
        self.implementations: dict[str | None, list[str]] = defaultdict(list)
        for name in self.function_defs:
            if (api := self._api_implemented(name)) is not None:
                self.implementations[api].append(name)
        self.assets = self._assets(model_dir)
        self.saver_filename = _tensor(meta_graph.saver_def.filename_tensor_name)
        self.graph_roots: dict[str, set[str]] = defaultdict(set)
        self.function_roots: dict[str, set[str]] = defaultdict(set)
        self._scopes: dict[str | None, _Scope] = {}
        self._call_sites: dict[str, list[tuple[str | None, object]]] | None = None
        self._variable_writes: dict[str, list] | None = None

    # --- what each op is, and what calls what ---

    def op_def(self, op: str):
        if op not in self._op_defs:
            self._op_defs[op] = None if op in self.function_defs else lookup_op_def(op, self.op_libraries)
        return self._op_defs[op]

    def _function_attributes_of(self, op: str) -> tuple[str, ...] | None:
        """The op type's func and list(func) attributes; None for an op nobody registered, which may name
        functions in any attribute."""
        if op not in self._function_attributes:
            op_def = self.op_def(op)
            self._function_attributes[op] = None if op_def is None else tuple(
                attr.name for attr in op_def.attr if attr.type in ("func", "list(func)")
            )
        return self._function_attributes[op]

    def _may_call(self, op: str) -> bool:
        return op in self.function_defs or self._function_attributes_of(op) != ()

    def _called_by(self, node) -> list[str]:
        """Functions the node runs: its op type names one, or a func or list(func) attribute does."""
        op = node.op
        attributes = self._function_attributes_of(op)
        names = [op] if op in self.function_defs else []
        for name in node.attr if attributes is None else attributes:
            if name in node.attr:
                value = node.attr[name]
                if value.HasField("func"):
                    names.append(value.func.name)
                names += [func.name for func in value.list.func]
        return [name for name in names if name in self.function_defs]

    def _assets(self, model_dir: Path) -> dict[str, _Source]:
        """Each asset tensor of the asset map, as the source it is: the loader feeds it the path of a file in
        the model's assets folder, unless the name it holds leads outside that folder."""
        assets_dir = (model_dir / "assets").resolve()
        sources = {}
        for asset in self.asset_map():
            if (assets_dir / asset.filename).resolve().is_relative_to(assets_dir):
                source = _Source("asset", f"the asset {asset.filename}")
            else:
                source = _Source("other", f"the asset {asset.filename!r}, which resolves outside the model's assets folder")
            sources[_tensor(asset.tensor_info.name)] = source
        return sources

    def asset_map(self) -> list:
        """The AssetFileDefs, where TF2 writes them and where TF1's builder does (a collection of Anys)."""
        from tensorflow.core.protobuf import meta_graph_pb2

        assets = list(self.meta_graph.asset_file_def)
        if ASSETS_COLLECTION in self.meta_graph.collection_def:
            for packed in self.meta_graph.collection_def[ASSETS_COLLECTION].any_list.value:
                asset = meta_graph_pb2.AssetFileDef()
                if packed.Unpack(asset):
                    assets.append(asset)
        return assets

    def scope(self, name: str | None) -> _Scope:
        if name not in self._scopes:
            if name is None:
                self._scopes[name] = _Scope(None, self.graph_nodes, {})
            else:
                function = self.function_defs[name]
                self._scopes[name] = _Scope(
                    name, {node.name: node for node in function.node_def},
                    {arg.name: index for index, arg in enumerate(function.signature.input_arg)},
                )
        return self._scopes[name]

    def graph_callees(self, name: str) -> list[str]:
        if name not in self._graph_calls:
            node = self.graph_nodes[name]
            self._graph_calls[name] = self._called_by(node) if self._may_call(node.op) else []
        return self._graph_calls[name]

    def call_sites(self, function: str) -> list[tuple[str | None, object]]:
        """Every node that calls the function, reached or not, with the scope it is in."""
        if self._call_sites is None:
            self._call_sites = defaultdict(list)
            graph_calls = [(node, callees) for name, node in self.graph_nodes.items() if (callees := self.graph_callees(name))]
            for caller, calls in [(None, graph_calls), *self.function_calls.items()]:
                for node, callees in calls:
                    for callee in callees:
                        self._call_sites[callee].append((caller, node))
        return self._call_sites.get(function, [])

    # --- the walk ---

    def entry_points(self) -> dict[str, tuple[list[str], list[str]]]:
        """Each entry point: the graph nodes it fetches and the functions it calls directly."""
        entries: dict[str, tuple[list[str], list[str]]] = {}
        for key, signature in sorted(self.meta_graph.signature_def.items()):
            if key != INIT_OP_SIGNATURE:
                outputs = [name for info in signature.outputs.values() for name in _tensor_names(info)]
                entries[f"signature {key}"] = ([_node_name(name) for name in outputs], [])
        init_nodes = [
            _node_name(name)
            for info in self.meta_graph.signature_def[INIT_OP_SIGNATURE].outputs.values()
            for name in _tensor_names(info)
        ] if INIT_OP_SIGNATURE in self.meta_graph.signature_def else []
        for key in INIT_COLLECTIONS:
            if key in self.meta_graph.collection_def:
                init_nodes += [_node_name(name) for name in self.meta_graph.collection_def[key].node_list.value]
        entries[INIT] = (init_nodes, [])
        restore_node = self.meta_graph.saver_def.restore_op_name
        entries[RESTORE] = ([_node_name(restore_node)] if restore_node else [], self._object_graph_restores())
        entries[LOADED_OBJECT] = ([], self._object_graph_functions())
        return {name: entry for name, entry in entries.items() if entry[0] or entry[1]}

    def _object_graph_functions(self) -> list[str]:
        names = []
        for node in self.meta_graph.object_graph_def.nodes:
            kind = node.WhichOneof("kind")
            if kind == "function":
                names += node.function.concrete_functions
            elif kind == "bare_concrete_function":
                names.append(node.bare_concrete_function.concrete_function_name)
        return [name for name in names if name in self.function_defs]

    def _object_graph_restores(self) -> list[str]:
        nodes = self.meta_graph.object_graph_def.nodes
        names = []
        for node in nodes:
            for saveable in node.saveable_objects.values():
                restore = nodes[saveable.restore_function] if saveable.restore_function < len(nodes) else None
                if restore is not None and restore.WhichOneof("kind") == "function":
                    names += restore.function.concrete_functions
        return [name for name in names if name in self.function_defs]

    def walk(self) -> dict[str, ReachableCode]:
        reachable = {}
        for root, (nodes, functions) in self.entry_points().items():
            graph_nodes = self._graph_closure(nodes)
            seeds = [*functions, *(callee for name in graph_nodes for callee in self.graph_callees(name))]
            called = self._function_closure(seeds)
            for name in graph_nodes:
                self.graph_roots[name].add(root)
            for name in called:
                self.function_roots[name].add(root)
            ops = {self.graph_nodes[name].op for name in graph_nodes}.union(*(self.function_ops[name] for name in called))
            reachable[root] = ReachableCode(functions=sorted(called), ops=sorted(ops))
        return reachable

    def _graph_closure(self, names: list[str]) -> set[str]:
        seen, pending = set(), list(names)
        while pending:
            name = pending.pop()
            if name not in seen and name in self.graph_nodes:
                seen.add(name)
                pending += [_node_name(ref) for ref in self.graph_nodes[name].input]
        return seen

    def _function_closure(self, names: list[str]) -> set[str]:
        seen, pending = set(), list(names)
        while pending:
            name = pending.pop()
            if name not in seen:
                seen.add(name)
                pending += [callee for _, callees in self.function_calls[name] for callee in callees]
                pending += self.implementations.get(self._api_implemented(name), [])
        return seen

    def _api_implemented(self, function: str) -> str | None:
        attributes = self.function_defs[function].attr
        return attributes[API_IMPLEMENTS].s.decode() if API_IMPLEMENTS in attributes else None

    def locations(self, judged: Callable[[str], bool]):
        """Every node whose op type `judged` picks, with the entry points that reach it (none for
        unreachable code): its scope, the node, and those entry points."""
        for name, node in self.graph_nodes.items():
            if judged(node.op):
                yield self.scope(None), node, self.graph_roots.get(name, set())
        for name, ops in self.function_ops.items():
            if any(judged(op) for op in ops):
                scope = self.scope(name)
                for node in scope.nodes.values():
                    if judged(node.op):
                        yield scope, node, self.function_roots.get(name, set())

    # --- the rules ---

    def rule_broken(self, scope: _Scope, node, roots: set[str], op_def) -> str | None:
        op = node.op
        if op in SERIALIZED_PROGRAM_OPS:
            return "runs a serialized graph or program, which no scan of the model's own graph can see into"
        if op == "PrintV2":
            stream = node.attr["output_stream"].s.decode(errors="replace") if "output_stream" in node.attr else "stderr"
            if stream not in PRINT_STREAMS:
                return f"PrintV2 may print only to stdout, stderr or the log; this one writes to {stream!r}"
        if op in CHECKPOINT_WRITES:
            return "checkpoint writes belong to the saver's save path, which loading and serving never run"
        if op in CHECKPOINT_RESTORES:
            if others := sorted(roots - {RESTORE}):
                return f"checkpoint restores may run only on the loader's restore path, not from {', '.join(others)}"
            return self._unless_from(scope, node, 0, "saver", "restores from {}, not the model's own variables prefix")
        if op in TABLE_FILE_INITIALIZERS:
            return self._unless_from(scope, node, 1, "asset", "fills a table from {}, not a file the SavedModel's asset map names")
        if op in REVIEWED_STATEFUL_OPS:
            return None
        reason = why_not_computation(op_def)
        return f"outside the allowlist: {reason}" if reason else None

    def _unless_from(self, scope: _Scope, node, index: int, kind: str, message: str) -> str | None:
        sources = self._trace(scope, _data_input(node, index), set())
        if not sources:
            return message.format("nowhere the scan can follow")
        wrong = sorted({source.description for source in sources if source.kind != kind})
        return message.format(", ".join(wrong)) if wrong else None

    def _trace(self, scope: _Scope, ref: str | None, seen: set) -> list[_Source]:
        """The sources a string tensor can hold: followed through identities, variables the graph assigns,
        and function arguments to every caller (graph nodes and the object graph's captures)."""
        if ref is None:
            return [_Source("other", "an input the node does not have")]
        if (scope.name, ref) in seen:
            return []
        seen.add((scope.name, ref))
        if scope.name is not None and ref in scope.arguments:
            return self._trace_argument(scope, scope.arguments[ref], seen)
        node = scope.nodes.get(_node_name(ref))
        if node is None:
            return [_Source("other", f"the unknown tensor {ref}")]
        if scope.name is None:
            tensor = _tensor(ref)
            if tensor == self.saver_filename:
                return [_Source("saver", "the saver's filename")]
            if tensor in self.assets:
                return [self.assets[tensor]]
        if node.op in PASS_THROUGH:
            return self._trace(scope, _data_input(node, 0), seen)
        writes = self._writes_to(_data_input(node, 0)) if node.op == "ReadVariableOp" and scope.name is None else []
        if writes:
            return [source for write in writes for source in self._trace(scope, _data_input(write, 1), seen)]
        if node.op == "Const":
            return [_Source("other", f"the constant {_string_constant(node)}")]
        return [_Source("other", f"the output of {node.op} node {node.name}")]

    def _writes_to(self, handle: str | None) -> list:
        """The graph's assignments to the variable behind a handle."""
        if handle is None:
            return []
        if self._variable_writes is None:
            self._variable_writes = defaultdict(list)
            for node in self.graph_nodes.values():
                if node.op == "AssignVariableOp" and (handle := _data_input(node, 0)):
                    self._variable_writes[_node_name(handle)].append(node)
        return self._variable_writes.get(_node_name(handle), [])

    def _trace_argument(self, scope: _Scope, index: int, seen: set) -> list[_Source]:
        sources = []
        for caller, call in self.call_sites(scope.name):
            offset = 0 if call.op == scope.name else ARGUMENT_OFFSET.get(call.op)
            if offset is None:
                sources.append(_Source("other", f"an argument {call.op} node {call.name} passes"))
            else:
                sources += self._trace(self.scope(caller), _data_input(call, offset + index), seen)
        sources += self._captured(scope, index)
        return sources or [_Source("other", f"an argument of {scope.name} that nothing passes")]

    def _captured(self, scope: _Scope, index: int) -> list[_Source]:
        """A TF2 function's last arguments are its captures: the object graph says what the Python loader
        binds to them."""
        if scope.name not in self.meta_graph.object_graph_def.concrete_functions:
            return []
        bound = self.meta_graph.object_graph_def.concrete_functions[scope.name].bound_inputs
        position = index - (len(scope.arguments) - len(bound))
        if position < 0:
            return []
        nodes, assets = self.meta_graph.object_graph_def.nodes, self.meta_graph.asset_file_def
        captured = nodes[bound[position]] if bound[position] < len(nodes) else None
        if captured is None:
            return [_Source("other", "a capture the object graph does not hold")]
        if captured.WhichOneof("kind") == "asset" and captured.asset.asset_file_def_index < len(assets):
            return [self.assets[_tensor(assets[captured.asset.asset_file_def_index].tensor_info.name)]]
        return [_Source("other", f"a captured {captured.WhichOneof('kind')}")]


def _order(roots: set[str]) -> list[str]:
    return sorted(roots, key=lambda root: (not root.startswith("signature"), root)) or ["no entry point"]


def scan_meta_graph(meta_graph, model_dir: str | Path, op_libraries: list[str] = ()) -> OpScan:
    """Walk everything loading and serving can execute and judge every op on it."""
    walk = _Walk(meta_graph, Path(model_dir), list(op_libraries))
    scan = OpScan(reachable=walk.walk())
    allowed_as_a_type: dict[str, bool] = {}

    def judged(op: str) -> bool:
        """Whether the op type needs a look at each node: unknown ops, refused ops and one-form ops do."""
        if op not in allowed_as_a_type:
            op_def = walk.op_def(op)
            allowed_as_a_type[op] = op in walk.function_defs or (
                op_def is not None and op not in ONE_FORM_OPS
                and (op in REVIEWED_STATEFUL_OPS or why_not_computation(op_def) is None)
            )
        return not allowed_as_a_type[op]

    for scope, node, roots in walk.locations(judged):
        finding = OpFinding(op=node.op, node=node.name, function=scope.name, reached_from=_order(roots))
        op_def = walk.op_def(node.op)
        if op_def is None:
            scan.unregistered.append(finding)
        elif roots and (rule := walk.rule_broken(scope, node, roots, op_def)):
            scan.refused.append(finding.model_copy(update={"rule": rule}))
    return scan


def _listing(findings: list[OpFinding]) -> str:
    shown = "; ".join(finding.describe() for finding in findings[:SHOWN_FINDINGS])
    return shown + (f"; and {len(findings) - SHOWN_FINDINGS} more" if len(findings) > SHOWN_FINDINGS else "")


def refuse_unsafe_ops(scan: OpScan, allowed: list[str]) -> list[OpFinding]:
    """Stop before any model code runs: a refused op fails the model (op_safety); an op nobody registered
    leaves it unjudged. Returns the refusals the request allowed."""
    refused = [finding for finding in scan.refused if finding.op not in allowed]
    if refused:
        raise UnsafeModel(
            f"refusing to load: {_listing(refused)}; allow an op with --allow-op OP only if this model is trusted"
        )
    if scan.unregistered:
        first_of_each = {finding.op: finding for finding in reversed(scan.unregistered)}
        ops = sorted(first_of_each)
        packages = sorted({package for op in ops if (package := package_registering(op))})
        hint = (
            f"{', '.join(packages)} would register them: pass --op-library {' --op-library '.join(packages)}"
            if packages else "if a custom op library registers them, pass its Python package with --op-library MODULE"
        )
        raise MissingOps(
            f"cannot judge: ops not registered in this TensorFlow (custom ops): {', '.join(ops)}; "
            f"{_listing([first_of_each[op] for op in ops])}; {hint} (request field op_libraries)"
        )
    return [finding for finding in scan.refused if finding.op in allowed]

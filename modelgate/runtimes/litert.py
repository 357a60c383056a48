"""LiteRT (TFLite): the .tflite file on CPU, through ai-edge-litert's interpreter, without TensorFlow."""

from __future__ import annotations

import numpy as np

from modelgate.runtimes import CPU, Runner, Runtime, Signature

RUNTIME = Runtime(name="litert", artifact_format="tflite", devices=(CPU,), packages=("ai_edge_litert",), module=__name__)
# The node LiteRT puts in place of each partition a delegate (XNNPACK, applied by default on CPU) takes.
DELEGATE_NODE = "DELEGATE"


def warm_up() -> None:
    import ai_edge_litert.interpreter  # noqa: F401


def delegated_and_builtin(interpreter) -> tuple[int, list[str]]:
    """How many delegate partitions run, and which ops run on LiteRT's own builtin kernels instead.

    LiteRT keeps the delegated nodes in its node list beside the delegate node that replaces them and exposes
    no execution plan, so the plan is read back: from the graph's outputs to what produces them, a delegate
    node winning over the nodes it took (it produces the same tensors)."""
    nodes = interpreter._get_ops_details()  # noqa: SLF001 - the only view of the nodes ai-edge-litert gives
    delegates = {t: n for n in nodes if n["op_name"] == DELEGATE_NODE for t in n["outputs"]}
    builtins = {t: n for n in nodes if n["op_name"] != DELEGATE_NODE for t in n["outputs"]}
    needed = [d["index"] for d in interpreter.get_output_details()]
    seen: set[int] = set()
    used_delegates: set[int] = set()
    builtin_ops: dict[int, str] = {}
    while needed:
        tensor = needed.pop()
        node = delegates.get(tensor) or builtins.get(tensor)
        if tensor in seen or node is None:  # node None: a graph input or a constant
            continue
        seen.add(tensor)
        if node["op_name"] == DELEGATE_NODE:
            used_delegates.add(node["index"])
        else:
            builtin_ops[node["index"]] = node["op_name"]
        needed.extend(int(t) for t in node["inputs"] if t >= 0)
    return len(used_delegates), sorted(builtin_ops.values())


def placement(partitions: int, builtin_ops: list[str]) -> list[str]:
    where = [f"CPU (XNNPACK, {partitions} partition{'' if partitions == 1 else 's'})"] if partitions else []
    if builtin_ops:
        where.append(f"CPU (LiteRT builtin kernels: {', '.join(sorted(set(builtin_ops)))})")
    return where


class LiteRtRunner(Runner):
    name = RUNTIME.name

    def __init__(self, tflite_path: str, num_threads: int | None = None):
        super().__init__()
        self.tflite_path, self.num_threads = tflite_path, num_threads

    def activate_impl(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=self.tflite_path, num_threads=self.num_threads)
        self.interpreter.allocate_tensors()  # applies the default XNNPACK delegate, which placement reports
        # A converted SavedModel signature is the file's only one; the runner keys inputs and outputs by its
        # names, which TFLite keeps even where it renames and reorders the tensors themselves.
        self.signature = self.interpreter.get_signature_runner()
        self.placement = placement(*delegated_and_builtin(self.interpreter))

    def deactivate_impl(self) -> None:
        self.interpreter = self.signature = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The signature runner resizes each input to the batch at hand before it invokes. np.ascontiguousarray
        # would make a scalar a vector of one: asarray keeps its rank.
        return self.signature(**{name: np.asarray(value, order="C") for name, value in feeds.items()})


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
         signature: Signature | None = None) -> LiteRtRunner:
    """The converted file holds one signature: `signature` is not needed."""
    # LiteRT runs one op at a time: it has no inter-op threads to set.
    return LiteRtRunner(artifact, intra_op_threads if intra_op_threads > 0 else None).activate()


def trace(artifact: str, feeds: dict[str, np.ndarray], max_bytes: int):
    """Every float tensor an op of the file computes, kept by the interpreter (experimental_preserve_all_tensors),
    in the file's op order. LiteRT names a tensor after the TensorFlow ops fused into it, joined by ";": each is
    a candidate name. Read with LiteRT's builtin kernels, without the XNNPACK delegate, whose partitions need not
    write the tensors inside them back (the comparison's outputs ran through it)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from modelgate.numerics.divergence import TargetTensor, Trace, kept_within, split_candidates

    interpreter = Interpreter(model_path=artifact, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    signature = interpreter.get_signature_runner()
    signature(**{name: np.asarray(value, order="C") for name, value in feeds.items()})
    # A signature's output tensor is named after the function call (StatefulPartitionedCall:0): its key names it.
    output_keys = {detail["index"]: key for key, detail in signature.get_output_details().items()}
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    names: dict[int, str] = {}
    seen: set[str] = set()
    for index, detail in details.items():  # names are not unique in a .tflite file: a second one gets its index
        name = detail["name"] or f"tensor_{index}"
        names[index] = name if name not in seen else f"{name}#{index}"
        seen.add(name)
    tensors, values = [], []
    nodes = interpreter._get_ops_details()  # noqa: SLF001 - the only view of the nodes ai-edge-litert gives
    for node in sorted(nodes, key=lambda n: n["index"]):
        for index in (int(i) for i in node["outputs"] if i >= 0):
            if np.dtype(details[index]["dtype"]).kind != "f":
                continue
            name = names[index]
            tensors.append(TargetTensor(name, name, node["op_name"],
                                        tuple(names[int(i)] for i in node["inputs"] if i >= 0 and int(i) in names),
                                        (*split_candidates(details[index]["name"]),
                                         *([output_keys[index]] if index in output_keys else []))))
            values.append((name, np.array(interpreter.get_tensor(index))))
    kept, left_out = kept_within(values, max_bytes)
    return Trace(tensors=tensors, values=kept, left_out=left_out)

"""Default tolerances that follow the precision a graph computes in.

A model under Keras' mixed_float16 policy computes in float16: its outputs agree with another runtime's to
about float16's resolution (a few 1e-4 relative), not float32's, so float32 tolerances would reject a faithful
conversion. The lowest float precision any op of the graph computes in picks the defaults; tolerances the
request sets explicitly always win.
"""

from __future__ import annotations

from modelgate.criteria import Tolerance

# DataType enum values of tensorflow/core/framework/types.proto, so the static reading needs no TF import.
REDUCED_PRECISIONS = {19: "float16", 14: "bfloat16"}
# About ten machine epsilons of each precision; float32's are the long-standing defaults.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-3), "float16": (1e-2, 1e-2), "bfloat16": (1e-1, 1e-1),
}


def _dtypes(node) -> set[int]:
    found = set()
    for value in node.attr.values():
        if value.HasField("type"):
            found.add(value.type)
        if value.HasField("list"):
            found.update(value.list.type)
    return found


def lowest_float_precision(meta_graph) -> str:
    """float16 or bfloat16 when any op of the graph or its functions computes in it, else float32."""
    nodes = [*meta_graph.graph_def.node, *(n for f in meta_graph.graph_def.library.function for n in f.node_def)]
    found = set().union(*(_dtypes(node) for node in nodes)) if nodes else set()
    reduced = [name for enum, name in REDUCED_PRECISIONS.items() if enum in found]
    # bfloat16 keeps fewer mantissa bits than float16: it sets the looser defaults when both occur.
    return "bfloat16" if "bfloat16" in reduced else reduced[0] if reduced else "float32"


def with_default(setting: Tolerance, default: float) -> Tolerance:
    """A request's tolerance with the precision's default for every output it does not name."""
    if isinstance(setting, dict):
        return {"": default, **setting}
    return setting


def effective_tolerances(atol: Tolerance, rtol: Tolerance, precision: str) -> tuple[Tolerance, Tolerance, str]:
    """The tolerances to judge with, and a note saying where their defaults came from."""
    default_atol, default_rtol = DEFAULT_TOLERANCES[precision]
    explicit = [name for name, value in (("atol", atol), ("rtol", rtol)) if not isinstance(value, dict) or "" in value]
    note = f"the graph computes in {precision} at its lowest: default atol {default_atol:g}, rtol {default_rtol:g}"
    if explicit:
        note += f"; {' and '.join(explicit)} as the request sets"
    return with_default(atol, default_atol), with_default(rtol, default_rtol), note

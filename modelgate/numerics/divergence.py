"""First divergence: where a converted model's error starts, read from intermediate tensors on both sides.

TensorFlow's trace holds the float tensors of the frozen graph the converters see, in graph order, each with
the op that computes it and the tensors it reads; the target's trace holds its own tensors, each with the node
that computes it, the tensors it reads and the TensorFlow names it may stand for (a converter keeps them in
its own way: tf2onnx names most tensors after TensorFlow's, LiteRT joins the names of the ops it fused with
";", OpenVINO keeps friendly names). Names are matched after normalisation (`normalised`); a target tensor
matching none is listed, never guessed at.

Each matched pair is judged by the target's criteria, as an output would be, and the verdict reads the figures
in graph order (`localise`):

- localised: the first tensor that fails while the tensors it reads pass, its relative error at least
  JUMP times the worst of theirs (above RELATIVE_FLOOR): that op is where it goes wrong;
- spread: the first failing tensor is only a small step over what it reads: the error accumulates, no
  single op is first; the largest step is named;
- nonfinite: an op made NaN or infinity from finite inputs, in the target where TensorFlow's is finite, or
  in TensorFlow itself where the divergence is NaN or infinity too, or no divergence is found (an infinity
  TensorFlow makes on purpose, a mask's, leaves a finite divergence its verdict);
- agrees: every matched tensor is within the criteria;
- unmatched: too few tensors matched to say.

Pure numpy: both traces are read by the runtime's child, which sends back only the Localisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from modelgate.criteria import Criteria, Tolerance
from modelgate.numerics.precision import DEFAULT_TOLERANCES
from modelgate.report import Localisation, NonFiniteOrigin, TensorDivergence

# A first failing tensor whose relative error is at least this many times its inputs' worst is where it starts.
JUMP = 10.0
# Inputs more exact than this (graph inputs are exact: both sides are fed the same values) count as this: a
# float32 error near its machine epsilon is no signal, and an exact zero would make any error a jump.
RELATIVE_FLOOR = 1e-6
# Fewer matched tensors than this share of the target's (and at least one) is too few to say: a converter fuses
# ops, so the target has fewer tensors than TensorFlow's graph, never more names of it.
MIN_MATCHED_SHARE = 0.1
REL_EPSILON = 1e-12  # as modelgate.numerics.compare: a zero in the reference cannot blow up a relative error
FLOAT16_MAX = 65504.0  # a reference value past it overflows any float16 tensor: said where the first op holds one
LISTED = 50  # unmatched and left-out names kept in the report
DOWNSTREAM_KEPT = 40  # tensors of the downstream path kept: evenly spaced, the last (the output's) always

_PREFIX = re.compile(r"^(?:StatefulPartitionedCall(?:_\d+)?/|PartitionedCall(?:_\d+)?/)+")


@dataclass(frozen=True)
class ReferenceTensor:
    """One float tensor of TensorFlow's frozen graph, in graph order."""

    name: str  # op:output, as TensorFlow names it
    op_type: str
    inputs: tuple[str, ...] = ()  # the tensors its op reads (constants and graph inputs included or not)
    aliases: tuple[str, ...] = ()  # other names a converter gives it (a graph output: the signature's key)


@dataclass(frozen=True)
class TargetTensor:
    """One tensor of the converted model, in its execution order."""

    name: str
    node: str  # the node that computes it (what a block or exclusion list names)
    op_type: str
    inputs: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()  # TensorFlow names it may stand for (normalised before matching)


@dataclass
class Trace:
    """Tensors in order and their values (a mapping such as an open .npz: read one at a time)."""

    tensors: list
    values: Mapping[str, np.ndarray]
    left_out: list[str] = field(default_factory=list)  # tensors not read back (a byte cap), said so
    note: str = ""  # what the runtime says of its names, where too few match (why they do not)


def normalised(name: str) -> str:
    """TensorFlow's name of a tensor as every side can spell it: the function-call scopes of an inlined
    SavedModel function dropped ("StatefulPartitionedCall/model/dense/MatMul:0" -> "model/dense/MatMul"),
    the ":0" of an op's first output dropped (other outputs keep ":1", ":2")."""
    name = _PREFIX.sub("", name.strip())
    return name[:-2] if name.endswith(":0") else name


def split_candidates(name: str) -> tuple[str, ...]:
    """The TensorFlow names a LiteRT tensor stands for: it joins the names of the ops it fused with ";"."""
    return tuple(part for part in name.split(";") if part)


def _channels_last(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The permutation that puts a channels-first tensor (NCHW, NCW, NCDHW) in TensorFlow's channels-last layout."""
    if len(shape) < 3:
        return None
    return (0, *range(2, len(shape)), 1)


def aligned(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray | None:
    """The candidate in the reference's layout: as it is, or channels-first transposed to channels-last (tf2onnx
    and OpenVINO run convolutions in NCHW, and may keep TensorFlow's name on such a tensor); None otherwise.
    Where both read as the reference's shape (as many channels as rows and columns), the one nearer the
    reference's values is taken: the wrong layout is as far off as unrelated values are."""
    candidate = np.asarray(candidate)
    layouts = []
    if candidate.shape == reference.shape:
        layouts.append(candidate)
    permutation = _channels_last(candidate.shape)
    if permutation is not None and tuple(candidate.shape[i] for i in permutation) == reference.shape:
        layouts.append(np.transpose(candidate, permutation))
    if not layouts and candidate.size == reference.size and candidate.squeeze().shape == reference.squeeze().shape:
        layouts.append(candidate.reshape(reference.shape))  # a kept or dropped unit axis (LiteRT's reshapes)
    if len(layouts) < 2:
        return layouts[0] if layouts else None
    ref = np.nan_to_num(reference.astype(np.float64))
    return min(layouts, key=lambda layout: float(np.abs(np.nan_to_num(layout.astype(np.float64)) - ref).max()))


def default_of(setting: Tolerance | None, fallback: float | None) -> float | None:
    """A criterion's default: the number, or a per-output setting's "" entry; the fallback where it has none."""
    if setting is None:
        return fallback
    if isinstance(setting, dict):
        return float(setting[""]) if "" in setting else fallback
    return float(setting)


@dataclass(frozen=True)
class Judge:
    """The target's criteria at their defaults, as every intermediate tensor is judged."""

    elementwise: bool
    atol: float
    rtol: float
    min_cosine: float | None
    max_p99_rel: float | None

    # Reduced-precision criteria (elementwise False) judge an intermediate tensor by cosine where they set one, and
    # by the 99th percentile of relative errors only where they do not: after a ReLU most activations sit near
    # zero, where an int8 step or a float16 rounding is a large relative error whatever the conversion's quality
    # (MobileNetV2's first int8 Relu6: cosine 0.99993, p99 relative error above 0.1), so every first op would fail.

    @classmethod
    def of(cls, criteria: Criteria, precision: str = "float32") -> Judge:
        default_atol, default_rtol = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["float32"])
        return cls(
            elementwise=criteria.elementwise, atol=default_of(criteria.atol, default_atol),
            rtol=default_of(criteria.rtol, default_rtol),
            min_cosine=default_of(criteria.min_cosine_similarity, None),
            max_p99_rel=default_of(criteria.max_p99_rel_diff, None),
        )

    def describe(self) -> str:
        if self.elementwise or (self.min_cosine is None and self.max_p99_rel is None):
            return f"atol {self.atol:g} + rtol {self.rtol:g} x |reference|"
        parts = []
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        elif self.max_p99_rel is not None:
            parts.append(f"p99 relative error <= {self.max_p99_rel:g}")
        return ", ".join(parts)


def _nonfinite_side(reference: np.ndarray, candidate: np.ndarray) -> str:
    ref_bad, cand_bad = not np.isfinite(reference).all(), not np.isfinite(candidate).all()
    return {(True, True): "both", (True, False): "tensorflow", (False, True): "target"}.get((ref_bad, cand_bad), "")


def judge_tensor(reference: np.ndarray, candidate: np.ndarray, judge: Judge) -> dict:
    """The figures of one matched tensor (arrays of the same shape) and whether it passes."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    both_finite = np.isfinite(ref) & np.isfinite(cand)
    alike = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(both_finite, np.abs(cand - ref), np.where(alike, 0.0, np.inf))
    finite_ref = np.abs(ref[np.isfinite(ref)])
    reference_max = float(finite_ref.max()) if finite_ref.size else 0.0
    max_abs = float(abs_err.max()) if abs_err.size else 0.0
    relative = max_abs / reference_max if reference_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    cosine = None
    if both_finite.all() and ref.size:
        ref_norm, cand_norm = np.linalg.norm(ref), np.linalg.norm(cand)
        cosine = 1.0 if ref_norm == cand_norm == 0 else (
            0.0 if ref_norm == 0 or cand_norm == 0 else float(np.dot(ref.ravel(), cand.ravel()) / (ref_norm * cand_norm)))
    if judge.elementwise or (judge.min_cosine is None and judge.max_p99_rel is None):
        passed = bool(np.all(abs_err <= judge.atol + judge.rtol * np.where(np.isfinite(ref), np.abs(ref), 0.0)))
    else:
        passed = bool(np.all(both_finite | alike))
        if judge.min_cosine is not None and cosine is not None:
            passed = passed and cosine >= judge.min_cosine
        if judge.max_p99_rel is not None and judge.min_cosine is None and abs_err.size:
            rel = abs_err / (np.where(np.isfinite(ref), np.abs(ref), 0.0) + REL_EPSILON)
            passed = passed and float(np.percentile(rel, 99)) <= judge.max_p99_rel
    return {
        "max_abs_diff": max_abs, "relative_error": relative, "cosine_similarity": cosine,
        "reference_max_abs": reference_max, "nonfinite": _nonfinite_side(ref, cand), "passed": passed,
    }


@dataclass
class Matching:
    """Which target tensor stands for which TensorFlow tensor."""

    pairs: dict[str, TargetTensor]  # TensorFlow tensor name -> target tensor
    unmatched: list[str]  # target tensors matching no TensorFlow tensor (or matched one already taken)
    misshapen: list[str]  # TensorFlow tensors whose match holds a shape neither as is nor channels-last


def match(reference: Trace, target: Trace) -> Matching:
    """Each target tensor to the TensorFlow tensor its candidate names normalise to: of several (LiteRT's fused
    ops), the last in graph order, which is the fused chain's output. One target tensor per TensorFlow tensor:
    the first in the target's order (a later one copies it: a cast, an output's identity)."""
    by_name: dict[str, tuple[int, ReferenceTensor]] = {}
    for position, tensor in enumerate(reference.tensors):
        if tensor.name in reference.values:
            for name in (tensor.name, *tensor.aliases):
                by_name.setdefault(normalised(name), (position, tensor))
    pairs: dict[str, TargetTensor] = {}
    unmatched: list[str] = []
    for tensor in target.tensors:
        names = {normalised(c) for c in tensor.candidates}
        found = [by_name[n] for n in names if n in by_name]
        if not found:
            unmatched.append(tensor.name)
            continue
        _, chosen = max(found, key=lambda item: item[0])
        if chosen.name in pairs:
            continue  # a copy of a tensor matched already: neither unmatched nor compared twice
        pairs[chosen.name] = tensor
    return Matching(pairs=pairs, unmatched=unmatched, misshapen=[])


class _Graph:
    """TensorFlow's graph order, and each tensor's nearest compared ancestors."""

    def __init__(self, tensors: list[ReferenceTensor], compared: set[str]):
        self.tensors = {t.name: t for t in tensors}
        self.position = {t.name: i for i, t in enumerate(tensors)}
        self.compared = compared
        self._nearest: dict[str, tuple[str, ...]] = {}
        self.consumers: dict[str, list[str]] = {}
        for tensor in tensors:
            for source in tensor.inputs:
                self.consumers.setdefault(tensor_name(source), []).append(tensor.name)

    def nearest_compared(self, name: str) -> tuple[str, ...]:
        """The compared tensors this one reads, through any not compared (iteratively: graphs are deep)."""
        if name in self._nearest:
            return self._nearest[name]
        found: dict[str, None] = {}
        seen: set[str] = set()
        stack = [tensor_name(s) for s in self.tensors[name].inputs] if name in self.tensors else []
        while stack:
            current = stack.pop()
            if current in seen or current not in self.tensors:
                continue
            seen.add(current)
            if current in self.compared:
                found[current] = None
            else:
                stack.extend(tensor_name(s) for s in self.tensors[current].inputs)
        result = tuple(sorted(found, key=self.position.__getitem__))
        self._nearest[name] = result
        return result

    def nearest_compared_consumers(self, name: str) -> list[str]:
        found: dict[str, None] = {}
        seen: set[str] = set()
        stack = list(self.consumers.get(name, []))
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if current in self.compared:
                found[current] = None
            else:
                stack.extend(self.consumers.get(current, []))
        return sorted(found, key=self.position.__getitem__)


def tensor_name(source: str) -> str:
    """An input as TensorFlow writes it ("op", "op:1", "^op" for a control edge) as a tensor name."""
    source = source.lstrip("^")
    return source if ":" in source else f"{source}:0"


def _all_finite(values: Mapping[str, np.ndarray], names: Iterable[str]) -> bool:
    return all(np.isfinite(np.asarray(values[n])).all() for n in names if n in values
               and np.asarray(values[n]).dtype.kind in "fc")


def first_nonfinite_in(trace: Trace, input_names) -> object | None:
    """The first tensor, in the trace's order, holding NaN or infinity while every tensor it reads is finite."""
    for tensor in trace.tensors:
        if tensor.name not in trace.values:
            continue
        value = np.asarray(trace.values[tensor.name])
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            if _all_finite(trace.values, input_names(tensor)):
                return tensor
    return None


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not np.isfinite(value):
        return "inf" if value > 0 else "nan" if np.isnan(value) else "-inf"
    return f"{value:.3g}"


def _describe(tensor: TensorDivergence) -> str:
    return f"{normalised(tensor.tensorflow_name)} ({tensor.op_type})"


def _thinned(path: list[TensorDivergence]) -> list[TensorDivergence]:
    if len(path) <= DOWNSTREAM_KEPT:
        return path
    picks = np.linspace(0, len(path) - 1, DOWNSTREAM_KEPT).round().astype(int)
    return [path[i] for i in sorted(set(picks.tolist()))]


def localise(reference: Trace, target: Trace, criteria: Criteria, runtime: str, precision: str = "float32",
             device: str = "cpu", rows: int = 0) -> Localisation:
    """The verdict on where the target's error starts (see the module's docstring)."""
    return localised_with_figures(reference, target, criteria, runtime, precision, device, rows)[0]


def localised_with_figures(reference: Trace, target: Trace, criteria: Criteria, runtime: str,
                           precision: str = "float32", device: str = "cpu",
                           rows: int = 0) -> tuple[Localisation, list[TensorDivergence]]:
    """localise's verdict, and every matched tensor's figures in graph order (what a plot shows)."""
    judge = Judge.of(criteria, precision)
    matching = match(reference, target)
    divergences: dict[str, TensorDivergence] = {}
    misshapen: list[str] = []
    positions = {t.name: i for i, t in enumerate(reference.tensors)}
    ops = {t.name: t.op_type for t in reference.tensors}
    for name in sorted(matching.pairs, key=positions.__getitem__):
        tensor = matching.pairs[name]
        ref = np.asarray(reference.values[name])
        cand = aligned(ref, target.values[tensor.name]) if tensor.name in target.values else None
        if cand is None or ref.dtype.kind not in "fc":
            misshapen.append(f"{tensor.name} (shape {list(np.shape(target.values.get(tensor.name)))}, "
                             f"TensorFlow's {name} {list(ref.shape)})" if cand is None else tensor.name)
            continue
        divergences[name] = TensorDivergence(
            tensorflow_name=name, op_type=ops[name], position=positions[name], target_name=tensor.name,
            target_node=tensor.node, **judge_tensor(ref, cand, judge),
        )
    graph = _Graph(reference.tensors, set(divergences))
    found = Localisation(
        runtime=runtime, device=device, rows=rows, verdict="agrees", reference_tensors=len(reference.tensors),
        target_tensors=len(target.tensors), matched=len(divergences),
        unmatched=(matching.unmatched + misshapen)[:LISTED], left_out=(reference.left_out + target.left_out)[:LISTED],
    )
    origin = _nonfinite_origin(reference, target, matching, positions)
    found.nonfinite_origin = origin
    if not divergences or len(divergences) < MIN_MATCHED_SHARE * len(target.tensors):
        found.verdict = "unmatched"
        found.summary = (f"only {len(divergences)} of the {len(target.tensors)} {runtime} tensors matched a "
                         f"TensorFlow tensor by name: too few to say where the error starts"
                         + (f" ({target.note})" if target.note else ""))
        return found, list(divergences.values())
    ordered = [divergences[n] for n in sorted(divergences, key=positions.__getitem__)]
    first = next((d for d in ordered if not d.passed), None)
    if first is None:
        return _agrees(found, origin, ordered, judge), ordered
    upstream = [divergences[n] for n in graph.nearest_compared(first.tensorflow_name)]
    worst_upstream = max((u.relative_error for u in upstream), default=0.0)
    found.first, found.upstream = first, upstream
    found.downstream = _thinned(_downstream(first, graph, divergences))
    jump = _ratio(first.relative_error, worst_upstream)
    after = ""
    if origin is not None:
        after = f"; {_origin_words(origin)}"
    if origin is not None and (origin.side == "target" or first.nonfinite in ("target", "both")):
        # NaN or infinity is what goes wrong (made by the target, or made by TensorFlow and let through by the
        # target where TensorFlow's graph hides it); an infinity TensorFlow makes on purpose (an attention
        # mask) leaves a finite divergence its own verdict.
        found.verdict = "nonfinite"
        found.summary = (f"{_origin_words(origin)[0].upper()}{_origin_words(origin)[1:]}; the first tensor to "
                         f"miss the criteria is {_describe(first)}, {_relative_words(first, upstream)}")
    elif jump >= JUMP:
        found.verdict = "localised"
        found.summary = (f"First divergence at {_describe(first)}, {runtime} '{first.target_node}': "
                         f"{_relative_words(first, upstream)}; {_growth_words(first, found.downstream)}{after}")
    else:
        found.verdict = "spread"
        step, at = _largest_step(ordered, graph, divergences)
        largest = f"; the largest step, {_fmt(step)}x, is at {_describe(at)}" if at is not None else ""
        found.summary = (f"No single first op: the error accumulates; the first tensor past the criteria, "
                         f"{_describe(first)}, is only {_fmt(jump)}x its inputs' error "
                         f"({_relative_words(first, upstream)}){largest}; "
                         f"{_growth_words(first, found.downstream)}{after}")
    return found, ordered


def _ratio(error: float, upstream: float) -> float:
    if not np.isfinite(error):
        return float("inf")
    return error / max(upstream, RELATIVE_FLOOR)


def _relative_words(first: TensorDivergence, upstream: list[TensorDivergence]) -> str:
    beyond = f", past float16's largest, {FLOAT16_MAX:g}" if first.reference_max_abs > FLOAT16_MAX else ""
    words = (f"relative error {_fmt(first.relative_error)} (max abs {_fmt(first.max_abs_diff)} on values up to "
             f"{_fmt(first.reference_max_abs)}{beyond})")
    if upstream:
        worst = max(upstream, key=lambda u: u.relative_error)
        return f"{words} where its inputs' is at most {_fmt(worst.relative_error)}"
    return f"{words} where its inputs are the model's own (exact)"


def _growth_words(first: TensorDivergence, downstream: list[TensorDivergence]) -> str:
    if len(downstream) < 2:
        return "no compared tensor after it"
    last = downstream[-1]
    return (f"downstream it reaches {_fmt(last.relative_error)} at {_describe(last)}, "
            f"{len(downstream) - 1} compared tensors on")


def _origin_words(origin: NonFiniteOrigin) -> str:
    if origin.side == "tensorflow":
        return f"TensorFlow itself makes NaN or infinity from finite inputs at {normalised(origin.name)} ({origin.op_type})"
    where = f" (TensorFlow's {normalised(origin.tensorflow_name)}, finite there)" if origin.tensorflow_name else ""
    return f"the target makes NaN or infinity from finite inputs at {origin.name} ({origin.op_type}){where}"


def _agrees(found: Localisation, origin: NonFiniteOrigin | None, ordered: list[TensorDivergence],
            judge: Judge) -> Localisation:
    worst = max(ordered, key=lambda d: d.relative_error)
    within = (f"all {len(ordered)} matched tensors are within the criteria ({judge.describe()}); the largest "
              f"relative error is {_fmt(worst.relative_error)} at {_describe(worst)}")
    if origin is not None:
        found.verdict = "nonfinite"
        found.summary = f"{_origin_words(origin)[0].upper()}{_origin_words(origin)[1:]}; {within}"
    else:
        found.summary = within[0].upper() + within[1:]
    return found


def _downstream(first: TensorDivergence, graph: _Graph, divergences: dict[str, TensorDivergence]):
    """From the first divergent tensor to the outputs: at each step the compared consumer that diverges most."""
    path = [first]
    current = first.tensorflow_name
    seen = {current}
    while True:
        consumers = [c for c in graph.nearest_compared_consumers(current) if c not in seen]
        if not consumers:
            return path
        current = max(consumers, key=lambda c: (_sortable(divergences[c].relative_error), -graph.position[c]))
        seen.add(current)
        path.append(divergences[current])


def _sortable(value: float) -> float:
    return float("inf") if np.isnan(value) else value


def _largest_step(ordered: list[TensorDivergence], graph: _Graph, divergences: dict[str, TensorDivergence]):
    """The tensor whose error grows most over its compared inputs' (those reading only the graph's inputs, which
    are exact, are left out: any error at all is a step there); (0, None) when none reads a compared tensor."""
    best, at = 0.0, None
    for tensor in ordered:
        upstream = [divergences[n].relative_error for n in graph.nearest_compared(tensor.tensorflow_name)]
        if not upstream:
            continue
        step = _ratio(tensor.relative_error, max(upstream))
        if tensor.relative_error > 0 and step > best:
            best, at = step, tensor
    return best, at


def _nonfinite_origin(reference: Trace, target: Trace, matching: Matching,
                      positions: dict[str, int]) -> NonFiniteOrigin | None:
    """The first op to make NaN or infinity from finite inputs: in the target where TensorFlow's counterpart is
    finite (the conversion's doing), else in TensorFlow itself."""
    tf_of = {t.name: ref for ref, t in matching.pairs.items()}
    by_target = {t.name: t for t in target.tensors}

    def target_inputs(tensor: TargetTensor):
        return [n for n in tensor.inputs if n in by_target]

    for tensor in target.tensors:
        if tensor.name not in target.values:
            continue
        value = np.asarray(target.values[tensor.name])
        if value.dtype.kind not in "fc" or np.isfinite(value).all():
            continue
        if not _all_finite(target.values, target_inputs(tensor)):
            continue
        counterpart = tf_of.get(tensor.name)
        if counterpart is not None and not np.isfinite(np.asarray(reference.values[counterpart])).all():
            continue  # TensorFlow makes it too: its own origin says so
        return NonFiniteOrigin(side="target", name=tensor.name, op_type=tensor.op_type, tensorflow_name=counterpart)
    by_reference = {t.name: t for t in reference.tensors}
    origin = first_nonfinite_in(
        reference, lambda t: [tensor_name(s) for s in t.inputs if tensor_name(s) in by_reference])
    if origin is not None:
        return NonFiniteOrigin(side="tensorflow", name=origin.name, op_type=origin.op_type)
    return None


class NpzValues(Mapping):
    """A trace's values in an .npz, read one tensor at a time, by tensor name (the archive's keys are plain)."""

    def __init__(self, path: str, keys: Mapping[str, str]):
        self._archive = np.load(path, allow_pickle=False)
        self._keys = dict(keys)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._archive[self._keys[name]]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        self._archive.close()


def save_values(values: Mapping[str, np.ndarray], path: str) -> dict[str, str]:
    """Write a trace's values to an .npz under plain keys; returns each tensor's key."""
    keys = {name: f"t{index}" for index, name in enumerate(values)}
    np.savez(path, **{keys[name]: np.asarray(value) for name, value in values.items()})
    return keys


def kept_within(values: Iterable[tuple[str, np.ndarray]], max_bytes: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The tensors, in order, until their bytes pass max_bytes; the names of those left out."""
    kept: dict[str, np.ndarray] = {}
    left_out: list[str] = []
    total = 0
    for name, value in values:
        size = np.asarray(value).nbytes
        if total + size > max_bytes:
            left_out.append(name)
            continue
        kept[name] = np.asarray(value)
        total += size
    return kept, left_out

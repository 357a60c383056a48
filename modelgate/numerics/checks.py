"""Checks on a signature's outputs: each returns a named Check whose message says what was expected and found."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from modelgate.criteria import Tolerance
from modelgate.description import SignatureSpec, TensorSpec
from modelgate.numerics.compare import compare_arrays, exactly_equal, tolerance_for
from modelgate.report import STATUS_WHEN_BROKEN, Check, Severity


def rule(name: str, severity: Severity, problems: list[str], passed: str, notes: list[str] | tuple[str, ...] = ()) -> Check:
    """A named rule's verdict: broken when there are problems (each saying what was expected and what was
    found), its status then set by its severity; notes never break it."""
    if problems:
        message = "; ".join([*problems, *notes])
        return Check(name=name, status=STATUS_WHEN_BROKEN[severity], severity=severity, message=message)
    return Check(name=name, status="passed", severity=severity, message="; ".join([passed, *notes]))


def shape_problem(expected: list[int | None] | None, found: list[int | None] | None) -> str | None:
    """How a converted file's shape breaks the signature's, if it does: a dynamic dimension must stay dynamic."""
    if expected is None or found is None:
        return None
    if len(expected) != len(found):
        return f"rank {len(found)}, the signature has rank {len(expected)}"
    for axis, (want, have) in enumerate(zip(expected, found)):
        if want is None and have is not None:
            return f"dimension {axis} fixed at {have}, dynamic in the signature"
        if want is not None and have is not None and want != have:
            return f"dimension {axis} is {have}, the signature has {want}"
    return None


def signature_io_check(
    name: str, kind: str, expected: dict[str, TensorSpec], found: dict[str, TensorSpec], file_kind: str,
    problems: list[str] | None = None,
) -> Check:
    """A converted file's inputs or outputs (`found`, by name) against the signature's: names, dtypes, shapes.
    `file_kind` names the file in the messages ("ONNX graph", "IR"); `problems` are ones the caller found first."""
    problems = list(problems or [])
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"no {kind} {', '.join(missing)} in the {file_kind}")
    if extra:
        problems.append(f"{file_kind.split()[0]} {kind}s {', '.join(extra)} are not in the signature")
    for tensor, spec in expected.items():
        if tensor not in found:
            continue
        if found[tensor].dtype != spec.dtype:
            problems.append(f"{tensor}: dtype {found[tensor].dtype}, the signature has {spec.dtype}")
        if problem := shape_problem(spec.shape, found[tensor].shape):
            problems.append(f"{tensor}: {problem}")
    return rule(name, "error", problems, f"{kind}s {', '.join(expected)} match the signature by name, dtype and shape")


def dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "SUO" else array.dtype.name


def check_output_names(signature: SignatureSpec, outputs: dict[str, np.ndarray]) -> Check:
    expected, found = sorted(signature.outputs), sorted(outputs)
    if expected == found:
        return Check(name="output_names", status="passed", message=f"outputs {', '.join(found)}")
    return Check(name="output_names", status="failed", message=f"expected outputs {expected}, found {found}")


def check_output_dtypes(signature: SignatureSpec, outputs: dict[str, np.ndarray]) -> Check:
    wrong = [
        f"{name}: expected {spec.dtype}, found {dtype_name(outputs[name])}"
        for name, spec in signature.outputs.items()
        if name in outputs and dtype_name(outputs[name]) != spec.dtype
    ]
    if wrong:
        return Check(name="output_dtypes", status="failed", message="; ".join(wrong))
    return Check(name="output_dtypes", status="passed", message="every output has its declared dtype")


def check_output_shapes(signature: SignatureSpec, outputs: dict[str, np.ndarray]) -> Check:
    wrong = []
    for name, spec in signature.outputs.items():
        if name not in outputs or spec.shape is None:
            continue
        shape = outputs[name].shape
        if len(shape) != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, shape)):
            wrong.append(f"{name}: expected {spec.shape} (None = any), found {list(shape)}")
    if wrong:
        return Check(name="output_shapes", status="failed", message="; ".join(wrong))
    return Check(name="output_shapes", status="passed", message="every output matches its declared shape")


def check_finite(outputs: dict[str, np.ndarray]) -> Check:
    bad = []
    for name, value in outputs.items():
        if value.dtype.kind in "fc":
            nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
            if nan or inf:
                bad.append(f"{name}: {nan} NaN and {inf} Inf of {value.size} values")
    if bad:
        return Check(name="finite_outputs", status="failed", message="; ".join(bad))
    return Check(name="finite_outputs", status="passed", message="no NaN or Inf in any output")


def check_deterministic(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> Check:
    differing = exactly_equal(first, second)
    if differing:
        return Check(
            name="deterministic", status="failed",
            message=f"two calls on the same inputs gave different values for {', '.join(differing)}",
        )
    return Check(name="deterministic", status="passed", message="two calls on the same inputs gave identical outputs")


BATCH_ROWS_CHECKED = 8


def no_dynamic_batch(signature: SignatureSpec, feeds: dict[str, np.ndarray]) -> str | None:
    """Why these inputs hold no batch of several rows along a dynamic batch dimension, if they do not."""
    if not signature.inputs:
        return "the signature takes no inputs"
    for name, spec in signature.inputs.items():
        if spec.shape is None or spec.shape == []:
            return f"input '{name}' has {'unknown rank' if spec.shape is None else 'no dimensions'}: no batch dimension"
        if spec.shape[0] is not None:
            return f"input '{name}' fixes its batch dimension at {spec.shape[0]}"
    sizes = {name: len(value) for name, value in feeds.items()}
    if len(set(sizes.values())) != 1:
        return f"the inputs have different first dimensions ({', '.join(f'{k}: {v}' for k, v in sizes.items())})"
    if min(sizes.values()) < 2:
        return "the inputs hold a batch of 1"
    return None


def _unbatchable(signature: SignatureSpec, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> str | None:
    """Why a batch of these inputs cannot be split into rows, if it cannot."""
    reason = no_dynamic_batch(signature, feeds)
    if reason:
        return reason
    size = len(next(iter(feeds.values())))
    for name, value in outputs.items():
        if np.ndim(value) == 0 or len(value) != size:
            return f"output '{name}' has shape {list(np.shape(value))}, no batch dimension of {size}"
    return None


def _largest_magnitude(value: np.ndarray) -> float:
    finite = np.abs(value[np.isfinite(value)]) if value.dtype.kind in "fc" else np.abs(value)
    return float(finite.max()) if finite.size else 0.0


def _tolerance_words(value: Tolerance) -> str:
    """0.0001, or per output: 0.0001 (logits 0.001); never the setting's dict."""
    if not isinstance(value, dict):
        return f"{value:g}"
    per_output = ", ".join(f"{name} {setting:g}" for name, setting in value.items() if name)
    default = f"{value['']:g}" if "" in value else "the precision's default"
    return default + (f" ({per_output})" if per_output else "")


def check_batch_consistency(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], signature: SignatureSpec,
    feeds: dict[str, np.ndarray], batched: dict[str, np.ndarray], atol: Tolerance, rtol: Tolerance,
) -> Check:
    """Each row of a batch must equal that row run alone: batch statistics or rows leaking into each other
    make a model's answer depend on who else is in the batch.

    A batch and a single row may take different kernels that sum in another order, as TF Serving's own
    batching does: over long reductions that moves an output by a few float epsilons of its magnitude,
    far from any element's own rtol where the element is small. So an element also passes within rtol of
    the output's largest magnitude; rows that mix move outputs by a share of that magnitude itself."""
    reason = _unbatchable(signature, feeds, batched)
    if reason:
        return Check(name="batch_consistency", status="skipped", message=reason)
    size = len(next(iter(feeds.values())))
    rows = min(size, BATCH_ROWS_CHECKED)
    problems, largest = [], {}
    numeric = {name: np.asarray(value) for name, value in batched.items()}
    scales = {name: _largest_magnitude(value) for name, value in numeric.items() if value.dtype.kind in "fciub"}
    for row in range(rows):
        alone = run({name: value[row:row + 1] for name, value in feeds.items()})
        for name, value in numeric.items():
            output_atol, output_rtol = tolerance_for(atol, name), tolerance_for(rtol, name)
            scale = scales.get(name, 0.0)
            result = compare_arrays(value[row:row + 1], np.asarray(alone[name]),
                                    max(output_atol, output_rtol * scale), output_rtol)
            if result.max_abs_diff is not None:
                largest[name] = max(largest.get(name, 0.0), result.max_abs_diff)
            if not result.passed:
                found = result.message or f"max abs diff {result.max_abs_diff:.3g}, max rel diff {result.max_rel_diff:.3g}"
                problems.append(f"row {row} of a batch of {size}, output '{name}': expected the row run alone "
                                f"within atol={output_atol:g}, rtol={output_rtol:g}, or {output_rtol:g} of the "
                                f"output's largest magnitude {scale:.3g}, found {found}")
    figures = [f"'{name}' differs by at most {diff:.3g}"
               + (f" ({diff / scales[name]:.2g} of its largest magnitude {scales[name]:.3g})" if scales.get(name) else "")
               for name, diff in largest.items()]
    return rule("batch_consistency", "error", problems,
                f"each of {rows} rows of a batch of {size} equals the row run alone within atol {_tolerance_words(atol)} "
                f"or rtol {_tolerance_words(rtol)} of the element or of the output's largest magnitude", notes=figures)


def check_wrapper_parity(
    raw: dict[str, np.ndarray], wrapped: dict[str, np.ndarray], rtol: Tolerance, reference: str = "tensorflow",
    call: str = "model.predict",
) -> Check:
    """model.predict (or the `call` made instead) against the reference runtime on the same inputs: bit for
    bit, as it usually is. predict retraces the wrapper at the batch's concrete shapes, and grappler may then
    pick kernels that round the last bits otherwise (seen on transformer encoders); that passes within rtol of
    each output's largest magnitude, with the figure said, since it is the same model on other kernels, not
    another model."""
    differing = exactly_equal(raw, wrapped)
    if not differing:
        return Check(name="keras_wrapper_parity", status="passed",
                     message=f"{call} gives exactly the {reference} reference's outputs, bit for bit")
    problems, notes = [], []
    for name in differing:
        if name not in raw or name not in wrapped or np.shape(raw[name]) != np.shape(wrapped[name]):
            problems.append(f"output '{name}': expected it as the {reference} reference gives it, found it "
                            f"{'missing' if name not in wrapped else 'shaped ' + str(list(np.shape(wrapped[name])))}")
            continue
        expected, candidate = np.asarray(raw[name]), np.asarray(wrapped[name])
        scale = _largest_magnitude(expected) if expected.dtype.kind in "fciub" else 0.0
        result = compare_arrays(expected, candidate, tolerance_for(rtol, name) * scale, 0.0)
        share = f" ({result.max_abs_diff / scale:.2g} of its largest magnitude {scale:.3g})" if scale and \
            result.max_abs_diff is not None else ""
        if result.passed and scale:
            notes.append(f"'{name}' differs in its last bits: by at most {result.max_abs_diff:.3g}{share}")
        else:
            found = result.message or f"max abs diff {result.max_abs_diff:.3g}{share}"
            problems.append(f"output '{name}': expected the {reference} reference's values within "
                            f"{tolerance_for(rtol, name):g} of the output's largest magnitude, found {found}")
    return rule("keras_wrapper_parity", "error", problems,
                f"{call} gives the {reference} reference's outputs, not bit for bit", notes)


def output_checks(signature: SignatureSpec, first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> list[Check]:
    return [
        check_output_names(signature, first),
        check_output_dtypes(signature, first),
        check_output_shapes(signature, first),
        check_finite(first),
        check_deterministic(first, second),
    ]


def unwrappable(signature: SignatureSpec, feeds: dict[str, np.ndarray] | None) -> str | None:
    """Why no Keras model can stand for this signature, if none can: keras.Model needs an input, and each
    keras.Input a rank, which an input of unknown rank takes from the inputs at hand."""
    if not signature.inputs:
        return "the signature takes no inputs; a keras.Model needs at least one"
    unknown = [name for name, spec in signature.inputs.items() if spec.shape is None]
    if unknown and feeds is None:
        return f"inputs {', '.join(unknown)} have unknown rank and there are no inputs to take one from"
    unknown = [name for name, spec in signature.outputs.items() if spec.shape is None]
    if unknown and feeds is None:
        return f"outputs {', '.join(unknown)} have unknown rank and there are no inputs to run the signature on"
    return None


def skipped(names: list[str], reason: str) -> list[Check]:
    return [Check(name=name, status="skipped", message=reason) for name in names]


OUTPUT_CHECK_NAMES = [
    "output_names", "output_dtypes", "output_shapes", "finite_outputs", "deterministic", "batch_consistency",
]

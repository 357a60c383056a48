"""Comparators: hold one runtime's outputs against a reference's, output by output, matched by name."""

from __future__ import annotations

import numpy as np

from modelgate.criteria import Criteria, Tolerance
from modelgate.errors import ModelgateError
from modelgate.report import OutputComparison

# Relative error divides by |reference| plus this, so an exact zero in the reference cannot blow it up.
REL_EPSILON = 1e-12
TOP_K = 5

Outputs = dict[str, np.ndarray]


class UnknownOutputTolerance(ModelgateError):
    pass


def tolerance_for(setting: Tolerance, name: str) -> float:
    """A per-output setting names outputs, with "" as the default for the others."""
    if isinstance(setting, dict):
        return float(setting.get(name, setting[""]))
    return float(setting)


def check_tolerance_names(setting: Tolerance, outputs: list[str], label: str) -> None:
    """A tolerance for an output that does not exist is a typo that would silently apply the default."""
    unknown = sorted(set(setting) - {""} - set(outputs)) if isinstance(setting, dict) else []
    if unknown:
        raise UnknownOutputTolerance(
            f"{label} names {', '.join(unknown)}, which the signature lacks; its outputs are {', '.join(outputs)}"
        )


def errors(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative error per element, zero where both sides hold the same NaN or Inf."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.abs(cand - ref)
        rel_err = abs_err / (np.abs(ref) + REL_EPSILON)
    alike = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    return np.where(alike, 0.0, abs_err), np.where(alike, 0.0, rel_err)


def _smallest_passing(own: np.ndarray, other: np.ndarray, other_tolerance: float) -> float:
    """The smallest tolerance on `own` errors that passes every element the other tolerance does not."""
    needed = own[~(other <= other_tolerance)]
    if needed.size == 0:
        return 0.0
    return float(needed.max()) if np.isfinite(needed).all() else float("inf")


def _cosine(ref: np.ndarray, cand: np.ndarray) -> float | None:
    if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
        return None
    ref_norm, cand_norm = np.linalg.norm(ref), np.linalg.norm(cand)
    if ref_norm == 0 and cand_norm == 0:
        return 1.0
    if ref_norm == 0 or cand_norm == 0:
        return 0.0
    return float(np.dot(ref, cand) / (ref_norm * cand_norm))


def _top_k_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float | None, float | None]:
    """For outputs that look like class scores (rank 2, several classes): how often the ranking agrees."""
    if reference.ndim != 2 or reference.shape[1] < 2 or reference.shape[0] == 0:
        return None, None
    reference_top1 = np.argmax(reference, axis=1)
    top1 = float(np.mean(reference_top1 == np.argmax(candidate, axis=1)))
    if reference.shape[1] <= TOP_K:
        return top1, None  # every class is in the top 5: agreement would be 1 whatever the values
    candidate_top5 = np.argsort(-candidate, axis=1)[:, :TOP_K]
    top5 = float(np.mean(np.any(candidate_top5 == reference_top1[:, None], axis=1)))
    return top1, top5


def _stats(values: np.ndarray, prefix: str) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        fallback = float("inf") if values.size else 0.0
        return {f"max_{prefix}": fallback, f"mean_{prefix}": None, f"median_{prefix}": None, f"p99_{prefix}": None}
    return {
        f"max_{prefix}": float(finite.max()) if finite.size == values.size else float("inf"),
        f"mean_{prefix}": float(finite.mean()),
        f"median_{prefix}": float(np.median(finite)),
        f"p99_{prefix}": float(np.percentile(finite, 99)),
    }


def compare_arrays(reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float) -> OutputComparison:
    """An element fails only where its error exceeds both atol and rtol; NaN or Inf where the reference
    holds a finite value always fails."""
    tolerances = {"atol": atol, "rtol": rtol}
    if reference.shape != candidate.shape:
        return OutputComparison(
            max_abs_diff=None, max_rel_diff=None, passed=False, **tolerances,
            message=f"shape {list(candidate.shape)} differs from the reference's {list(reference.shape)}",
        )
    if reference.dtype.kind not in "fciub" or candidate.dtype.kind not in "fciub":
        equal = bool(np.array_equal(reference, candidate))
        failing = int(np.sum(reference != candidate))
        return OutputComparison(
            max_abs_diff=None, max_rel_diff=None, passed=equal, total_elements=int(reference.size),
            failing_elements=failing, failing_share=failing / max(reference.size, 1), **tolerances,
            message="" if equal else "values differ",
        )
    abs_err, rel_err = errors(reference, candidate)
    failing = ~((abs_err <= atol) | (rel_err <= rtol))  # NaN errors compare False, so they fail
    nonfinite = int((~np.isfinite(abs_err)).sum())
    top1, top5 = _top_k_agreement(reference, candidate)
    stats = {**_stats(abs_err, "abs_diff"), **_stats(rel_err, "rel_diff")}
    return OutputComparison(
        **stats,
        failing_elements=int(failing.sum()),
        total_elements=int(failing.size),
        failing_share=float(failing.mean()) if failing.size else 0.0,
        min_passing_atol=_smallest_passing(abs_err, rel_err, rtol),
        min_passing_rtol=_smallest_passing(rel_err, abs_err, atol),
        cosine_similarity=_cosine(reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()),
        top1_agreement=top1,
        top5_agreement=top5,
        passed=not bool(failing.any()),
        **tolerances,
        message=f"{nonfinite} elements NaN or Inf where the reference differs" if nonfinite else "",
    )


def stack_batches(references: list[Outputs], candidates: list[Outputs]) -> tuple[dict[str, tuple], dict[str, str]]:
    """Each output's reference and candidate values over all batches, joined along the batch axis, and the
    outputs that cannot be joined (missing somewhere, or shaped unlike the reference) with the reason."""
    stacked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    problems: dict[str, str] = {}
    for name in references[0]:
        pairs = []
        for index, (reference, candidate) in enumerate(zip(references, candidates)):
            ref, cand = np.asarray(reference[name]), candidate.get(name)
            if cand is None:
                problems[name] = f"missing; the candidate has {', '.join(sorted(candidate)) or 'no outputs'}"
                break
            cand = np.asarray(cand)
            if ref.shape != cand.shape:
                problems[name] = f"batch {index}: shape {list(cand.shape)} differs from the reference's {list(ref.shape)}"
                break
            pairs.append((ref, cand))
        if name in problems:
            continue
        # Batches of one shape stay shaped, so class-score figures (top-1, top-5) still see rows.
        keep_rows = len({ref.shape[1:] for ref, _ in pairs}) == 1 and pairs[0][0].ndim > 0
        stacked[name] = tuple(_joined([pair[side] for pair in pairs], keep_rows) for side in (0, 1))
    return stacked, problems


def _joined(arrays: list[np.ndarray], keep_rows: bool) -> np.ndarray:
    return np.concatenate(arrays) if keep_rows else np.concatenate([array.ravel() for array in arrays])


def compare_batches(
    references: list[Outputs], candidates: list[Outputs], atol: Tolerance, rtol: Tolerance
) -> dict[str, OutputComparison]:
    """Every batch's outputs against its reference, by name; figures are over all batches together."""
    return compare_stacked(*stack_batches(references, candidates), references, candidates, atol, rtol)


def compare_stacked(
    stacked: dict[str, tuple], problems: dict[str, str], references: list[Outputs], candidates: list[Outputs],
    atol: Tolerance, rtol: Tolerance,
) -> dict[str, OutputComparison]:
    """compare_batches for a caller that keeps stack_batches' result for more (error histograms)."""
    results = {}
    for name in references[0]:
        if name in problems:
            results[name] = OutputComparison(max_abs_diff=None, max_rel_diff=None, passed=False, message=problems[name])
        else:
            results[name] = compare_arrays(*stacked[name], tolerance_for(atol, name), tolerance_for(rtol, name))
    extra = set().union(*candidates) - set(references[0])
    for name in sorted(extra):
        results[name] = OutputComparison(
            max_abs_diff=None, max_rel_diff=None, passed=False, message="not an output of the reference"
        )
    return results


def exactly_equal(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list[str]:
    """Names of outputs that are not bit-for-bit equal (NaN equal to NaN), or missing on either side."""
    names = sorted(set(reference) | set(candidate))
    return [
        name for name in names
        if name not in reference or name not in candidate
        or np.asarray(reference[name]).shape != np.asarray(candidate[name]).shape
        or not np.array_equal(np.asarray(reference[name]), np.asarray(candidate[name]),
                              equal_nan=np.asarray(reference[name]).dtype.kind in "fc")
    ]


APPROXIMATE_FIGURES = (  # (criterion, figure of OutputComparison, whether the figure must reach it from above)
    ("min_cosine_similarity", "cosine_similarity", True),
    ("min_top1_agreement", "top1_agreement", True),
    ("max_p99_rel_diff", "p99_rel_diff", False),
)


def judged(name: str, result: OutputComparison, criteria: Criteria) -> OutputComparison:
    """An output's comparison judged by the target's criteria: elementwise (every element within atol or
    rtol, as compare_arrays judged it) and by any approximate figure set. A figure the output has not (top-1
    on a non-class output) is not judged."""
    if result.max_abs_diff is None and result.message:
        return result  # missing, or shaped unlike the reference: nothing to judge by figures
    problems: list[str] = []
    if criteria.elementwise and not result.passed:
        problems.append(f"{result.failing_elements} of {result.total_elements} elements outside atol or rtol")
    for criterion, figure, at_least in APPROXIMATE_FIGURES:
        bound = getattr(criteria, criterion)
        value = getattr(result, figure)
        if bound is None or value is None:
            continue
        limit = tolerance_for(bound, name)
        if (value < limit) if at_least else (value > limit):
            problems.append(f"{figure} {value:.8g}, {'at least' if at_least else 'at most'} {limit:.8g} required")
    message = "; ".join(problems) or result.message
    return result.model_copy(update={"passed": not problems, "message": message})

"""Comparators: hold one runtime's outputs against a reference's, output by output, matched by name."""

from __future__ import annotations

import numpy as np

from modelgate.schemas import OutputComparison

# Relative error divides by |reference| plus this, so an exact zero in the reference cannot blow it up.
REL_EPSILON = 1e-12


def compare_arrays(reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float) -> OutputComparison:
    """An element fails only where its error exceeds both atol and rtol; NaN or Inf where the reference
    holds a finite value always fails."""
    if reference.shape != candidate.shape:
        return OutputComparison(
            max_abs_diff=None, max_rel_diff=None, passed=False,
            message=f"shape {list(candidate.shape)} differs from the reference's {list(reference.shape)}",
        )
    if reference.dtype.kind not in "fciub" or candidate.dtype.kind not in "fciub":
        equal = bool(np.array_equal(reference, candidate))
        return OutputComparison(
            max_abs_diff=None, max_rel_diff=None, passed=equal, total_elements=int(reference.size),
            failing_elements=int(np.sum(reference != candidate)), message="" if equal else "values differ",
        )
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.abs(cand - ref)
        rel_err = abs_err / (np.abs(ref) + REL_EPSILON)
    both_nonfinite_alike = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    abs_err = np.where(both_nonfinite_alike, 0.0, abs_err)
    rel_err = np.where(both_nonfinite_alike, 0.0, rel_err)
    failing = ~((abs_err <= atol) | (rel_err <= rtol))  # NaN errors compare False, so they fail
    finite_abs = abs_err[np.isfinite(abs_err)]
    finite_rel = rel_err[np.isfinite(rel_err)]
    nonfinite = int(abs_err.size - finite_abs.size)
    return OutputComparison(
        max_abs_diff=float(finite_abs.max()) if finite_abs.size else (float("inf") if nonfinite else 0.0),
        max_rel_diff=float(finite_rel.max()) if finite_rel.size else (float("inf") if nonfinite else 0.0),
        mean_abs_diff=float(finite_abs.mean()) if finite_abs.size else 0.0,
        failing_elements=int(failing.sum()),
        total_elements=int(failing.size),
        passed=not bool(failing.any()),
        message=f"{nonfinite} elements NaN or Inf where the reference differs" if nonfinite else "",
    )


def compare_outputs(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], atol: float, rtol: float
) -> dict[str, OutputComparison]:
    results = {}
    for name, ref in reference.items():
        if name not in candidate:
            results[name] = OutputComparison(
                max_abs_diff=None, max_rel_diff=None, passed=False,
                message=f"missing; the candidate has {', '.join(sorted(candidate)) or 'no outputs'}",
            )
        else:
            results[name] = compare_arrays(np.asarray(ref), np.asarray(candidate[name]), atol, rtol)
    for name in sorted(set(candidate) - set(reference)):
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

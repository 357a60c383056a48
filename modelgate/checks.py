"""Checks on a signature's outputs: each returns a named Check whose message says what was expected and found."""

from __future__ import annotations

import numpy as np

from modelgate.compare import exactly_equal
from modelgate.schemas import Check, SignatureSpec


def _numpy_dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "SUO" else array.dtype.name


def check_output_names(signature: SignatureSpec, outputs: dict[str, np.ndarray]) -> Check:
    expected, found = sorted(signature.outputs), sorted(outputs)
    if expected == found:
        return Check(name="output_names", status="passed", message=f"outputs {', '.join(found)}")
    return Check(name="output_names", status="failed", message=f"expected outputs {expected}, found {found}")


def check_output_dtypes(signature: SignatureSpec, outputs: dict[str, np.ndarray]) -> Check:
    wrong = [
        f"{name}: expected {spec.dtype}, found {_numpy_dtype_name(outputs[name])}"
        for name, spec in signature.outputs.items()
        if name in outputs and _numpy_dtype_name(outputs[name]) != spec.dtype
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


def output_checks(signature: SignatureSpec, first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> list[Check]:
    return [
        check_output_names(signature, first),
        check_output_dtypes(signature, first),
        check_output_shapes(signature, first),
        check_finite(first),
        check_deterministic(first, second),
    ]


def skipped(names: list[str], reason: str) -> list[Check]:
    return [Check(name=name, status="skipped", message=reason) for name in names]


OUTPUT_CHECK_NAMES = ["output_names", "output_dtypes", "output_shapes", "finite_outputs", "deterministic"]

"""Plots people would rather look at than read, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def latency_distribution(samples_by_config: dict[str, list[float]], path: str | Path) -> Path:
    """One box per runtime/device/batch configuration, p50 and p99 marked in the labels."""
    import numpy as np

    labels = list(samples_by_config)
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(labels) + 2), 4.5))
    axes.boxplot([samples_by_config[label] for label in labels], whis=(1, 99), showfliers=True)
    axes.set_xticks(range(1, len(labels) + 1))
    axes.set_xticklabels(
        [
            f"{label}\np50 {np.percentile(samples_by_config[label], 50):.2f} ms"
            f"\np99 {np.percentile(samples_by_config[label], 99):.2f} ms"
            for label in labels
        ],
        fontsize=8,
    )
    axes.set_ylabel("latency per call (ms)")
    axes.set_title("Latency distribution (whiskers: p1 to p99)")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def error_histogram(abs_errors, atol: float, path: str | Path, title: str) -> Path:
    """Absolute errors of one output on a log scale, with atol marked; exact zeros and NaN/Inf counted apart."""
    import numpy as np

    errors = np.asarray(abs_errors, dtype=np.float64).ravel()
    finite = errors[np.isfinite(errors)]
    positive = finite[finite > 0]
    figure, axes = plt.subplots(figsize=(6.5, 4))
    if positive.size:
        low, high = np.log10(positive.min()), np.log10(positive.max())
        bins = np.logspace(low - 0.05, high + 0.05, 40) if high > low else np.array([positive.min() / 2, positive.min() * 2])
        axes.hist(positive, bins=bins, color="#4c72b0")
        axes.set_xscale("log")
    if atol > 0:
        axes.axvline(atol, color="#c44e52", linestyle="--", label=f"atol {atol:g}")
        axes.legend(loc="upper left")
    axes.set_xlabel("absolute error")
    axes.set_ylabel("elements")
    axes.set_title(
        f"{title}\n{finite.size - positive.size} exactly equal, {errors.size - finite.size} NaN/Inf, "
        f"{positive.size} above zero",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

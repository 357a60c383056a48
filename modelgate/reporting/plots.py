"""Plots people would rather look at than read, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def _save(figure, path: str | Path, dpi: int) -> Path:
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def latency_distribution(samples_by_config: dict[str, list[float]], path: str | Path) -> Path:
    """One panel per runtime/device, one box per batch size (whiskers p1 to p99), on a log scale so fast
    and slow runtimes read side by side."""
    panels: dict[str, dict[str, list[float]]] = {}
    for label, samples in samples_by_config.items():
        runtime_device, batch = label.rsplit("/", 1)
        panels.setdefault(runtime_device, {})[batch] = samples
    figure, axes_list = plt.subplots(
        1, len(panels), figsize=(max(6, 3.6 * len(panels)), 4.5), sharey=True, squeeze=False
    )
    for axes, (runtime_device, batches) in zip(axes_list[0], sorted(panels.items())):
        ordered = sorted(batches, key=lambda b: int(b.removeprefix("bs")))
        axes.boxplot([batches[b] for b in ordered], whis=(1, 99), showfliers=False)
        axes.set_xticks(range(1, len(ordered) + 1))
        axes.set_xticklabels([b.removeprefix("bs") for b in ordered])
        axes.set_title(runtime_device, fontsize=10)
        axes.set_xlabel("batch size")
        axes.set_yscale("log")
        axes.grid(axis="y", alpha=0.3, which="both")
    axes_list[0][0].set_ylabel("latency per call (ms, log)")
    figure.suptitle("Latency distribution (boxes p25-p75, whiskers p1-p99)")
    return _save(figure, path, dpi=110)


def throughput_by_batch(points: dict[str, list[tuple[int, float]]], path: str | Path) -> Path:
    """Throughput against batch size, one line per runtime and device."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, series in sorted(points.items()):
        series = sorted(series)
        axes.plot([b for b, _ in series], [t for _, t in series], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("batch size")
    axes.set_ylabel("throughput (samples/s, log)")
    axes.set_title("Throughput against batch size")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path, dpi=110)


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
    return _save(figure, path, dpi=100)


def latency_against_error(points: dict[str, tuple[float, float, bool]], references: dict[str, float],
                          batch_size: int, path: str | Path) -> Path:
    """Each target on each runtime and device as (1 - cosine similarity, p50 ms), labelled, a cross where
    its outputs failed; TensorFlow, which has no error against itself, as a horizontal line per device. The
    error axis is logarithmic, so an exact match (zero) sits at its left edge, a decade below the smallest
    error drawn."""
    errors = [error for error, _, _ in points.values() if error > 0]
    floor = min(errors) / 10 if errors else 1e-12
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for label, (error, p50, passed) in sorted(points.items()):
        x = error or floor
        axes.scatter([x], [p50], marker="o" if passed else "x", color="#4c72b0" if passed else "#c44e52", zorder=3)
        axes.annotate(label + ("" if passed else " (failed)") + ("" if error else " (exact)"), (x, p50),
                      textcoords="offset points", xytext=(5, 4), fontsize=8)
    for label, p50 in sorted(references.items()):
        axes.axhline(p50, color="#55a868", linestyle="--", linewidth=1)
        axes.annotate(f"{label} (reference)", (0.01, p50), xycoords=("axes fraction", "data"),
                      textcoords="offset points", xytext=(0, 3), fontsize=8, color="#55a868")
    axes.set_xscale("log")
    axes.margins(x=0.25)  # room for the labels of the rightmost points
    axes.set_xlabel("1 - cosine similarity to TensorFlow, worst output (log)")
    axes.set_ylabel(f"p50 latency at batch size {batch_size} (ms)")
    axes.set_title("Latency against error, per target, runtime and device")
    axes.grid(alpha=0.3, which="both")
    return _save(figure, path, dpi=110)


def divergence_plot(localisation, divergences, path: str | Path, title: str,
                    criteria_line: tuple[float, str] | None = None) -> Path:
    """Each matched intermediate tensor's relative error (max abs diff over the reference's max) in TensorFlow's
    graph order, on a log scale: dots within the target's criteria, crosses outside, NaN/Inf at the top edge,
    exact zeros at the bottom; the criteria's relative bound as a line (criteria_line: level, label), the first
    divergent op marked."""
    import numpy as np

    figure, axes = plt.subplots(figsize=(8, 4.2))
    values = [d.relative_error for d in divergences]
    finite = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    low, high = (min(finite) / 10, max(finite) * 10) if finite else (1e-12, 1.0)
    if criteria_line is not None and criteria_line[0] > 0:
        low, high = min(low, criteria_line[0] / 10), max(high, criteria_line[0] * 10)
        axes.axhline(criteria_line[0], color="#c44e52", linestyle=":", linewidth=1, label=criteria_line[1])
    if any(not np.isfinite(d.relative_error) for d in divergences):
        high = max(high, 10.0)  # NaN or Inf sits above every finite error, a relative error of 1 being all wrong
    for passed, marker, color, label in ((True, "o", "#4c72b0", "within the criteria"),
                                         (False, "x", "#c44e52", "outside the criteria")):
        chosen = [d for d in divergences if d.passed == passed and np.isfinite(d.relative_error)]
        if chosen:
            axes.scatter([d.position for d in chosen], [max(d.relative_error, low) for d in chosen], marker=marker,
                         color=color, s=14, label=label, zorder=3)
    broken = [d.position for d in divergences if not np.isfinite(d.relative_error)]
    if broken:
        axes.scatter(broken, [high] * len(broken), marker="^", color="#c44e52", s=22, label="NaN or Inf", zorder=3)
    first = localisation.first
    if first is not None:
        axes.axvline(first.position, color="#dd8452", linestyle="--", linewidth=1,
                     label=f"first divergence: {first.op_type} {first.tensorflow_name.rsplit('/', 2)[-2]}"[:70])
    axes.set_yscale("log")
    axes.set_ylim(low / 2, high * 2)
    axes.set_xlabel("position in TensorFlow's graph order (0: nearest the inputs)")
    axes.set_ylabel("relative error (log; NaN/Inf at the top)")
    axes.set_title(f"{title}\nverdict: {localisation.verdict}", fontsize=9)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, loc="upper left")
    return _save(figure, path, dpi=100)

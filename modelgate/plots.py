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


def throughput_by_batch(points: dict[str, list[tuple[int, float]]], path: str | Path) -> Path:
    """Throughput against batch size, one line per runtime and device."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, series in sorted(points.items()):
        series = sorted(series)
        axes.plot([b for b, _ in series], [t for _, t in series], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size")
    axes.set_ylabel("throughput (samples/s)")
    axes.set_title("Throughput against batch size")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

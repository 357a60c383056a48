"""The performance suite keeps running: its quick mode measures every figure on small models.

Its targets are judged by the suite itself (benchmarks/results.json); a test on a shared machine only
checks that every figure was measured and written, never how fast anything was.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # every measurement of benchmarks/, on small models: minutes
def test_quick_suite_measures_and_writes_every_figure(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=1200)
    # 3: a target missed on a busy machine, which the suite itself reports; anything else is a broken suite.
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(row["model"], row["runtime"]) for row in results["fidelity"]} == {
        ("small dense", "tensorflow"), ("small dense", "onnxruntime")
    }
    rows = [*results["fidelity"], results["harness_overhead"], results["cold_cli"], results["whole_validation"]]
    assert all(math.isfinite(row["ratio"]) and row["ratio"] > 0 and isinstance(row["passed"], bool) for row in rows)
    # A few MiB of weights can sit within the noise of a whole process tree: the ratio may be negative.
    assert all(math.isfinite(row["ratio"]) and row["peak_rss_mb"] > row["baseline_mb"] / 2 and row["peak_stage"]
               and row["one_tensorflow_process_mb"] > 100 and isinstance(row["tensorflow_passed"], bool)
               and row["alive_at_peak_mb"]["flow"] > 0 and len(row["alive_at_peak_mb"]) > 1
               for row in results["memory"])
    assert results["whole_validation"]["validation_statuses"] == ["passed"]
    assert results["whole_validation"]["prefect_start_up_s"] > 0
    cold = results["cold_cli"]
    assert cold["statuses"] == ["passed"] and cold["import_tensorflow_s"] > 0, cold["stopped_by"]
    assert {"imports", "prefect_server_wait", "stage:inspect", "stage:open-mlflow-run", "shutdown"} <= set(cold["breakdown_s"])
    assert "## Cold CLI" in (tmp_path / "results.md").read_text()
    assert [round(row["variables_mb"]) for row in results["memory"]] == [4]
    assert results["gpu"]["status"] == "skipped" and results["gpu"]["reason"]
    assert "efficientnet" not in results  # minutes of EfficientNetB0: the full suite only
    assert "## Fidelity" in (tmp_path / "results.md").read_text()
    assert results["all_passed"] == (result.returncode == 0)

"""The suite's large model: more than 2 GiB of weights through the whole validation with the ONNX target at
default settings. No single protobuf holds such a model, so its ONNX weights must go to external data, and ONNX
Runtime is still held to TensorFlow on them. Several minutes and about 11 GB of memory: marked large_model."""

from pathlib import Path

import onnx
import psutil
import pytest

from benchmarks.models import dense_of_size, variables_bytes
from modelgate.execution.sandbox import Limits, run_isolated
from modelgate.targets.onnx.conversion import EXTERNAL_DATA_FILE
from tests.flows import run_flow

WEIGHT_BYTES = int(2.1 * 2**30)
# The conversion's child holds about 4x the weights and may take half the machine (the default memory limit).
NEEDED_MEMORY = 20 * 2**30

pytestmark = [
    pytest.mark.large_model, pytest.mark.slow, pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(2400),
    pytest.mark.skipif(psutil.virtual_memory().total < NEEDED_MEMORY,
                       reason=f"a {WEIGHT_BYTES / 2**30:.1f} GiB model needs a machine of {NEEDED_MEMORY // 2**30} GiB"),
]


def test_a_model_past_2_gib_passes_with_onnx_external_data_and_onnx_runtime_compared(tmp_path, tracking_uri, workdir):
    # Built in a child: whatever TensorFlow keeps of it would otherwise sit in the validation's own process.
    model_dir = run_isolated(dense_of_size, tmp_path / "dense", WEIGHT_BYTES, limits=Limits(timeout_s=1200),
                             label="build the model").value
    assert variables_bytes(model_dir) > 2 * 2**30
    report = run_flow(model_dir, tracking_uri, workdir, benchmark={"enabled": False}, onnx_batches=1)
    assert report.status == "passed", report.verdict_line()
    section = report.targets["onnx"]
    assert section.conversion.details["large_model"] and section.conversion.details["external_data"]
    model_file = Path(section.conversion.path)
    stored = onnx.load(model_file, load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL for init in stored.graph.initializer)
    assert model_file.stat().st_size < 2**20 and (model_file.parent / EXTERNAL_DATA_FILE).stat().st_size > 2 * 2**30
    comparison = section.comparisons["onnxruntime/cpu"]
    assert comparison.batches == 1 and comparison.outputs and not comparison.failing()

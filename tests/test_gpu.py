"""GPU paths: measured on the GPU where one exists; skipped with the reason everywhere else."""

import pytest

from modelgate.environment import gpu_present
from modelgate.schemas import ValidationRequest
from tasks.benchmark import benchmark
from tasks.inspect_model import inspect_model
from tasks.prepare_inputs import prepare_inputs
from tasks.select_signature import select_signature

pytestmark = pytest.mark.skipif(
    not gpu_present(), reason="no NVIDIA GPU on this machine (nvidia-smi lists none): GPU benchmarks cannot run here"
)


def test_tensorflow_is_measured_on_the_gpu_in_a_process_of_its_own(model_dirs, tmp_path):
    request = ValidationRequest(source=str(model_dirs["keras_export"]), benchmark_batch_sizes=[1, 8],
                                benchmark_max_windows=3, benchmark_warmup=2)
    choice = select_signature.fn(inspect_model.fn(request.source, str(tmp_path)), None, None)
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    run = benchmark.fn(choice, inputs, request, str(tmp_path))
    devices = {(r.runtime, r.device) for r in run.results}
    assert {("tensorflow", "cpu"), ("tensorflow", "gpu"), ("keras", "gpu")} <= devices
    assert {c.name: c.status for c in run.checks}["benchmark_gpu_tensorflow"] == "passed"

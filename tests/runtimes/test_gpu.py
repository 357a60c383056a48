"""GPU paths: measured on the GPU where one exists; skipped with the reason everywhere else."""

import pytest

from modelgate.execution.jobs import inspection_job
from modelgate.reporting.environment import gpu_present
from modelgate.request import ValidationRequest
from tasks.benchmark import benchmark
from tasks.prepare_inputs import prepare_inputs
from tasks.select_signature import select_signature

pytestmark = pytest.mark.skipif(
    not gpu_present(), reason="no NVIDIA GPU on this machine (nvidia-smi lists none): GPU benchmarks cannot run here"
)


def test_tensorflow_is_measured_on_the_gpu_in_a_process_of_its_own(model_dirs, tmp_path):
    request = ValidationRequest(source=str(model_dirs["keras_export"]), benchmark_batch_sizes=[1, 8],
                                benchmark_max_windows=3, benchmark_warmup=2)
    choice = select_signature.fn(inspection_job(request.source, str(tmp_path)), None, None)
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    run = benchmark.fn(choice, inputs, request, str(tmp_path))
    devices = {(r.runtime, r.device) for r in run.results}
    assert {("tensorflow", "cpu"), ("tensorflow", "gpu"), ("keras", "gpu")} <= devices
    assert {c.name: c.status for c in run.checks}["benchmark_gpu_tensorflow"] == "passed"


@pytest.mark.usefixtures("prefect_server")
def test_every_target_runtime_with_a_gpu_path_compares_and_measures_on_it_or_says_why_not(
    onnx_models, tracking_uri, workdir
):
    from tests.flows import run_flow

    report = run_flow(onnx_models["keras_cnn"], tracking_uri, workdir, targets=["all"], baseline=None,
                      benchmark_batch_sizes=[1, 8], benchmark_max_windows=3, benchmark_warmup=2, onnx_batches=2)
    for name, section in report.targets.items():
        for runtime in {key.split("/")[0] for key in [*section.comparisons, *section.not_compared]}:
            key = f"{runtime}/gpu"
            if key in section.comparisons:
                gpu = section.comparisons[key]
                assert gpu.providers[0] != "CPUExecutionProvider" and not gpu.failing(), (name, gpu)
                assert any(b.target == name and b.runtime == runtime and b.device == "gpu" for b in report.benchmarks)
            else:
                # No silent CPU run labelled GPU: a runtime without a GPU path here says why (OpenVINO: Intel GPUs only).
                assert section.not_compared.get(key) or runtime == "litert", (name, runtime, section.not_compared)
    onnx_gpu = report.targets["onnx"].comparisons.get("onnxruntime/gpu")
    assert onnx_gpu is not None and onnx_gpu.providers[0] == "CUDAExecutionProvider", report.targets["onnx"].not_compared

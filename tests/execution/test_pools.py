"""Which pools a validation opens, and tf2onnx converting as the last job of TensorFlow's own sandboxed child."""

import os
from pathlib import Path

import pytest

from modelgate.execution import os_sandbox
from modelgate.execution.jobs import inspection_job
from modelgate.execution.pools import (
    TENSORFLOW,
    begin_target_stages,
    conversion_pool,
    end_target_stages,
    validation_pools,
)
from modelgate.execution.sandbox import Limits, run_isolated, shared_processes, shares_process
from modelgate.execution.target_jobs import conversion_job
from modelgate.request import ValidationRequest
from modelgate.runtimes import tensorflow as tensorflow_runtime
from modelgate.targets import ConversionSource, target
from modelgate.tracking.mlflow_store import LOGGING_POOL

LIMITS = Limits(timeout_s=600, memory_limit_mb=8000)


def test_the_default_target_converts_in_tensorflows_child_and_no_converter_warms_up_beside_it():
    pools = validation_pools(ValidationRequest(source="model"))
    assert pools[TENSORFLOW].serves_one_more_job
    assert conversion_pool(target("onnx")) == TENSORFLOW
    assert not [name for name in pools if name.startswith("convert-")]
    assert pools["onnxruntime"].deferred
    assert pools[LOGGING_POOL].on_demand and not pools[LOGGING_POOL].sandboxed


def test_as_the_targets_stages_end_the_runtimes_close_and_the_logging_child_warms_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    request = ValidationRequest(source="model")
    with shared_processes(validation_pools(request)) as processes:
        begin_target_stages()
        assert processes["onnxruntime"].pid is not None and processes[LOGGING_POOL].pid is None
        end_target_stages(request)
        assert processes["onnxruntime"].pid is None and processes[LOGGING_POOL].pid is not None


def test_tensorflows_child_closes_at_the_targets_stages_when_the_first_target_converts_elsewhere():
    asked = [name for name in ("litert", "openvino") if not target(name).missing_packages()]
    if not asked:
        pytest.skip("neither litert nor openvino is installed")
    assert not validation_pools(ValidationRequest(source="model", targets=asked[:1]))[TENSORFLOW].serves_one_more_job


@shares_process(TENSORFLOW)
def _load(model_dir: str, tags: list[str], key: str) -> tuple[int, int]:
    tensorflow_runtime.load_signature_runner(model_dir, tags, key)
    return os.getpid(), len(tensorflow_runtime._loaded)


def _converted(source: ConversionSource) -> tuple[int, int, object]:
    """The conversion job as export-onnx runs it, and how many loaded models the process held after it."""
    record = conversion_job("onnx", source)
    return os.getpid(), len(tensorflow_runtime._loaded), record


@pytest.mark.slow
def test_onnx_converts_in_tensorflows_sandboxed_child_after_it_dropped_the_model(model_dirs, tmp_path):
    from tasks.select_signature import select_signature  # Prefect: not in the children, which import this module

    model_dir = model_dirs["keras_export"]
    choice = select_signature.fn(inspection_job(str(model_dir), str(tmp_path)), None, None)
    folder = tmp_path / "onnx"
    folder.mkdir()
    source = ConversionSource(
        model_dir=choice.model_dir, tags=choice.tags, signature=choice.signature, model_format=choice.model_format,
        output_dir=str(folder), log_path=str(folder / "convert.log"),
    )
    sandbox = os_sandbox.for_validation([str(model_dir)], tmp_path, False)
    with shared_processes(validation_pools(ValidationRequest(source=str(model_dir))), sandbox) as processes:
        pid, loaded = run_isolated(_load, choice.model_dir, choice.tags, choice.signature.key, limits=LIMITS,
                                   label="load").value
        assert loaded == 1
        begin_target_stages()
        assert processes[TENSORFLOW].pid == pid  # kept for the conversion
        assert processes["onnxruntime"].pid is not None  # the runtimes warm up while it converts
        converted_in, loaded_after, record = run_isolated(
            _converted, source, limits=LIMITS, label="export-onnx", log_path=source.log_path,
            pool=conversion_pool(target("onnx")),
        ).value
        assert converted_in == pid and loaded_after == 0
        assert processes[TENSORFLOW].pid is None  # closed after its last job
    assert record.failure is None and Path(record.path).is_file() and record.path.startswith(str(folder))
    assert "Successfully converted" in Path(source.log_path).read_text() or record.converter_message

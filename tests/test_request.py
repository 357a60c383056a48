"""The request's shape as Prefect's form renders it, and the flat keys of the previous release."""

import pytest
from pydantic import ValidationError

from modelgate.execution.sandbox import limits_of
from modelgate.request import BenchmarkSettings, SandboxLimits, ValidationRequest
from modelgate.service.cli import _parser, _request_fields

COMMON = ["source", "signature", "targets", "inputs_path", "contract_path", "baseline"]
# A version folder and an opset have no empty value that reads better than "none given": 0 is a real version,
# and an opset of 0 would read as a number asked for.
KEPT_NULLABLE = {"model_version", "onnx_opset"}


@pytest.fixture(scope="module")
def form() -> dict:
    """The parameter schema of the flow, as Prefect builds it for the UI."""
    from prefect.utilities.callables import parameter_schema

    from flows.validate import validate_savedmodel

    return parameter_schema(validate_savedmodel).model_dump()


def _resolved(schema: dict, prop: dict) -> dict:
    ref = prop.get("$ref")
    return schema["definitions"][ref.rsplit("/", 1)[-1]] if ref else prop


def test_the_form_shows_the_common_fields_first_and_the_groups_as_objects(form):
    properties = form["definitions"]["ValidationRequest"]["properties"]
    assert list(properties)[:len(COMMON)] == COMMON
    assert list(properties)[-2:] == ["benchmark", "limits"]
    for group, names in (("benchmark", BenchmarkSettings.model_fields), ("limits", SandboxLimits.model_fields)):
        resolved = _resolved(form, properties[group])
        assert resolved["type"] == "object"
        assert list(resolved["properties"]) == list(names)


def test_no_field_is_nullable_but_the_kept_ones(form):
    """Prefect's form renders a nullable field as a type picker ('Property is type None')."""
    def nullable(properties: dict) -> set[str]:
        return {name for name, prop in properties.items()
                if any(option.get("type") == "null" for option in prop.get("anyOf", []))}

    definitions = form["definitions"]
    assert nullable(definitions["ValidationRequest"]["properties"]) == KEPT_NULLABLE
    assert nullable(definitions["BenchmarkSettings"]["properties"]) == set()
    assert nullable(definitions["SandboxLimits"]["properties"]) == set()


FLAT = {
    "benchmark": False, "benchmark_batch_sizes": [8, 1, 8], "benchmark_max_batch_size": 4,
    "benchmark_runtimes": ["tensorflow"], "benchmark_gpu": False, "intra_op_threads": 2, "inter_op_threads": 3,
    "benchmark_warmup": 2, "benchmark_window": 5, "benchmark_max_windows": 4, "benchmark_budget_s": 1.5,
    "model_timeout_s": 60, "memory_limit_mb": 512, "require_sandbox": True,
}
GROUPED = {
    "benchmark": {"enabled": False, "batch_sizes": [1, 8], "max_batch_size": 4, "runtimes": ["tensorflow"],
                  "gpu": False, "intra_op_threads": 2, "inter_op_threads": 3, "warmup": 2, "window": 5,
                  "max_windows": 4, "budget_s": 1.5},
    "limits": {"timeout_s": 60, "memory_limit_mb": 512, "require_sandbox": True},
}


def test_the_flat_keys_of_the_previous_release_build_the_same_request():
    assert ValidationRequest(source="m", **FLAT) == ValidationRequest(source="m", **GROUPED)
    assert ValidationRequest(source="m", benchmark=True, benchmark_warmup=1).benchmark.enabled is True
    # a flat key may join a group given in the new shape, as a deployment's request_fields and a run's own do
    mixed = ValidationRequest(source="m", benchmark={"window": 5}, benchmark_warmup=2)
    assert (mixed.benchmark.window, mixed.benchmark.warmup) == (5, 2)
    with pytest.raises(ValidationError, match="benchmark_warmup .* and benchmark.warmup disagree"):
        ValidationRequest(source="m", benchmark={"warmup": 5}, benchmark_warmup=2)


def test_null_of_the_previous_release_reads_as_the_empty_default():
    old = ValidationRequest(source="m", signature=None, tags=None, inputs_path=None, contract_path=None,
                            baseline=None, tracking_uri=None, register_as=None, alias=None,
                            benchmark_batch_sizes=None, intra_op_threads=None, memory_limit_mb=None)
    assert (old.signature, old.tags, old.inputs_path, old.contract_path) == ("", [], "", "")
    assert (old.baseline, old.tracking_uri, old.register_as, old.alias) == ("", "", "", "")
    assert old.benchmark == BenchmarkSettings() and old.limits == SandboxLimits()


def test_zero_is_automatic_and_a_small_memory_limit_is_refused():
    assert limits_of(ValidationRequest(source="m")).memory_limit_mb > 0
    with pytest.raises(ValidationError, match="under 64 MiB"):
        ValidationRequest(source="m", memory_limit_mb=32)


def test_every_flag_lands_in_its_group():
    args = _parser().parse_args([
        "validate", "m", "--no-benchmark", "--benchmark-batch-sizes", "1,4", "--max-batch-size", "8",
        "--benchmark-budget-s", "2", "--runtimes", "tensorflow,onnxruntime", "--threads", "2", "--no-gpu",
        "--require-sandbox", "--timeout", "30", "--memory-limit-mb", "256", "--baseline", "",
    ])
    request = ValidationRequest(**_request_fields(args, "m"))
    assert request.benchmark == BenchmarkSettings(enabled=False, batch_sizes=[1, 4], max_batch_size=8, budget_s=2,
                                                  runtimes=["tensorflow", "onnxruntime"], intra_op_threads=2, gpu=False)
    assert request.limits == SandboxLimits(timeout_s=30, memory_limit_mb=256, require_sandbox=True)
    assert request.baseline == ""  # --baseline '': no baseline
    defaults = ValidationRequest(**_request_fields(_parser().parse_args(["validate", "m"]), "m"))
    assert defaults == ValidationRequest(source="m")

"""The request's shape as Prefect's form renders it, and the keys of earlier releases."""

import pytest
from pydantic import ValidationError

from modelgate.execution.sandbox import limits_of
from modelgate.request import SECTIONS, BenchmarkSettings, DeprecatedRequestKey, SandboxLimits, ValidationRequest
from modelgate.service.cli import _parser, _request_fields
from modelgate.targets import registry

SECTION_ORDER = ["source", "model", "inputs", "checks", "baseline", "targets", "benchmark", "limits", "mlflow", "output"]


@pytest.fixture(scope="module")
def form() -> dict:
    """The parameter schema of the flow, as Prefect builds it for the UI."""
    from prefect.utilities.callables import parameter_schema

    from flows.validate import validate_savedmodel

    return parameter_schema(validate_savedmodel).model_dump()


def _resolved(schema: dict, prop: dict) -> dict:
    ref = prop.get("$ref")
    return schema["definitions"][ref.rsplit("/", 1)[-1]] if ref else prop


def test_the_form_is_ten_sections_each_an_object_of_its_fields(form):
    properties = form["definitions"]["ValidationRequest"]["properties"]
    assert list(properties) == SECTION_ORDER
    for section, model in SECTIONS.items():
        resolved = _resolved(form, properties[section])
        assert resolved["type"] == "object"
        assert list(resolved["properties"]) == list(model.model_fields)


def test_targets_are_a_section_per_target_with_its_typed_options(form):
    targets = form["definitions"]["ValidationRequest"]["properties"]["targets"]
    assert set(targets["properties"]) == set(registry())
    onnx = targets["properties"]["onnx"]["properties"]
    assert onnx["convert"]["default"] is True and onnx["requirement"]["enum"] == ["required", "optional"]
    assert onnx["options"]["properties"]["opset"]["type"] == "integer"
    assert "options" not in targets["properties"]["litert"]["properties"]  # no empty section for a target without any
    assert targets["properties"]["litert"]["properties"]["convert"]["default"] is False


def test_no_field_is_a_type_picker(form):
    """Prefect's form renders a union (nullable fields, number-or-mapping tolerances) as a type picker ('Property is
    type None'); a title repeated inside its own section reads twice."""
    def pickers(properties: dict) -> set[str]:
        return {name for name, prop in properties.items() if "anyOf" in prop or "oneOf" in prop}

    for name, definition in form["definitions"].items():
        assert pickers(definition.get("properties", {})) == set(), name
    sections = form["definitions"]["ValidationRequest"]["properties"]
    for section in SECTIONS:
        title = sections[section]["title"]
        titles = [prop["title"] for prop in _resolved(form, sections[section])["properties"].values()]
        assert not [field for field in titles if field.startswith(title)], section


def test_a_form_s_submission_converts_the_targets_ticked():
    submitted = {name: {"convert": name in ("onnx", "litert"), "requirement": "optional" if name == "litert" else
                        "required", "options": {}} for name in registry()}
    submitted["onnx"]["options"] = {"opset": 17}
    request = ValidationRequest(source="m", targets=submitted)
    assert list(request.targets) == ["litert", "onnx"] or set(request.targets) == {"litert", "onnx"}
    assert request.options_of(registry()["onnx"]).opset == 17
    assert request.requirement_of("litert") == "optional"
    with pytest.raises(ValidationError, match="targets.onnx.options"):
        ValidationRequest(source="m", targets={"onnx": {"options": {"opset": "x"}}})


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
    with pytest.warns(DeprecatedRequestKey, match="'model_timeout_s' is deprecated: use 'limits.timeout_s'"):
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
    assert (old.model.signature, old.model.tags, old.inputs.path, old.checks.contract_path) == ("", [], "", "")
    assert (old.baseline, old.mlflow.tracking_uri, old.mlflow.register_as, old.mlflow.alias) == ("", "", "", "")
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


def test_the_keys_of_the_first_target_and_the_top_level_ones_move_into_their_sections():
    with pytest.warns(DeprecatedRequestKey) as warned:
        old = ValidationRequest(source="m", signature="s", model_version=3, inputs_path="x.npz", seed=2, atol={"": 1e-5, "y": 0.1},
                                onnx_opset=17, onnx_external_data="always", onnx_requirement="optional", onnx_batches=3,
                                targets=["onnx", "litert"], optional_targets=["litert"],
                                target_criteria={"litert": {"max_p99_rel_diff": 0.2}}, report_path="r.json")
    assert any("'onnx_opset' is deprecated: use 'targets.onnx.options.opset'" in str(w.message) for w in warned)
    new = ValidationRequest(
        source="m", model={"signature": "s", "version": "3"}, inputs={"path": "x.npz", "seed": 2},
        checks={"atol": 1e-5, "output_atol": {"y": 0.1}, "comparison_batches": 3}, output={"report_path": "r.json"},
        targets={"onnx": {"requirement": "optional", "options": {"opset": 17, "external_data": "always"}},
                 "litert": {"requirement": "optional", "criteria": {"max_p99_rel_diff": 0.2}}})
    assert old == new
    assert (new.model.version_number, new.atol) == (3, {"": 1e-5, "y": 0.1})
    assert ValidationRequest(source="m", export_onnx=False).targets == {}
    assert list(ValidationRequest(source="m", targets=["all"]).targets) == list(registry())


def test_target_option_flags_come_from_each_target_s_options():
    args = _parser().parse_args(["validate", "m", "--targets", "onnx,onnx-fp16", "--onnx-opset", "17",
                                 "--onnx-external-data", "always", "--onnx-fp16-op-block-list", "Resize,TopK",
                                 "--optional-target", "onnx-fp16"])
    request = ValidationRequest(**_request_fields(args, "m"))
    assert request.targets["onnx"].options == {"opset": 17, "external_data": "always"}
    assert request.targets["onnx-fp16"].options == {"op_block_list": ["Resize", "TopK"]}
    assert request.requirement_of("onnx-fp16") == "optional"
    none = ValidationRequest(**_request_fields(_parser().parse_args(["validate", "m", "--targets", "none"]), "m"))
    assert none.targets == {}
    with pytest.raises(ValueError, match="--onnx-opset: onnx is not among the targets asked"):
        _request_fields(_parser().parse_args(["validate", "m", "--targets", "litert", "--onnx-opset", "17"]), "m")


def test_find_and_fix_flags_land_in_checks_and_each_target_s_remediation():
    args = _parser().parse_args(["validate", "m", "--targets", "onnx,onnx-fp16", "--optional-target", "onnx-fp16",
                                 "--localise", "--remediation-budget-s", "30", "--remediation", "onnx=apply"])
    request = ValidationRequest(**_request_fields(args, "m"))
    assert request.checks.localise and request.checks.remediation_budget_s == 30
    # auto: a passing variant stands for an optional target, is only reported for a required one.
    assert request.applies_remediation("onnx") and request.applies_remediation("onnx-fp16")
    assert not ValidationRequest(source="m", targets=["onnx"]).applies_remediation("onnx")
    with pytest.raises(ValueError, match="the mode is auto, apply or report"):
        _request_fields(_parser().parse_args(["validate", "m", "--remediation", "onnx=always"]), "m")
    with pytest.raises(ValueError, match="litert is not among the targets asked"):
        _request_fields(_parser().parse_args(["validate", "m", "--remediation", "litert=apply"]), "m")

"""The target and runtime registries, how a request picks targets, and how their criteria resolve."""

import numpy as np
import pytest
from pydantic import ValidationError

from modelgate import targets
from modelgate.criteria import Criteria
from modelgate.numerics.compare import compare_arrays, judged
from modelgate.report import ValidationReport
from modelgate.request import ValidationRequest
from modelgate.runtimes import registry as runtime_registry
from modelgate.stages import TargetComparison
from modelgate.targets import Target, in_conversion_order
from tasks.plan_targets import plan_targets
from tests.target_reports import comparison


def test_every_target_file_is_found_and_each_format_has_a_runtime():
    found = targets.registry()
    assert "onnx" in found
    formats = {runtime.artifact_format for runtime in runtime_registry().values()}
    for target in found.values():
        assert target.artifact_format in formats, f"{target.name}: no runtime runs {target.artifact_format}"
        assert target.parent is None or target.parent in found


def test_a_target_comes_after_its_parent_which_is_added_when_not_asked():
    names = [target.name for target in in_conversion_order(["all"])]
    for position, name in enumerate(names):
        parent = targets.target(name).parent
        assert parent is None or names.index(parent) < position
    if "onnx-fp16" in targets.registry():
        assert [t.name for t in in_conversion_order(["onnx-fp16"])] == ["onnx", "onnx-fp16"]


def test_the_target_that_converts_in_tensorflow_s_child_converts_first_with_its_children():
    # Only the first conversion can be the last job of TensorFlow's child (modelgate.execution.pools).
    assert [t.name for t in in_conversion_order(["litert", "onnx-fp16"])] == ["onnx", "onnx-fp16", "litert"]
    names = [t.name for t in in_conversion_order(["all"])]
    assert targets.target(names[0]).converts_in_reference_process
    assert [t.name for t in in_conversion_order(["openvino", "litert"])] == ["openvino", "litert"]


def test_an_unknown_target_is_a_usage_error_naming_the_known_ones():
    with pytest.raises(ValidationError, match="targets: unknown target tensorrt; the targets are .*onnx"):
        ValidationRequest(source="m", targets=["tensorrt"])
    with pytest.raises(ValidationError, match="optional_targets: unknown target onx"):
        ValidationRequest(source="m", optional_targets=["onx"])


def test_no_onnx_and_onnx_optional_keep_their_meaning_from_earlier_releases():
    assert ValidationRequest(source="m", export_onnx=False).conversion_targets() == []
    request = ValidationRequest(source="m", onnx_requirement="optional")
    assert request.requirement_of("onnx") == "optional"
    assert ValidationRequest(source="m", optional_targets=["onnx"]).requirement_of("onnx") == "optional"
    assert ValidationRequest(source="m").requirement_of("onnx") == "required"


def test_a_target_whose_package_is_missing_is_skipped_and_says_which(monkeypatch):
    absent = Target(name="absent", artifact_format="onnx", packages=("no_such_package_here",), module=__name__,
                    description="needs a package nobody installed")
    known = {**targets.registry(), "absent": absent}
    monkeypatch.setattr(targets, "registry", lambda: known)
    asked = plan_targets.fn(ValidationRequest(source="m", targets=["onnx", "absent"]))
    assert asked.runnable == ["onnx"]
    assert asked.sections["absent"].status == "skipped"
    assert asked.sections["absent"].message == "not converted: this environment lacks no_such_package_here"
    everything = plan_targets.fn(ValidationRequest(source="m", targets=["all"]))
    assert "absent" not in everything.sections  # 'all' means every target that can run here


def test_approximate_criteria_judge_their_own_figures_by_output():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((64, 10)).astype("float32")
    close = reference + rng.normal(0, 1e-3, reference.shape).astype("float32")
    result = compare_arrays(reference, close, 1e-6, 1e-6)
    assert not result.passed  # elementwise, float32 tolerances reject a float16-sized error
    loose = Criteria(elementwise=False, min_cosine_similarity=0.999, min_top1_agreement=0.95)
    assert judged("logits", result, loose).passed
    strict = Criteria(elementwise=False, min_cosine_similarity={"": 0.999, "logits": 0.9999999})
    verdict = judged("logits", result, strict)
    assert not verdict.passed and verdict.message.startswith("cosine_similarity 0.99999")
    assert verdict.message.endswith("at least 0.9999999 required")


@pytest.mark.parametrize("optional, verdict, check", [(["onnx"], "passed", "warning"), ([], "failed", "failed")])
def test_an_optional_target_that_failed_does_not_decide_the_verdict(optional, verdict, check):
    request = ValidationRequest(source="m", targets=["onnx"], optional_targets=optional)
    report = ValidationReport(source="m", request=request, workdir="w")
    report.targets = plan_targets.fn(request).sections
    missed = comparison("onnxruntime", "cpu", 0.3, 1e-4, 1e-3)
    TargetComparison(target="onnx", criteria=Criteria(atol=1e-4, rtol=1e-3), batches=4, comparisons={"onnxruntime/cpu": missed}).apply_to(
        report)
    report.conclude()
    assert report.status == verdict and report.targets["onnx"].status == "failed"
    assert {c.name: c.status for c in report.checks}["onnx_parity"] == check
    if verdict == "failed":
        assert report.verdict_line().startswith("failed: onnx_parity: onnx: outputs logits (max abs diff ")

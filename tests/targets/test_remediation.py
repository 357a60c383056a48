"""The remediation search: each target's own variants, and the search through the real flow on models that fail one
reduced-precision target for one reason (tests/remediation_models.py, tests/divergence_models.py), under a real
Prefect server and MLflow store."""

from __future__ import annotations

import subprocess
from functools import partial
from pathlib import Path

import pytest

from modelgate.criteria import Criteria
from modelgate.report import Localisation, TensorDivergence, VariantResult
from modelgate.request import ValidationRequest
from modelgate.stages import TargetComparison
from modelgate.targets import Variant, target
from modelgate.targets.onnx_fp16 import OVERFLOW_PRONE_OPS
from tasks.remediate_target import Attempt, remediate_target, search, summary_of
from tests.divergence_models import float16_overflow
from tests.flows import run_flow
from tests.remediation_models import int8_outlier


def _tensor(name: str, node: str, max_abs: float, passed: bool = True, position: int = 0) -> TensorDivergence:
    return TensorDivergence(tensorflow_name=f"{name}:0", op_type="MatMul", position=position, target_node=node,
                            reference_max_abs=max_abs, passed=passed)


def _located(first: TensorDivergence, upstream=(), downstream=()) -> Localisation:
    return Localisation(runtime="onnxruntime", verdict="localised", first=first, upstream=list(upstream),
                        downstream=list(downstream))


def test_float16_variants_keep_what_passes_its_range_first_then_the_diverging_op_then_its_path():
    fp16 = target("onnx-fp16")
    located = _located(_tensor("amplify/MatMul", "amplify/MatMul", 3e5, passed=False, position=3),
                       upstream=[_tensor("input", "input_cast", 1.0, position=1)],
                       downstream=[_tensor("amplify/BiasAdd", "amplify/Add", 3e5, passed=False, position=4),
                                   _tensor("shrink/MatMul", "shrink/MatMul", 4.0, passed=False, position=5)])
    found = fp16.variants(fp16.options(), located)
    assert [v.label for v in found] == [
        "2 overflowing ops and readers kept in float32", "the diverging op and readers kept in float32",
        "3 ops from the divergence on kept in float32", "ops past float16's range kept in float32",
        "Exp, Pow, Softmax and reductions kept in float32"]
    assert found[0].options.node_block_list == ["amplify/Add", "amplify/MatMul"]
    assert found[0].settings(fp16.options()) == {"node_block_list": ["amplify/Add", "amplify/MatMul"]}
    # Without a localisation: what passes float16's range, measured as it converts; the op types prone to overflow.
    assert [v.settings(fp16.options()) for v in fp16.variants(fp16.options(), None)] == [
        {"keep_out_of_range": True}, {"op_block_list": sorted(OVERFLOW_PRONE_OPS)}]


def test_int8_variants_exclude_the_diverging_then_the_lossy_nodes_then_go_per_channel_then_calibrate_on_all():
    int8 = target("onnx-int8")
    located = _located(_tensor("head/convolution", "head/convolution", 3.0, passed=False),
                       upstream=[_tensor("outlier/BiasAdd", "outlier/BiasAdd", 1e3)])
    found = int8.variants(int8.options(), located)
    assert [v.settings(int8.options()) for v in found] == [
        {"nodes_to_exclude": ["head/convolution", "outlier/BiasAdd"]}, {"exclude_lossy": True}, {"per_channel": True},
        {"extra_calibration_batches": 8}]
    assert [v.label for v in int8.variants(int8.options(), None)] == [
        "lossy activations kept float", "per-channel weights", "calibrated on the comparison batches too"]


def test_each_target_declares_only_variants_that_change_its_numerics():
    assert [v.settings(target("onnx").options()) for v in target("onnx").variants(target("onnx").options())] == [
        {"opset": 13}]
    assert [v.label for v in target("onnx-slim").variants(target("onnx-slim").options())] == ["fusions left out"]
    # float32 files whose converters expose no setting that changes their numerics (see their modules).
    assert target("litert").variants(target("litert").options()) == []
    assert target("openvino").variants(target("openvino").options()) == []


def test_the_search_stops_at_the_first_that_passes_and_leaves_to_the_budget_what_it_cannot_start():
    variants = [Variant(label, target("onnx-int8").options()) for label in ("first", "second", "third")]
    clock = iter([0.0, 0.0, 50.0, 100.0, 100.0]).__next__
    tried = []

    def attempt(index, variant, left):
        tried.append((variant.label, left))
        return Attempt(VariantResult(label=variant.label, status="failed", message="cosine 0.7"))

    attempts, spent = search(variants, attempt, 60, lambda variant: {}, clock)
    assert tried == [("first", 60.0), ("second", 10.0)] and spent == 100.0
    assert [a.result.status for a in attempts] == ["failed", "failed", "untried"]
    results = [a.result for a in attempts]
    assert results[2].message == "not started: the remediation budget of 60 s was spent"
    assert summary_of("onnx-int8", results, None, False, 60) == (
        "no variant passed (2 variants tried): first: cosine 0.7; second: cosine 0.7; left untried by the 60 s "
        "budget: third")

    def passes(index, variant, left):
        return Attempt(VariantResult(label=variant.label, status="passed", p50_ms=0.412, batch_size=4))

    attempts, _ = search(variants, passes, 60, lambda variant: {})
    assert [a.result.status for a in attempts] == ["passed", "untried", "untried"]
    assert attempts[1].result.message == "not needed: first passed first"
    assert summary_of("onnx-int8", [a.result for a in attempts], attempts[0].result, True, 60) == (
        "onnx-int8 passes as onnx-int8 (first): p50 0.41 ms at batch 4; 1 variant tried; it stands as the target")



def test_a_budget_too_small_to_start_a_variant_leaves_every_one_untried_and_says_so():
    request = ValidationRequest(source="model", checks={"remediation_budget_s": 1}, targets={"onnx-int8": {}})
    failed = TargetComparison(target="onnx-int8", criteria=Criteria())
    remedy = remediate_target.fn("onnx-int8", None, None, None, None, failed, None, request, "unused")
    assert [v.status for v in remedy.remediation.variants] == ["untried"] * 3 and remedy.artifact is None
    assert remedy.remediation.summary == (
        "no variant tried: the remediation budget of 1 s left too little to start one (lossy activations kept float, "
        "per-channel weights, calibrated on the comparison batches too)")


_run = partial(run_flow, baseline=None, checks={"comparison_batches": 3}, benchmark={"enabled": False})


def _remediated(model: Path, name: str, requirement: str, tracking_uri: str, workdir: Path):
    """One validation of `name` alone (with its parent): the report, the target's section and its passing variant."""
    report = _run(model, tracking_uri, workdir, targets={name: {"requirement": requirement}})
    section = report.targets[name]
    assert section.remediation is not None, section.message
    passed = next(v for v in section.remediation.variants if v.status == "passed")
    assert section.remediation.chosen == passed.label
    folder = Path(passed.conversion.path).parent
    assert folder.parent.name == "variants" and (folder / "conversion.json").is_file()
    assert passed.p50_ms > 0 and passed.batch_size
    written = Path(passed.conversion.path).read_bytes()  # its reproduce.sh writes the same file
    Path(passed.conversion.path).unlink()
    subprocess.run(["sh", str(folder / "reproduce.sh")], check=True, capture_output=True, timeout=300)
    assert Path(passed.conversion.path).read_bytes() == written
    assert section.remediation.summary.startswith(f"{name} passes as {name} ({passed.label}): cosine ")
    return report, section, passed


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_an_int8_file_failing_on_one_outlier_layer_passes_with_that_layer_kept_float_reported_beside_the_failure(
    tmp_path, tracking_uri, workdir
):
    report, section, passed = _remediated(int8_outlier(tmp_path / "int8_outlier"), "onnx-int8", "required",
                                          tracking_uri, workdir)
    remediation = section.remediation
    # Required, remediation auto: the variant is reported, the default conversion's failure decides.
    assert report.status == "failed" and section.status == "failed" and not remediation.applied
    assert next(c for c in report.checks if c.name == "onnx_int8_parity").status == "failed"
    assert "logits" in remediation.original_message and "reported only" in remediation.summary
    # The localisation's first diverging node (the head Conv, which reads the outlier tensor) and the node it
    # reads (the outlier Conv) kept float: the first variant, and it passes.
    assert passed == remediation.variants[0] and passed.label == "2 diverging ops kept float"
    assert section.localisation.first.target_node in passed.settings["nodes_to_exclude"]
    excluded = passed.conversion.details["excluded_nodes"].split(", ")
    assert any("/outlier" in node for node in excluded) and any("/head" in node for node in excluded)
    assert passed.comparisons["onnxruntime/cpu"].outputs["logits"].cosine_similarity > 0.98


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_float16_file_overflowing_in_one_layer_passes_with_that_layer_kept_float32_and_stands_when_optional(
    tmp_path, tracking_uri, workdir
):
    report, section, passed = _remediated(float16_overflow(tmp_path / "float16_overflow"), "onnx-fp16", "optional",
                                          tracking_uri, workdir)
    remediation = section.remediation
    assert remediation.applied  # optional, remediation auto: it stands
    # The nodes whose TensorFlow values pass 65504 (the localisation's), amplify's first: the first variant.
    assert passed == remediation.variants[0] and passed.label.endswith("overflowing ops and readers kept in float32")
    assert any("amplify" in node for node in passed.settings["node_block_list"])
    assert passed.conversion.details["nodes_kept_float32"] >= 7  # amplify's 3 ops to shrink's MatMul
    assert section.status == "passed" and section.conversion.path == passed.conversion.path
    assert section.message.startswith(f"the variant '{passed.label}' stands; as converted by default it failed: ")
    assert next(c for c in report.checks if c.name == "onnx_fp16_parity").status == "passed"
    assert "scores" in remediation.original_message  # the default conversion's failure is kept
    assert "; it stands as the target" in remediation.summary

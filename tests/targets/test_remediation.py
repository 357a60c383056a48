"""The remediation search: each target's own variants, and the search through the real flow on models that fail one
reduced-precision target for one reason (tests/remediation_models.py, tests/divergence_models.py), under a real
Prefect server and MLflow store."""

from __future__ import annotations

from modelgate.report import Localisation, TensorDivergence, VariantResult
from modelgate.targets import Variant, target
from tasks.remediate_target import Attempt, search, summary_of


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
        "2 overflowing ops kept in float32", "the diverging op kept in float32",
        "3 ops from the divergence on kept in float32", "Exp, Pow, Softmax and reductions kept in float32"]
    assert found[0].options.node_block_list == ["amplify/Add", "amplify/MatMul"]
    assert found[0].settings(fp16.options()) == {"node_block_list": ["amplify/Add", "amplify/MatMul"]}
    # Without a localisation only the op types prone to overflow are left to try.
    assert [v.label for v in fp16.variants(fp16.options(), None)] == [found[-1].label]


def test_int8_variants_exclude_the_diverging_nodes_then_go_per_channel_then_calibrate_on_every_batch():
    int8 = target("onnx-int8")
    located = _located(_tensor("head/convolution", "head/convolution", 3.0, passed=False),
                       upstream=[_tensor("outlier/BiasAdd", "outlier/BiasAdd", 1e3)])
    found = int8.variants(int8.options(), located)
    assert [v.settings(int8.options()) for v in found] == [
        {"nodes_to_exclude": ["head/convolution", "outlier/BiasAdd"]}, {"per_channel": True},
        {"calibration_batches": 0}]
    assert [v.label for v in int8.variants(int8.options(), None)] == ["per-channel weights", "calibrated on every batch"]


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

"""The first-divergence verdict on synthetic traces: what each verdict means, name matching, layouts, criteria."""

import re

import numpy as np
import pytest

from modelgate.criteria import Criteria
from modelgate.numerics.divergence import (
    JUMP,
    Judge,
    ReferenceTensor,
    TargetTensor,
    Trace,
    aligned,
    judge_tensor,
    localise,
    normalised,
    split_candidates,
)

RNG = np.random.default_rng(0)
FLOAT32 = Criteria(atol=1e-4, rtol=1e-3)
OPS = ["MatMul", "BiasAdd", "Relu", "MatMul", "BiasAdd", "Relu", "MatMul", "BiasAdd"]


def chain(count: int = 8, prefix: str = "StatefulPartitionedCall/model/") -> list[ReferenceTensor]:
    """A chain x -> t0 -> t1 -> ... as TensorFlow's trace lists it (graph input x is not traced)."""
    tensors, previous = [], "x"
    for index in range(count):
        name = f"{prefix}layer_{index // 3}/{OPS[index % len(OPS)]}_{index}"
        tensors.append(ReferenceTensor(f"{name}:0", OPS[index % len(OPS)], (previous, f"{name}/ReadVariableOp")))
        previous = name
    return tensors


def reference_trace(tensors: list[ReferenceTensor], shape=(4, 16)) -> Trace:
    values, value = {}, RNG.standard_normal(shape).astype(np.float32)
    for tensor in tensors:
        value = (value * 1.1 + 0.1).astype(np.float32)
        values[tensor.name] = value
    return Trace(tensors=tensors, values=values)


def target_trace(reference: Trace, errors: list[float], rename=lambda name: normalised(name) + ":0") -> Trace:
    """The target's tensors named as tf2onnx would name them, each value off by a relative error of its own."""
    tensors, values, previous = [], {}, "x"
    for tensor, error in zip(reference.tensors, errors):
        name = rename(tensor.name)
        ref = reference.values[tensor.name]
        values[name] = (ref + error * np.abs(ref).max() * np.sign(RNG.standard_normal(ref.shape))).astype(np.float32)
        tensors.append(TargetTensor(name, name.split(":")[0], tensor.op_type, (previous,), (name,)))
        previous = name
    return Trace(tensors=tensors, values=values)


def no_reprs(summary: str) -> None:
    assert not re.search(r"np\.|float64|float32\(|\[|TensorDivergence|None", summary), summary


def test_names_normalise_across_converters():
    assert normalised("StatefulPartitionedCall/model/dense/MatMul:0") == "model/dense/MatMul"
    assert normalised("StatefulPartitionedCall_1/StatefulPartitionedCall/a/Relu:0") == "a/Relu"
    assert normalised("PartitionedCall/a/Relu") == "a/Relu"
    assert normalised("a/split:1") == "a/split:1"  # another output of the op stays apart
    assert split_candidates("m/d/MatMul;m/d/BiasAdd;m/d/Relu") == ("m/d/MatMul", "m/d/BiasAdd", "m/d/Relu")


def test_a_faithful_target_agrees_with_every_tensor_matched():
    reference = reference_trace(chain())
    found = localise(reference, target_trace(reference, [1e-7] * 8), FLOAT32, "onnxruntime", rows=4)
    assert found.verdict == "agrees" and found.first is None
    assert found.matched == found.reference_tensors == found.target_tensors == 8 and not found.unmatched
    assert found.rows == 4 and found.runtime == "onnxruntime"
    assert found.summary.startswith("All 8 matched tensors are within the criteria (atol 0.0001 + rtol 0.001")
    no_reprs(found.summary)


def test_one_op_that_jumps_is_localised_with_its_inputs_and_the_path_to_the_outputs():
    reference = reference_trace(chain())
    errors = [1e-7, 2e-7, 1e-7, 0.05, 0.05, 0.06, 0.08, 0.1]
    found = localise(reference, target_trace(reference, errors), FLOAT32, "onnxruntime")
    assert found.verdict == "localised"
    first = found.first
    assert first.tensorflow_name == reference.tensors[3].name and first.op_type == "MatMul" and first.position == 3
    assert first.target_name == normalised(first.tensorflow_name) + ":0" and first.target_node
    assert not first.passed and first.relative_error == pytest.approx(0.05, rel=1e-3)
    assert [u.tensorflow_name for u in found.upstream] == [reference.tensors[2].name]
    assert found.upstream[0].passed
    assert [d.position for d in found.downstream] == [3, 4, 5, 6, 7]
    assert "First divergence at model/layer_1/MatMul_3 (MatMul)" in found.summary
    assert "relative error 0.05" in found.summary and re.search(r"at most 1(\.\d+)?e-07", found.summary)
    assert "downstream it reaches 0.1 at model/layer_2/BiasAdd_7 (BiasAdd), 4 compared tensors on" in found.summary
    no_reprs(found.summary)


def test_a_first_op_that_fails_on_the_graph_inputs_is_localised():
    reference = reference_trace(chain(4))
    found = localise(reference, target_trace(reference, [0.01, 0.01, 0.01, 0.01]), FLOAT32, "litert")
    assert found.verdict == "localised" and found.first.position == 0 and found.upstream == []
    assert "its inputs are the model's own" in found.summary


def test_an_error_that_grows_evenly_has_no_single_first_op():
    reference = reference_trace(chain())
    errors = [2e-4 * 1.6 ** i for i in range(8)]  # each step 1.6x the one before
    target = target_trace(reference, errors)
    off = [float(np.abs(target.values[t.name] - reference.values[r.name]).max())
           for t, r in zip(target.tensors, reference.tensors)]
    criteria = Criteria(atol=float(np.sqrt(off[3] * off[4])), rtol=0.0)  # crossed between the 4th and 5th
    found = localise(reference, target, criteria, "onnxruntime")
    assert found.verdict == "spread"
    assert found.first is not None and found.first.position == 4
    assert found.summary.startswith("No single first op: the error accumulates")
    assert "largest step" in found.summary
    no_reprs(found.summary)
    assert 1.6 < JUMP


def test_the_target_making_infinity_names_the_op_and_the_divergence():
    reference = reference_trace(chain())
    target = target_trace(reference, [1e-7] * 8)
    for tensor in target.tensors[2:]:
        target.values[tensor.name] = np.full_like(target.values[tensor.name], np.inf)
    target.values[target.tensors[5].name][:] = np.nan
    found = localise(reference, target, Criteria(elementwise=False, min_cosine_similarity=0.999), "onnxruntime")
    assert found.verdict == "nonfinite"
    origin = found.nonfinite_origin
    assert origin.side == "target" and origin.name == target.tensors[2].name and origin.op_type == "Relu"
    assert origin.tensorflow_name == reference.tensors[2].name
    assert found.first.position == 2 and found.first.nonfinite == "target"
    assert found.first.relative_error == float("inf")
    assert found.summary.startswith("The target makes NaN or infinity from finite inputs at model/layer_0/Relu_2:0 (Relu)")
    no_reprs(found.summary)


def test_tensorflow_making_nan_that_both_sides_carry_is_named_on_tensorflow_s_side():
    reference = reference_trace(chain())
    target = target_trace(reference, [1e-7] * 8)
    bad = reference.tensors[4].name
    reference.values[bad] = reference.values[bad].copy()
    reference.values[bad][0, :3] = np.nan
    target.values[normalised(bad) + ":0"][0, :3] = np.nan
    found = localise(reference, target, FLOAT32, "onnxruntime")
    assert found.verdict == "nonfinite" and found.first is None
    assert found.nonfinite_origin.side == "tensorflow" and found.nonfinite_origin.name == bad
    assert found.nonfinite_origin.op_type == "BiasAdd"
    assert found.downstream == [] and found.upstream == []
    assert "TensorFlow itself makes NaN or infinity from finite inputs at model/layer_1/BiasAdd_4" in found.summary


def test_names_that_match_nothing_are_listed_and_too_few_matches_say_so():
    reference = reference_trace(chain())
    target = target_trace(reference, [0.0] * 8, rename=lambda name: f"onnx::Node_{abs(hash(name)) % 1000}")
    found = localise(reference, target, FLOAT32, "openvino")
    assert found.verdict == "unmatched" and found.matched == 0
    assert len(found.unmatched) == 8 and found.unmatched[0].startswith("onnx::Node_")
    assert found.summary == ("only 0 of the 8 openvino tensors matched a TensorFlow tensor by name: too few to "
                             "say where the error starts")


def test_a_fused_litert_tensor_stands_for_the_last_op_of_its_fusion():
    reference = reference_trace(chain(3))
    names = [normalised(t.name) for t in reference.tensors]
    fused = ";".join(names)  # MatMul;BiasAdd;Relu fused into one op: its output is the Relu's
    value = reference.values[reference.tensors[2].name]
    target = Trace(tensors=[TargetTensor(fused, "FULLY_CONNECTED", "FULLY_CONNECTED", (), split_candidates(fused))],
                   values={fused: value})
    found = localise(reference, target, FLOAT32, "litert")
    assert found.matched == 1 and found.verdict == "agrees"
    assert found.downstream == [] and found.summary.startswith("All 1 matched tensors")


def test_a_channels_first_tensor_is_compared_in_tensorflow_s_layout():
    nhwc = RNG.standard_normal((2, 5, 6, 3)).astype(np.float32)
    assert np.array_equal(aligned(nhwc, np.transpose(nhwc, (0, 3, 1, 2))), nhwc)
    assert aligned(nhwc, nhwc.reshape(2, 3, 5, 6)).shape == nhwc.shape  # same size and axes: a permutation
    square = RNG.standard_normal((1, 4, 4, 4)).astype(np.float32)  # as many channels as rows: both layouts fit
    assert np.array_equal(aligned(square, square), square)
    assert np.array_equal(aligned(square, np.transpose(square, (0, 3, 1, 2))), square)
    assert aligned(nhwc, np.zeros((2, 7))) is None
    reference = Trace([ReferenceTensor("conv/Conv2D:0", "Conv2D", ("x",))], {"conv/Conv2D:0": nhwc})
    target = Trace([TargetTensor("conv/Conv2D:0", "conv/Conv2D", "Conv", ("x",), ("conv/Conv2D:0",))],
                   {"conv/Conv2D:0": np.transpose(nhwc, (0, 3, 1, 2))})
    assert localise(reference, target, FLOAT32, "onnxruntime").verdict == "agrees"


def test_a_tensor_whose_shape_cannot_be_aligned_is_listed_not_compared():
    reference = reference_trace(chain(3))
    target = target_trace(reference, [0.0] * 3)
    target.values[target.tensors[1].name] = np.zeros((7, 7), np.float32)
    found = localise(reference, target, FLOAT32, "onnxruntime")
    assert found.matched == 2 and any("shape [7, 7]" in u for u in found.unmatched)


def test_nearest_ancestors_are_found_through_tensors_not_compared():
    # x -> a -> b (unmatched) -> c ; x -> d -> c (c adds two branches)
    tensors = [ReferenceTensor("a:0", "MatMul", ("x",)), ReferenceTensor("b:0", "Relu", ("a",)),
               ReferenceTensor("d:0", "MatMul", ("x",)), ReferenceTensor("c:0", "AddV2", ("b", "d:0"))]
    reference = reference_trace(tensors)
    target = target_trace(reference, [1e-7, 1e-7, 2e-7, 0.3])
    del target.values["b:0"]
    target.tensors = [t for t in target.tensors if t.name != "b:0"]
    found = localise(reference, target, FLOAT32, "onnxruntime")
    assert found.verdict == "localised" and found.first.tensorflow_name == "c:0"
    assert [u.tensorflow_name for u in found.upstream] == ["a:0", "d:0"]


def test_statistical_criteria_judge_intermediates_by_cosine_and_p99():
    judge = Judge.of(Criteria(elementwise=False, min_cosine_similarity={"": 0.999, "logits": 0.99},
                              max_p99_rel_diff=0.1))
    assert (judge.min_cosine, judge.max_p99_rel) == (0.999, 0.1)
    ref = RNG.standard_normal(1000)
    assert judge_tensor(ref, ref * (1 + 1e-3), judge)["passed"]
    flipped = ref.copy()
    flipped[:300] *= -1
    figures = judge_tensor(ref, flipped, judge)
    assert not figures["passed"] and figures["cosine_similarity"] < 0.5
    assert judge.describe() == "cosine >= 0.999"
    # With a cosine, the p99 relative error is no judge of an intermediate: near zero (after a ReLU) an int8 step
    # is a large relative error whatever the conversion's quality.
    relu = np.maximum(ref, 0)
    stepped = np.round(relu * 30) / 30
    assert judge_tensor(relu, stepped, judge)["passed"]
    p99_only = Judge.of(Criteria(elementwise=False, max_p99_rel_diff=0.1))
    assert not judge_tensor(relu, stepped, p99_only)["passed"] and p99_only.describe() == "p99 relative error <= 0.1"


def test_empty_tolerances_take_the_graph_precision_s_defaults():
    assert (Judge.of(Criteria()).atol, Judge.of(Criteria()).rtol) == (1e-4, 1e-3)
    assert Judge.of(Criteria(), "float16").atol == 1e-2
    assert Judge.of(Criteria(atol={"": 0.5}, rtol=0.25)).atol == 0.5
    judge = Judge.of(Criteria(atol=0.1, rtol=0.0))
    assert judge_tensor(np.array([1.0, 2.0]), np.array([1.05, 2.0]), judge)["passed"]
    assert not judge_tensor(np.array([1.0, 2.0]), np.array([1.2, 2.0]), judge)["passed"]


def test_figures_of_a_tensor():
    figures = judge_tensor(np.array([1.0, -4.0, np.nan]), np.array([1.5, -4.0, np.nan]), Judge.of(FLOAT32))
    assert figures["max_abs_diff"] == 0.5 and figures["reference_max_abs"] == 4.0
    assert figures["relative_error"] == 0.125 and figures["nonfinite"] == "both" and not figures["passed"]
    assert figures["cosine_similarity"] is None
    figures = judge_tensor(np.zeros(3), np.zeros(3), Judge.of(FLOAT32))
    assert figures["relative_error"] == 0.0 and figures["cosine_similarity"] == 1.0 and figures["passed"]


def test_a_nan_tensorflow_hides_and_the_target_lets_through_is_nonfinite_with_both_named():
    reference = reference_trace(chain(5))
    target = target_trace(reference, [1e-7] * 5)
    made = reference.tensors[1].name
    reference.values[made] = reference.values[made].copy()
    reference.values[made][0, 0] = np.nan  # TensorFlow makes it, and its next op (a select) drops it
    target.values[normalised(made) + ":0"][0, 0] = np.nan
    target.values[normalised(reference.tensors[2].name) + ":0"][0, 0] = np.nan  # the target's does not
    found = localise(reference, target, FLOAT32, "onnxruntime")
    assert found.verdict == "nonfinite"
    assert found.nonfinite_origin.side == "tensorflow" and found.nonfinite_origin.name == made
    assert found.first.position == 2 and found.first.nonfinite == "target"
    assert "the first tensor to miss the criteria is model/layer_0/Relu_2 (Relu)" in found.summary


def test_an_infinity_tensorflow_makes_on_purpose_leaves_a_finite_divergence_its_verdict():
    reference = reference_trace(chain(6))
    target = target_trace(reference, [1e-7, 1e-7, 1e-7, 0.2, 0.2, 0.2])
    mask = reference.tensors[1].name
    reference.values[mask] = reference.values[mask].copy()
    reference.values[mask][0, 0] = -np.inf  # an attention mask's -inf, carried alike by both sides
    target.values[normalised(mask) + ":0"][0, 0] = -np.inf
    found = localise(reference, target, FLOAT32, "onnxruntime")
    assert found.verdict == "localised" and found.first.position == 3
    assert found.nonfinite_origin.side == "tensorflow"
    assert found.summary.endswith("TensorFlow itself makes NaN or infinity from finite inputs at "
                                  "model/layer_0/BiasAdd_1 (BiasAdd)")


def test_the_plot_shows_every_matched_tensor_and_marks_the_first_divergence(tmp_path):
    from modelgate.execution.trace_jobs import criteria_line
    from modelgate.numerics.divergence import localised_with_figures
    from modelgate.reporting.plots import divergence_plot

    reference = reference_trace(chain())
    target = target_trace(reference, [1e-7, 1e-7, 1e-7, 0.05, 0.05, 0.06, 0.08, 0.1])
    target.values[target.tensors[7].name][0, 0] = np.inf
    found, figures = localised_with_figures(reference, target, FLOAT32, "onnxruntime")
    assert [f.position for f in figures] == list(range(8))
    path = divergence_plot(found, figures, tmp_path / "divergence.png", "test", criteria_line(Judge.of(FLOAT32)))
    assert path.stat().st_size > 10_000
    assert criteria_line(Judge.of(Criteria(elementwise=False, min_cosine_similarity=0.99))) is None


def test_tensors_past_the_byte_cap_are_left_out_and_said_so():
    from modelgate.numerics.divergence import kept_within

    values = [(f"t{i}", np.zeros(10, np.float32)) for i in range(5)]  # 40 bytes each
    kept, left_out = kept_within(values, max_bytes=100)
    assert list(kept) == ["t0", "t1"] and left_out == ["t2", "t3", "t4"]
    reference = reference_trace(chain(4))
    target = target_trace(reference, [0.0] * 4)
    dropped = reference.tensors[3].name
    del reference.values[dropped]
    reference.left_out = [dropped]
    found = localise(reference, target, FLOAT32, "onnxruntime")
    assert found.left_out == [dropped] and found.matched == 3
    assert found.unmatched == [normalised(dropped) + ":0"]  # nothing of TensorFlow's to hold it against

import json

import numpy as np
import pytest

from modelgate.numerics.compare import UnknownOutputTolerance, check_tolerance_names, compare_arrays, compare_batches


def test_an_element_fails_only_where_it_exceeds_both_tolerances():
    reference = np.array([1000.0, 1.0, 0.0], dtype=np.float32)
    within_rtol = np.array([1000.5, 1.0, 0.0], dtype=np.float32)  # abs 0.5 > atol, rel 5e-4 <= rtol
    assert compare_arrays(reference, within_rtol, atol=1e-3, rtol=1e-3).passed
    beyond_both = np.array([1000.0, 1.1, 0.0], dtype=np.float32)
    result = compare_arrays(reference, beyond_both, atol=1e-3, rtol=1e-3)
    assert not result.passed and result.failing_elements == 1 and result.total_elements == 3
    assert abs(result.max_abs_diff - 0.1) < 1e-6


def test_zero_in_the_reference_does_not_blow_up_relative_error():
    result = compare_arrays(np.zeros(4), np.full(4, 1e-7), atol=1e-6, rtol=1e-3)
    assert result.passed
    assert np.isfinite(result.max_rel_diff)


def test_nan_where_the_reference_is_finite_fails_and_matching_nan_passes():
    assert not compare_arrays(np.array([1.0, 2.0]), np.array([1.0, np.nan]), atol=1, rtol=1).passed
    assert compare_arrays(np.array([np.nan, 2.0]), np.array([np.nan, 2.0]), atol=0, rtol=0).passed


def test_outputs_are_matched_by_name_not_position():
    reference = {"a": np.array([1.0]), "b": np.array([2.0])}
    swapped_order = {"b": np.array([2.0]), "a": np.array([1.0])}
    assert all(r.passed for r in compare_batches([reference], [swapped_order], 0, 0).values())
    renamed = compare_batches([reference], [{"a": np.array([1.0]), "c": np.array([2.0])}], 0, 0)
    assert not renamed["b"].passed and "missing" in renamed["b"].message
    assert not renamed["c"].passed


def test_shape_mismatch_fails_with_a_message():
    result = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), atol=1, rtol=1)
    assert not result.passed and "shape" in result.message


def test_per_output_tolerances_use_the_default_for_other_outputs():
    reference = {"tight": np.array([1.0, 2.0]), "loose": np.array([1.0, 2.0])}
    candidate = {"tight": np.array([1.01, 2.0]), "loose": np.array([1.01, 2.0])}
    results = compare_batches([reference], [candidate], atol={"": 1e-4, "loose": 0.1}, rtol={"": 1e-4})
    assert not results["tight"].passed and results["tight"].atol == 1e-4
    assert results["loose"].passed and results["loose"].atol == 0.1


def test_unknown_output_in_a_tolerance_is_a_clear_error():
    with pytest.raises(UnknownOutputTolerance, match="atol names logit, which the signature lacks; its outputs are logits"):
        check_tolerance_names({"": 1e-4, "logit": 1e-3}, ["logits"], "atol")
    check_tolerance_names(1e-4, ["logits"], "atol")


def test_figures_say_how_far_off_and_which_tolerance_would_have_passed():
    reference = np.array([[10.0, 0.0, -5.0, 1.0], [2.0, 3.0, 1.0, 0.5]])
    candidate = reference.copy()
    candidate[0, 0] = 10.5  # abs 0.5, rel 0.05
    candidate[1, 3] = 0.7   # abs 0.2, rel 0.4
    result = compare_arrays(reference, candidate, atol=1e-3, rtol=1e-3)
    assert not result.passed and result.failing_elements == 2 and result.failing_share == 0.25
    assert result.max_abs_diff == pytest.approx(0.5) and result.median_abs_diff == 0.0
    assert result.max_rel_diff == pytest.approx(0.4)
    # Each element fails only where it exceeds both: atol must cover both errors with rtol 1e-3 as set...
    assert result.min_passing_atol == pytest.approx(0.5)
    # ... and rtol must cover both relative errors with atol 1e-3 as set.
    assert result.min_passing_rtol == pytest.approx(0.4)
    assert compare_arrays(reference, candidate, atol=result.min_passing_atol, rtol=1e-3).passed
    assert compare_arrays(reference, candidate, atol=1e-3, rtol=result.min_passing_rtol).passed
    assert 0.99 < result.cosine_similarity < 1.0
    assert result.top1_agreement == 1.0 and result.top5_agreement is None  # 4 classes: top-5 says nothing


def test_top_k_agreement_counts_rows_whose_ranking_changed():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 10))
    candidate = reference.copy()
    top = np.argmax(reference[0])
    candidate[0, top] = reference[0].min() - 1  # row 0's winner drops to last place
    result = compare_arrays(reference, candidate, atol=1e-3, rtol=1e-3)
    assert result.top1_agreement == 0.75 and result.top5_agreement == 0.75
    assert compare_arrays(reference, reference, 0, 0).top5_agreement == 1.0


def test_batches_are_compared_together_and_a_shape_change_in_one_batch_fails():
    references = [{"y": np.ones((2, 3))}, {"y": np.full((2, 3), 2.0)}]
    candidates = [{"y": np.ones((2, 3))}, {"y": np.full((2, 3), 2.5)}]
    result = compare_batches(references, candidates, atol=0.1, rtol=0.1)["y"]
    assert not result.passed and result.total_elements == 12 and result.failing_elements == 6
    reshaped = compare_batches(references, [{"y": np.ones((2, 3))}, {"y": np.ones((3, 2))}], 1, 1)["y"]
    assert not reshaped.passed and reshaped.message.startswith("batch 1: shape [3, 2]")
    missing = compare_batches(references, [{"y": np.ones((2, 3))}, {"z": np.ones((2, 3))}], 1, 1)
    assert not missing["y"].passed and not missing["z"].passed


def test_infinite_error_reports_infinite_figures():
    result = compare_arrays(np.array([1.0, 2.0]), np.array([np.inf, 2.0]), atol=1, rtol=1)
    assert not result.passed and result.max_abs_diff == float("inf") and result.min_passing_atol == float("inf")
    assert result.cosine_similarity is None
    assert json.loads(result.model_dump_json())["max_abs_diff"] == "Infinity"  # not null, which reads 'unknown'

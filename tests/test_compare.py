import numpy as np

from modelgate.compare import compare_arrays, compare_outputs


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
    assert all(r.passed for r in compare_outputs(reference, swapped_order, 0, 0).values())
    renamed = compare_outputs(reference, {"a": np.array([1.0]), "c": np.array([2.0])}, 0, 0)
    assert not renamed["b"].passed and "missing" in renamed["b"].message
    assert not renamed["c"].passed


def test_shape_mismatch_fails_with_a_message():
    result = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), atol=1, rtol=1)
    assert not result.passed and "shape" in result.message

"""Validation rules as named checks with a severity: each problem says what was expected and what was found."""

import json

import numpy as np
import pytest

from modelgate.description import MetaGraphInfo, SignatureSpec, TensorSpec
from modelgate.execution.jobs import inspection_job
from modelgate.model.contract import (
    ContractError,
    _normalized_dtype,
    check_compatibility,
    check_contract,
    load_contract,
    signature_rules,
)
from modelgate.numerics.checks import check_batch_consistency, check_wrapper_parity
from modelgate.report import Check, ValidationReport
from modelgate.request import ValidationRequest
from modelgate.stages import BaselineChoice
from tasks.check_contract import check_signature
from tasks.select_signature import select_signature


def _spec(dtype="float32", shape=(None, 4), tensor=None):
    return TensorSpec(dtype=dtype, shape=None if shape is None else list(shape), tensor_name=tensor)


def _signature(inputs, outputs, key="serving_default"):
    return SignatureSpec(key=key, method_name="tensorflow/serving/predict", inputs=inputs, outputs=outputs)


def _by_name(checks):
    return {check.name: check for check in checks}


SCORER = _signature({"features": _spec(tensor="features:0")}, {"scores": _spec(shape=(None, 2), tensor="scores:0")})


def test_severity_sets_what_a_broken_rule_costs():
    assert Check(name="a", status="warning", message="").severity == "warning"
    assert Check(name="a", status="failed", message="").severity == "error"
    report = ValidationReport(source=".", request=ValidationRequest(source="."), workdir=".")
    report.checks = [Check(name="known_rank", status="warning", message="")]
    report.conclude()
    assert report.status == "passed"


def test_a_clean_signature_passes_every_rule():
    checks = _by_name(signature_rules(SCORER))
    assert {name: check.status for name, check in checks.items()} == {
        "tensor_dtypes": "passed", "declared_shapes": "passed", "known_rank": "passed", "dynamic_batch": "passed",
        "meaningful_output_names": "passed", "unique_tensor_names": "passed",
    }


def test_generated_names_fixed_batch_and_unknown_rank_warn(model_dirs, tmp_path):
    choice = select_signature.fn(inspection_job(str(model_dirs["unnamed_fixed_batch"]), str(tmp_path)), None, None)
    checks = _by_name(signature_rules(choice.signature))
    assert checks["meaningful_output_names"].status == "warning"
    assert "output 'output_0': expected a name that says what it holds" in checks["meaningful_output_names"].message
    assert checks["dynamic_batch"].status == "warning"
    assert checks["dynamic_batch"].message == "input 'x': expected a dynamic batch dimension (None), found fixed size 1"
    unknown = _by_name(signature_rules(_signature({"anything": _spec(shape=None)}, {"total": _spec(shape=())})))
    assert unknown["known_rank"].status == "warning" and "input 'anything'" in unknown["known_rank"].message


def test_duplicate_names_and_unknown_dtypes_are_errors():
    shared = _signature(
        {"x": _spec(tensor="x:0"), "also_x": _spec(tensor="x:0"), "y": _spec(tensor="in_y:0")},
        {"y": _spec(tensor="out:0"), "odd": _spec(dtype="unknown(99)", tensor="odd:0")},
    )
    checks = _by_name(signature_rules(shared))
    assert checks["unique_tensor_names"].status == "failed"
    assert "'y': expected an input or an output, found both names used" in checks["unique_tensor_names"].message
    assert "inputs x, also_x: expected one graph tensor each, found all bound to x:0" in checks["unique_tensor_names"].message
    assert checks["tensor_dtypes"].status == "failed"
    assert checks["tensor_dtypes"].message == "output 'odd': expected a TensorFlow dtype, found unknown(99)"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_contract_file_yaml_or_json(tmp_path, suffix):
    contract = {"inputs": {"features": {"dtype": "float32", "shape": [None, 4]}},
                "outputs": {"scores": {"dtype": "float", "shape": [None, 2]}}}
    path = tmp_path / f"contract{suffix}"
    path.write_text(json.dumps(contract) if suffix == ".json" else
                    "inputs:\n  features: {dtype: float32, shape: [null, 4]}\n"
                    "outputs:\n  scores: {dtype: float, shape: [null, 2]}\n")
    check = check_contract(SCORER, load_contract(path), str(path))
    assert check.status == "passed", check.message


def test_contract_dtypes_take_the_names_tensorflow_takes():
    from tensorflow.python.framework import dtypes

    tf_names = {name: dtype.name for name, dtype in dtypes._STRING_TO_TF.items() if not name.endswith("_ref")}
    assert {name: _normalized_dtype(name) for name in tf_names} == tf_names


def _assert_problems(check, *expected):
    """A check's message lists its problems joined by '; ': every expected one must be among them."""
    problems = check.message.split("; ")
    missing = [problem for problem in expected if problem not in problems]
    assert not missing, f"missing {missing}; found {problems}"


def test_contract_mismatches_say_expected_and_found(tmp_path):
    path = tmp_path / "contract.yaml"
    path.write_text("signature: predict\ninputs:\n  features: {dtype: int64, shape: [null, 8]}\n  mask: {dtype: bool}\n"
                    "outputs:\n  scores: {shape: [null, null]}\n")
    check = check_contract(SCORER, load_contract(path), str(path))
    assert check.status == "failed" and check.severity == "error"
    _assert_problems(
        check,
        "expected signature 'predict', found 'serving_default' validated",
        "input 'features': expected dtype int64, found float32",
        "input 'features': expected shape [None, 8], found [None, 4] (None = dynamic)",
        "input 'mask': expected, found no such input (the signature has features)",
        "output 'scores': expected shape [None, None], found [None, 2] (None = dynamic)",
    )


def test_a_bad_contract_file_is_a_clear_error(tmp_path):
    with pytest.raises(ContractError, match="does not exist"):
        load_contract(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs:\n  x: {dtype: float32, rank: 2}\n")
    with pytest.raises(ContractError, match="inputs.x.rank: Extra inputs are not permitted"):
        load_contract(bad)
    bad.write_text("inputs: [unclosed\n")
    with pytest.raises(ContractError, match="neither YAML nor JSON"):
        load_contract(bad)


def _meta_graph(*signatures):
    return MetaGraphInfo(tags=["serve"], signatures={s.key: s for s in signatures}, ops=[])


def test_compatibility_breaking_changes_are_errors_and_additions_notes():
    before = _meta_graph(SCORER, _signature({"x": _spec()}, {"y": _spec()}, key="legacy"))
    after = _meta_graph(
        _signature(
            {"features": _spec(dtype="float64"), "extra": _spec()},
            {"scores": _spec(shape=(None, 2, 1)), "confidence": _spec(shape=(None,))},
        ),
        _signature({"x": _spec()}, {"y": _spec()}, key="embed"),
    )
    check = check_compatibility(before, after, "v1")
    assert check.status == "failed"
    _assert_problems(
        check,
        "signature 'legacy' removed: expected as before, found signatures embed, serving_default",
        "signature 'serving_default' input 'features': expected dtype float32 as before, found float64",
        "signature 'serving_default' input 'extra' is new: float32 [None, 4]",
        "signature 'serving_default' output 'scores': expected rank 2 as before, found 3",
        "signature 'serving_default' output 'confidence' is new: float32 [None] (compatible)",
        "signature 'embed' is new",
    )


def test_compatible_changes_pass_with_notes():
    before = _meta_graph(_signature({"x": _spec(shape=(None, 4))}, {"y": _spec(shape=(None, None))}))
    after = _meta_graph(_signature({"x": _spec(shape=(None, None))}, {"y": _spec(shape=(None, 3)), "z": _spec()}))
    check = check_compatibility(before, after, "v1")
    assert check.status == "passed", check.message
    assert "input 'x' dimension 1: expected 4 as before, found dynamic (compatible)" in check.message
    narrowed = check_compatibility(after, before, "v2")
    assert "input 'x' dimension 1: expected dynamic as before, found 4" in narrowed.message
    assert narrowed.status == "failed"


def test_check_signature_stage_skips_what_was_not_asked(model_dirs, tmp_path):
    choice = select_signature.fn(inspection_job(str(model_dirs["serving_base"]), str(tmp_path)), None, None)
    no_baseline = BaselineChoice(skipped_reason="no baseline asked")
    checks = _by_name(check_signature.fn(choice, ValidationRequest(source="unused"), no_baseline, str(tmp_path)).checks)
    assert checks["contract"].status == "skipped" and checks["signature_compatibility"].status == "skipped"
    assert checks["signature_compatibility"].message == "no baseline asked"
    previous = str(model_dirs["serving_base"] / "1")
    compared = check_signature.fn(choice, ValidationRequest(source="unused"),
                                  BaselineChoice(source=previous, model_dir=previous), str(tmp_path))
    compatibility = _by_name(compared.checks)["signature_compatibility"]
    assert compatibility.status == "passed" and "output 'confidence' is new" in compatibility.message


def _rows_alone_differ(feeds):
    x = feeds["x"]
    return {"y": x - x.mean(axis=0), "label": np.array([b"a"] * len(x), dtype=object)}


def test_batch_consistency_compares_each_row_with_the_row_alone():
    signature = _signature({"x": _spec(shape=(None, 2))}, {"y": _spec(shape=(None, 2)), "label": _spec("string", (None,))})
    feeds = {"x": np.arange(6, dtype="float32").reshape(3, 2)}
    consistent = check_batch_consistency(lambda f: {"y": f["x"] * 2, "label": np.array([b"a"] * len(f["x"]), dtype=object)},
                                         signature, feeds, {"y": feeds["x"] * 2, "label": np.array([b"a"] * 3, dtype=object)},
                                         1e-4, 1e-3)
    assert consistent.status == "passed", consistent.message
    batched = _rows_alone_differ(feeds)
    inconsistent = check_batch_consistency(_rows_alone_differ, signature, feeds, batched, 1e-4, 1e-3)
    assert inconsistent.status == "failed"
    assert inconsistent.message.startswith("row 0 of a batch of 3, output 'y': expected the row run alone within "
                                           "atol=0.0001, rtol=0.001, or 0.001 of the output's largest magnitude 2, "
                                           "found max abs diff 2")
    single = check_batch_consistency(_rows_alone_differ, signature, {"x": feeds["x"][:1]}, batched, 1e-4, 1e-3)
    assert single.status == "skipped" and single.message == "the inputs hold a batch of 1"


def test_batch_consistency_judges_a_long_reduction_against_the_output_scale():
    """A batch and a single row summing 102,400 products in another order differ by float epsilons of the
    output's magnitude; that is no batch dependence. The figures are reported either way."""
    signature = _signature({"x": _spec(shape=(None, 4))}, {"y": _spec(shape=(None, 2))})
    feeds = {"x": np.arange(16, dtype="float32").reshape(4, 4)}
    scale = 974.0
    batched = {"y": np.array([[scale, 0.5]] * 4, dtype="float32")}
    summed_in_another_order = {"y": np.array([[scale + 0.0066, 0.5 + 0.0066]], dtype="float32")}
    check = check_batch_consistency(lambda f: summed_in_another_order, signature, feeds, batched, 1e-4, 1e-3)
    assert check.status == "passed", check.message
    assert "'y' differs by at most 0.0066 (6.8e-06 of its largest magnitude 974)" in check.message
    leaking = {"y": np.array([[scale * 0.99, 0.5]], dtype="float32")}
    mixed = check_batch_consistency(lambda f: leaking, signature, feeds, batched, 1e-4, 1e-3)
    assert mixed.status == "failed" and "'y' differs by at most 9.74 (0.01 of its largest magnitude 974)" in mixed.message


def test_wrapper_parity_is_exact_or_within_rtol_of_the_output_scale():
    raw = {"y": np.array([[100.0, -3.0]], dtype="float32")}
    assert check_wrapper_parity(raw, {"y": raw["y"].copy()}, 1e-3).message.endswith("bit for bit")
    last_bits = check_wrapper_parity(raw, {"y": raw["y"] + np.float32(4e-5)}, 1e-3)
    assert last_bits.status == "passed" and "not bit for bit" in last_bits.message
    assert "'y' differs in its last bits: by at most 4.01e-05 (4e-07 of its largest magnitude 100)" in last_bits.message
    another_model = check_wrapper_parity(raw, {"y": raw["y"] * 1.01}, 1e-3)
    assert another_model.status == "failed" and "output 'y'" in another_model.message
    assert check_wrapper_parity(raw, {}, 1e-3).status == "failed"

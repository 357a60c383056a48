import pytest

from modelgate.errors import ModelgateError, NotASavedModel, SignatureNotFound, UnsafeModel
from modelgate.execution.jobs import inspection_job
from modelgate.request import ValidationRequest
from tasks.inspect_model import inspect_model
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature


def _select(model_dir, workdir, key=None, tags=None):
    return select_signature.fn(inspection_job(str(model_dir), str(workdir)), key, tags)


def test_keras_export_uses_serving_default(model_dirs, tmp_path):
    choice = _select(model_dirs["keras_export"], tmp_path)
    assert choice.signature.key == "serving_default"
    assert choice.tags == ["serve"]
    assert set(choice.signature.inputs) == {"features", "context"}
    assert choice.signature.inputs["features"].shape == [None, 16]
    assert choice.signature.outputs["probabilities"].dtype == "float32"
    assert "__saved_model_init_op" not in choice.meta_graph.signatures
    assert choice.checks[0].status == "passed"


def test_only_custom_signature_falls_back_with_a_warning(model_dirs, tmp_path):
    choice = _select(model_dirs["custom_signature"], tmp_path)
    assert choice.signature.key == "my_custom_signature"
    assert set(choice.signature.inputs) == {"input1", "input2"}
    assert set(choice.signature.outputs) == {"output", "auxiliary_output"}
    assert choice.checks[0].status == "warning"
    assert "my_custom_signature" in choice.checks[0].message


def test_two_candidates_without_default_is_an_error_listing_both(model_dirs, tmp_path):
    with pytest.raises(SignatureNotFound) as error:
        _select(model_dirs["two_candidates"], tmp_path)
    assert "embed" in str(error.value) and "predict" in str(error.value)


def test_explicit_key_is_used_and_a_missing_one_lists_the_keys(model_dirs, tmp_path):
    assert _select(model_dirs["two_candidates"], tmp_path, key="embed").signature.key == "embed"
    with pytest.raises(SignatureNotFound, match="available signatures: embed, predict"):
        _select(model_dirs["two_candidates"], tmp_path, key="nope")


def test_missing_tag_set_lists_the_available_ones(model_dirs, tmp_path):
    with pytest.raises(SignatureNotFound, match="available tag-sets: serve"):
        _select(model_dirs["keras_export"], tmp_path, tags=["gpu"])


def test_unknown_rank_and_dims_are_kept(model_dirs, tmp_path):
    signature = _select(model_dirs["unknown_dims"], tmp_path).signature
    assert signature.inputs["anything"].shape is None
    assert signature.inputs["ids"].shape == [None, None, 3]
    assert signature.inputs["ids"].dtype == "int32"


def test_not_a_saved_model(tmp_path):
    with pytest.raises(NotASavedModel, match="empty directory"):
        inspection_job(str(tmp_path), str(tmp_path))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(NotASavedModel, match="not a SavedModel .* found notes.txt"):
        inspection_job(str(tmp_path), str(tmp_path))
    with pytest.raises(NotASavedModel, match="no such directory"):
        inspection_job(str(tmp_path / "absent"), str(tmp_path))
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(NotASavedModel):
        inspection_job(str(tmp_path), str(tmp_path))


def test_the_inspect_stage_raises_what_the_reading_raised_in_its_child(model_dirs, tmp_path):
    """The reading runs in a child process (the TensorFlow pool's, in a validation), so that the flow's own never
    imports TensorFlow; its errors keep their class and message, and so the verdict they lead to."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("not a model")
    request = ValidationRequest(source=str(model_dir))
    with pytest.raises(NotASavedModel, match="^.*/model: not a SavedModel .* found notes.txt$"):
        inspect_model.fn(str(model_dir), request, str(tmp_path))
    unknown_library = request.model_copy(update={"model": request.model.model_copy(update={"op_libraries": ["no_such_op_library"]})})
    with pytest.raises(ModelgateError, match="^--op-library no_such_op_library: cannot import it") as raised:
        inspect_model.fn(str(model_dirs["keras_export"]), unknown_library, str(tmp_path))
    assert type(raised.value) is ModelgateError


def test_ops_are_listed_and_file_reading_models_are_refused(model_dirs, tmp_path):
    choice = _select(model_dirs["reads_files"], tmp_path)
    assert "ReadFile" in choice.meta_graph.ops
    assert "ReadFile" in choice.meta_graph.op_scan.reachable["signature serving_default"].ops
    assert [finding.op for finding in choice.meta_graph.op_scan.refused] == ["ReadFile"]
    with pytest.raises(UnsafeModel, match="ReadFile .*reached from signature serving_default.*takes a file") as refusal:
        scan_ops.fn(choice, [])
    assert refusal.value.check == "op_safety"
    assert scan_ops.fn(choice, ["ReadFile"]).checks[0].status == "warning"


def test_restore_ops_used_by_loading_are_not_refused(model_dirs, tmp_path):
    choice = _select(model_dirs["keras_export"], tmp_path)
    scan = choice.meta_graph.op_scan
    assert "RestoreV2" in scan.reachable["restore"].ops
    assert "RestoreV2" not in scan.reachable["signature serving_default"].ops
    assert scan.refused == [] and scan.unregistered == []
    assert scan_ops.fn(choice, []).checks[0].status == "passed"

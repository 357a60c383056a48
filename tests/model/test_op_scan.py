"""The default-deny op scan: attackers' SavedModels are refused on op_safety before any model code runs, with
the op, where it is, what reaches it and the rule; real architectures pass; the allowlist moves only when a
person has looked at what a new TensorFlow adds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from modelgate.errors import MissingOps, UnsafeModel
from modelgate.execution.jobs import inspection_job
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.op_allowlist import (
    REVIEWED_STATEFUL_OPS,
    TENSORFLOW_TEXT_UNPREFIXED_OPS,
    package_registering,
)
from modelgate.request import ValidationRequest
from modelgate.service import cli
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature
from tests.benign_models import BENIGN_ARCHITECTURES
from tests.unsafe_models import TRACE_DIR, UNSAFE_MODELS

REVIEWED_LIST = Path(__file__).with_name("computation_ops.txt")
TESTS_MODELS_BENIGN = [
    "keras_export", "custom_signature", "two_candidates", "nan_outputs", "string_input", "unknown_dims", "tf1_graph",
    "tf1_pbtxt", "keras2_save", "serving_base", "renamed_input", "unnamed_fixed_batch", "batch_mixing", "hangs",
    "aborts", "eats_memory",
]
INIT_ATTACKS = {"init_op_writes", "table_outside_assets"}


def _tensorflow_text_or_skip():
    try:
        import tensorflow_text  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"tensorflow-text is not installed (the text extra): {exc}")


@pytest.fixture(scope="session")
def unsafe_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unsafe")
    return {name: attack.build(root / name) for name, attack in UNSAFE_MODELS.items()}


@pytest.fixture(scope="session")
def architectures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("architectures")
    return {name: build(root / name) for name, build in BENIGN_ARCHITECTURES.items()}


@pytest.fixture(scope="session")
def tensorflow_text_model(tmp_path_factory) -> Path:
    _tensorflow_text_or_skip()
    from tests.benign_models import tensorflow_text

    return tensorflow_text(tmp_path_factory.mktemp("tf_text") / "model")


def _inspect(model_dir, **fields):
    """Inspection as the flow runs it, with a folder of its own for a loadable copy the model may need."""
    return inspection_job(str(model_dir), tempfile.mkdtemp(dir=Path(model_dir).parent), **fields)


def _choice(model_dir, op_libraries=()):
    return select_signature.fn(_inspect(model_dir, op_libraries=list(op_libraries)), None, None)


def _edited_copy(model_dir: Path, target: Path, edit) -> Path:
    """A copy of the model whose saved_model.pb `edit` changed, as an attacker editing the protobuf would."""
    import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(model_dir, target)
    proto = saved_model_pb2.SavedModel.FromString((target / "saved_model.pb").read_bytes())
    edit(proto.meta_graphs[0])
    (target / "saved_model.pb").write_bytes(proto.SerializeToString())
    return target


# --- the allowlist ---

def test_the_derived_computation_set_is_the_reviewed_one():
    """Fails when a TensorFlow's registry would let new ops in (or drop some) without anyone looking: review
    the difference, then rewrite the list with `python -m modelgate.model.op_allowlist > tests/model/computation_ops.txt`.
    A process of its own, so that no op library a test imported counts."""
    derived = subprocess.run(
        [sys.executable, "-m", "modelgate.model.op_allowlist"], capture_output=True, text=True, check=True, timeout=300,
    ).stdout.split()
    reviewed = REVIEWED_LIST.read_text().split()
    assert reviewed == sorted(reviewed)
    added, dropped = sorted(set(derived) - set(reviewed)), sorted(set(reviewed) - set(derived))
    assert not added and not dropped, f"ops the registry would newly allow: {added}; no longer derived: {dropped}"
    for op in ("ReadFile", "WriteFile", "MatchingFiles", "PyFuncStateless", "DatasetFromGraph", "ImmutableConst",
               "DebugIdentity", "DecodeProtoV2", "RegisterDataset", "SaveV2", "PrintV2", "EagerPyFunc"):
        assert op not in reviewed, op
    for op in ("MatMul", "Conv2D", "StatelessWhile", "PartitionedCall", "StaticRegexReplace", "ParseExampleV2"):
        assert op in reviewed, op


def test_every_reviewed_stateful_op_is_a_registered_stateful_op():
    """A misspelt name in the reviewed set would allow nothing and hide that it was meant to."""
    from tensorflow.python.framework import op_def_registry

    import_tensorflow()
    core = REVIEWED_STATEFUL_OPS - TENSORFLOW_TEXT_UNPREFIXED_OPS
    unknown = sorted(op for op in core if op_def_registry.get(op) is None)
    assert unknown == []
    stateless = sorted(op for op in core if not op_def_registry.get(op).is_stateful)
    assert stateless == ["InitializeTableFromTextFile"]  # the one-form rule holds it to assets all the same


# --- attackers' models ---

@pytest.mark.parametrize("name", list(UNSAFE_MODELS))
def test_an_unsafe_model_is_refused_with_the_op_where_it_is_what_reaches_it_and_the_rule(name, unsafe_models):
    op, rule = UNSAFE_MODELS[name].op, UNSAFE_MODELS[name].rule
    choice = _choice(unsafe_models[name])
    findings = [finding for finding in choice.meta_graph.op_scan.refused if finding.op == op]
    assert findings and rule in findings[0].rule, choice.meta_graph.op_scan.refused
    entry_point = "init" if name in INIT_ATTACKS else "signature serving_default"
    assert entry_point in findings[0].reached_from
    with pytest.raises(UnsafeModel) as refusal:
        scan_ops.fn(choice, [])
    assert refusal.value.check == "op_safety"
    message = str(refusal.value)
    where = f"in function {findings[0].function}" if findings[0].function else "in the graph"
    assert f"{op} (node {findings[0].node} {where}, reached from {entry_point}" in message and rule in message


def test_write_file_hidden_in_a_dataset_map_function_is_found_in_that_function(unsafe_models):
    finding = _choice(unsafe_models["write_in_dataset_map"]).meta_graph.op_scan.refused[0]
    assert finding.op == "WriteFile" and "Dataset_map" in finding.function


def test_an_allowed_op_passes_with_a_warning_naming_it(unsafe_models):
    check = scan_ops.fn(_choice(unsafe_models["writes_file"]), ["WriteFile"]).checks[0]
    assert check.name == "op_safety" and check.status == "warning"
    assert "refused ops allowed by the request: WriteFile" in check.message


# --- no false refusals ---

@pytest.mark.parametrize("name", list(BENIGN_ARCHITECTURES))
def test_real_architectures_pass_the_scan(name, architectures):
    _assert_every_meta_graph_passes(architectures[name])


@pytest.mark.parametrize("name", TESTS_MODELS_BENIGN)
def test_the_test_suites_own_models_pass_the_scan(name, model_dirs):
    _assert_every_meta_graph_passes(model_dirs[name])


def _assert_every_meta_graph_passes(model_dir):
    for meta_graph in _inspect(model_dir).meta_graphs:
        scan = meta_graph.op_scan
        assert scan.refused == [] and scan.unregistered == [], [f.describe() for f in scan.refused + scan.unregistered]
        assert any(entry.startswith("signature ") for entry in scan.reachable)


def test_the_report_says_what_each_entry_point_reaches(architectures):
    scan = _choice(architectures["tf2_vocabulary_asset"]).meta_graph.op_scan
    assert set(scan.reachable) == {"signature serving_default", "init", "restore", "loaded object"}
    assert "InitializeTableFromTextFileV2" in scan.reachable["init"].ops
    assert "LookupTableFindV2" in scan.reachable["signature serving_default"].ops
    assert "RestoreV2" in scan.reachable["restore"].ops
    assert any("initializer" in function for function in scan.reachable["init"].functions)


# --- the one-form rules, on edited protobufs ---

def _point_the_asset_outside(meta_graph):
    from tensorflow.core.protobuf import meta_graph_pb2

    packed = meta_graph.collection_def["saved_model_assets"].any_list.value[0]
    asset = meta_graph_pb2.AssetFileDef()
    packed.Unpack(asset)
    asset.filename = "../../../../../etc/passwd"
    packed.Pack(asset)


def _restore_from_elsewhere(meta_graph):
    prefix = meta_graph.graph_def.node.add(name="elsewhere", op="Const")
    prefix.attr["dtype"].type = prefix.attr["value"].tensor.dtype = 7  # DT_STRING
    prefix.attr["value"].tensor.string_val.append(b"/tmp/someone-elses-checkpoint")
    next(node for node in meta_graph.graph_def.node if node.op == "RestoreV2").input[0] = "elsewhere"


@pytest.mark.parametrize("fixture, model, edit, op, entry_point, rule", [
    ("architectures", "tf1_vocabulary_table", _point_the_asset_outside, "InitializeTableFromTextFileV2", "init",
     "'../../../../../etc/passwd', which resolves outside the model's assets folder"),
    ("model_dirs", "tf1_graph", _restore_from_elsewhere, "RestoreV2", "restore",
     "restores from the constant '/tmp/someone-elses-checkpoint', not the model's own variables prefix"),
], ids=["asset_outside_the_assets_folder", "restore_from_another_prefix"])
def test_a_one_form_op_edited_out_of_its_form_is_refused(fixture, model, edit, op, entry_point, rule, request, tmp_path):
    edited = _edited_copy(request.getfixturevalue(fixture)[model], tmp_path / "model", edit)
    [finding] = _choice(edited).meta_graph.op_scan.refused
    assert (finding.op, finding.reached_from) == (op, [entry_point])
    assert rule in finding.rule


def test_code_no_entry_point_reaches_is_listed_but_not_refused(model_dirs, tmp_path):
    def add_unreached_write(meta_graph):
        meta_graph.graph_def.node.add(name="never_fetched", op="WriteFile", input=["saver_filename", "saver_filename"])

    choice = _choice(_edited_copy(model_dirs["keras_export"], tmp_path / "model", add_unreached_write))
    assert "WriteFile" in choice.meta_graph.ops
    assert not any("WriteFile" in code.ops for code in choice.meta_graph.op_scan.reachable.values())
    assert scan_ops.fn(choice, []).checks[0].status == "passed"


def test_a_function_called_by_its_op_name_is_walked(unsafe_models, tmp_path):
    def call_by_op_name(meta_graph):
        call = next(node for node in meta_graph.graph_def.node if node.op == "StatefulPartitionedCall")
        call.op = call.attr["f"].func.name
        for attribute in list(call.attr):
            del call.attr[attribute]

    choice = _choice(_edited_copy(unsafe_models["writes_file"], tmp_path / "model", call_by_op_name))
    assert [finding.op for finding in choice.meta_graph.op_scan.refused] == ["WriteFile"]
    assert "signature serving_default" in choice.meta_graph.op_scan.refused[0].reached_from


# --- custom op libraries ---

def test_custom_ops_are_unjudged_and_the_message_names_the_package_and_the_flag(tensorflow_text_model):
    choice = _choice(tensorflow_text_model)
    with pytest.raises(MissingOps) as missing:
        scan_ops.fn(choice, [])
    message = str(missing.value)
    assert "ops not registered in this TensorFlow (custom ops): MaxSpanningTree, TFText>WhitespaceTokenize" in message
    assert "tensorflow_text would register them: pass --op-library tensorflow_text" in message
    assert scan_ops.fn(_choice(tensorflow_text_model, ["tensorflow_text"]), []).checks[0].status == "passed"


def test_the_package_of_an_op_is_told_by_its_prefix_or_tf_texts_own_names():
    assert package_registering("TFText>NgramsStringJoin") == "tensorflow_text"
    assert package_registering("SentencepieceOp") == "tensorflow_text"
    assert package_registering("Addons>GeluGrad") == "tensorflow_addons"
    assert package_registering("ModelgateNoSuchOp") is None


def test_an_op_library_that_cannot_be_imported_is_a_usage_error(model_dirs):
    from modelgate.errors import ModelgateError

    with pytest.raises(ModelgateError, match="--op-library modelgate_no_such_package: cannot import it"):
        _inspect(model_dirs["keras_export"], op_libraries=["modelgate_no_such_package"])


# --- end to end ---

def _request(args: list[str], tracking_uri: str, workdir: Path) -> ValidationRequest:
    parsed = cli._parser().parse_args(["validate", *args, "--targets", "none", "--no-benchmark", "--tracking-uri", tracking_uri])
    return ValidationRequest(**cli._request_fields(parsed, parsed.source), report_path=str(workdir / "report.json"),
                             output_dir=str(workdir / "out"))


@pytest.mark.usefixtures("prefect_server")
def test_a_refused_model_fails_on_op_safety_and_none_of_its_code_runs(unsafe_models, tracking_uri, workdir):
    from flows.validate import validate

    shutil.rmtree(TRACE_DIR, ignore_errors=True)
    report = validate(_request([str(unsafe_models["print_to_file"])], tracking_uri, workdir))
    assert report.status == "failed"
    [failed] = report.failed_checks()
    assert failed.name == "op_safety" and "PrintV2" in failed.message and "file:///" in failed.message
    stages = {stage.name: stage.status for stage in report.stages}
    assert stages["scan-ops"] == "failed" and stages["load-and-wrap"] == "skipped" and stages["run-checks"] == "skipped"
    assert "PrintV2" in report.reachable_code["signature serving_default"].ops
    assert not TRACE_DIR.exists()


@pytest.mark.usefixtures("prefect_server")
def test_a_tf_text_model_validates_with_its_op_library(tensorflow_text_model, tracking_uri, workdir):
    """--op-library imports tensorflow_text in the flow (the scan knows its ops) and in the model processes
    (the model loads and runs: its checks pass on synthesized scores)."""
    from flows.validate import validate

    args = [str(tensorflow_text_model), "--op-library", "tensorflow_text"]
    report = validate(_request(args, tracking_uri, workdir))
    assert report.status == "passed", report.first_error() or report.failed_checks()
    checks = {check.name: check.status for check in report.checks}
    assert checks["op_safety"] == "passed"
    assert checks["keras_wrapper_parity"] == "passed" and checks["finite_outputs"] == "passed"
    assert report.request.model.op_libraries == ["tensorflow_text"]

"""Bad input and models that cannot be judged: each ends in one clear line, a report with status error, and an
MLflow run marked FAILED with the reason; from the command line, that line comes first and the exit code is 2.
A model refused as unsafe was judged: it fails (exit 1) on its named check.

Every case runs the flow under the session's Prefect server, with the request the CLI makes of its
arguments; a few run the CLI as a real process too (each starts an ephemeral Prefect server, about 15 s).
"""

import json
import shutil

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from modelgate.execution.quiet import import_tensorflow
from modelgate.service import cli
from tests.service.test_cli import _assert_exit_2_with_the_reason_first, _modelgate

pytestmark = pytest.mark.usefixtures("prefect_server")

FAST = ["--targets", "none", "--no-benchmark"]


def _copy(model_dirs, tmp_path):
    return shutil.copytree(model_dirs["serving_base"] / "1", tmp_path / "model")


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep(len(path.read_bytes()))])


def _rename_op(model_dir, old, new):
    """Make the graph name an op this TensorFlow does not have, as a model built with a custom op would."""
    import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    proto_file = model_dir / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(proto_file.read_bytes())
    for function in proto.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == old:
                node.op = new
    proto_file.write_bytes(proto.SerializeToString())


def nonexistent(model_dirs, tmp_path):
    return [str(tmp_path / "absent")], "absent: no such directory"


def a_file(model_dirs, tmp_path):
    (tmp_path / "model.pb").write_bytes(b"\x08\x01")
    return [str(tmp_path / "model.pb")], "model.pb: not a directory"


def empty_directory(model_dirs, tmp_path):
    (tmp_path / "model").mkdir()
    return [str(tmp_path / "model")], "model: empty directory; expected saved_model.pb, or numbered version folders"


def truncated_pb(model_dirs, tmp_path):
    _truncate(_copy(model_dirs, tmp_path) / "saved_model.pb", lambda size: size // 2)
    return [str(tmp_path / "model")], "saved_model.pb: not a readable SavedModel protobuf"


def random_bytes_pb(model_dirs, tmp_path):
    (_copy(model_dirs, tmp_path) / "saved_model.pb").write_bytes(np.random.default_rng(0).bytes(4096))
    return [str(tmp_path / "model")], "saved_model.pb: not a readable SavedModel protobuf"


def missing_variables(model_dirs, tmp_path):
    shutil.rmtree(_copy(model_dirs, tmp_path) / "variables")
    return [str(tmp_path / "model")], "incomplete SavedModel: expected variables/variables.index, found no variables/ folder"


def truncated_variables(model_dirs, tmp_path):
    _truncate(_copy(model_dirs, tmp_path) / "variables" / "variables.data-00000-of-00001", lambda size: size - 8)
    return [str(tmp_path / "model")], "variables.data-00000-of-00001: truncated variables data: the index needs at least"


def unknown_signature(model_dirs, tmp_path):
    return [str(model_dirs["serving_base"]), "--signature", "predict"], (
        "signature 'predict' not found; available signatures: serving_default"
    )


def unknown_tag_set(model_dirs, tmp_path):
    return [str(model_dirs["serving_base"]), "--tag", "serve,gpu"], (
        "no MetaGraph with tag-set gpu,serve; available tag-sets: serve"
    )


def unknown_op(model_dirs, tmp_path):
    _rename_op(_copy(model_dirs, tmp_path), "MatMul", "ModelgateNoSuchOp")
    return [str(tmp_path / "model")], "ops not registered in this TensorFlow (custom ops): ModelgateNoSuchOp"


def exceeds_time_limit(model_dirs, tmp_path):
    # The model never returns, so whatever the machine's speed it is stopped at the limit, loading or running.
    return [str(model_dirs["hangs"]), "--timeout", "10"], "probe-batch: timed out after 10 s"


def crashes_the_interpreter(model_dirs, tmp_path):
    return [str(model_dirs["aborts"])], "probe-batch: model process killed by signal SIGABRT"


def eats_memory(model_dirs, tmp_path):
    return [str(model_dirs["eats_memory"]), "--memory-limit-mb", "1500"], "probe-batch: killed at"


CASES = [
    nonexistent, a_file, empty_directory, truncated_pb, random_bytes_pb, missing_variables, truncated_variables,
    unknown_signature, unknown_tag_set, unknown_op, exceeds_time_limit, crashes_the_interpreter,
    eats_memory,
]


def _request(args, tracking_uri, workdir):
    """The request the CLI makes of these arguments."""
    from modelgate.request import ValidationRequest

    parsed = cli._parser().parse_args(["validate", *args, *FAST, "--tracking-uri", tracking_uri])
    fields = cli._request_fields(parsed, parsed.source)
    return ValidationRequest(**fields, report_path=str(workdir / "report.json"), output_dir=str(workdir / "out"))


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_input_ends_in_one_clear_line_a_report_and_a_failed_run(case, model_dirs, tracking_uri, workdir):
    from flows.validate import validate

    args, expected = case(model_dirs, workdir)
    report = validate(_request(args, tracking_uri, workdir))
    assert report.status == "error"
    first_error = report.first_error()
    assert expected in first_error and "\n" not in first_error, first_error
    assert json.loads((workdir / "report.json").read_text())["status"] == "error"
    run = MlflowClient(tracking_uri).get_run(report.mlflow.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["modelgate.first_error"] == first_error
    assert run.data.tags["modelgate.status"] == "error"


@pytest.mark.parametrize("case", [truncated_variables, unknown_op, exceeds_time_limit],
                         ids=["truncated_variables", "unknown_op", "exceeds_time_limit"])
def test_from_the_command_line_the_reason_comes_first_and_the_exit_code_is_2(case, model_dirs, tmp_path):
    args, expected = case(model_dirs, tmp_path)
    _assert_exit_2_with_the_reason_first(_modelgate("validate", *args, *FAST, cwd=tmp_path), expected, tmp_path)


def test_a_model_refused_as_unsafe_fails_on_its_check_everywhere(model_dirs, tracking_uri, workdir):
    from flows.validate import validate_savedmodel

    request = _request([str(model_dirs["reads_files"])], tracking_uri, workdir)
    state = validate_savedmodel(request, return_state=True)
    report = state.result(raise_on_failure=False)
    assert report.status == "failed" and report.first_error() is None
    refusal = next(c for c in report.checks if c.name == "op_safety")
    assert refusal.status == "failed" and "ReadFile" in refusal.message
    assert {s.name: s.status for s in report.stages}["scan-ops"] == "failed"
    assert state.is_failed() and state.message.startswith("failed: op_safety: ")
    run = MlflowClient(tracking_uri).get_run(report.mlflow.run_id)
    assert run.info.status == "FAILED" and run.data.tags["modelgate.status"] == "failed"
    assert json.loads((workdir / "report.json").read_text())["status"] == "failed"


def test_from_the_command_line_an_unsafe_model_exits_1(model_dirs, tmp_path):
    result = _modelgate("validate", str(model_dirs["reads_files"]), *FAST, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "op_safety" in result.stdout and "FAILED" in result.stdout

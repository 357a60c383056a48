"""The CLI as users run it: a real process, an ephemeral Prefect, a local MLflow store."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests import models


def _modelgate(*args, cwd, **environment):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db", **environment}
    env.pop("PREFECT_API_URL", None)
    env.pop("COLUMNS", None)  # piped: plain lines, 100 columns unless told otherwise
    return subprocess.run(
        [sys.executable, "-m", "modelgate.service.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _assert_exit_2_with_the_reason_first(result, expected, cwd):
    """Bad input from the command line: exit code 2, one clear line first, no traceback, a report saying error."""
    assert result.returncode == 2, result.stdout + result.stderr
    first_line = result.stderr.splitlines()[0]
    assert first_line.startswith("modelgate: error: ") and expected in first_line, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((cwd / "modelgate-report.json").read_text())["status"] == "error"


def _assert_usage_error(result, expected, cwd):
    """A usage error: exit code 2 and the reason first, answered before anything started: no report, no MLflow
    store (so no MLflow run), no working files."""
    assert result.returncode == 2, result.stdout + result.stderr
    first_line = result.stderr.splitlines()[0]
    assert first_line.startswith("modelgate: error: ") and expected in first_line, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not {"modelgate-report.json", "mlflow.db", "modelgate-out"} & {p.name for p in cwd.iterdir()}


def test_demo_passes_and_says_where_the_results_are(tmp_path):
    result = _modelgate("demo", "--model-dir", str(tmp_path / "sample"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASSED" in result.stdout
    assert "flow runs on an ephemeral Prefect server for this command" in result.stdout
    assert "[ok] export-onnx" in result.stdout
    assert "mlflow run:" in result.stdout
    report = json.loads((tmp_path / "modelgate-report.json").read_text())
    assert report["status"] == "passed" and report["mlflow"]["tracking_uri"].startswith("sqlite:///")
    assert "Traceback" not in result.stderr


def test_piped_output_fits_100_columns_and_never_splits_a_word(tmp_path, capsys, monkeypatch):
    """As CI and a Prefect worker's log get it: no terminal, so plain lines of at most 100 columns, broken only
    between words, the format matrix a line per target, runtime and device and one per batch size."""
    from modelgate.report import ValidationReport
    from modelgate.reporting.console import Console

    result = _modelgate("demo", "--model-dir", str(tmp_path / "sample"), "--benchmark-batch-sizes", "1,4",
                        "--benchmark-budget-s", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # a log gets both streams: Prefect's run log lines stay in Prefect
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, "\n".join(line for line in lines if len(line) > 100)
    assert not [line for line in lines if "{'" in line or "│" in line]
    # What the command printed of its report, word for word as the same report reads on one unbroken line each:
    # a word cut in two would be two words here.
    report = ValidationReport.model_validate_json((tmp_path / "modelgate-report.json").read_text())
    monkeypatch.setenv("COLUMNS", "100000")
    monkeypatch.chdir(tmp_path)  # where the command ran: it shows paths under it relative to it
    Console().verdict(report)
    unbroken = capsys.readouterr().out
    header = next(i for i, line in enumerate(lines) if line.startswith(report.source))
    assert " ".join(lines[header:]).split() == unbroken.split()
    first_stage = next(i for i, line in enumerate(lines) if line.startswith("["))
    stages = " ".join(f"[{s.status}] {s.name} {s.duration_s:.2f}s {s.message}" for s in report.stages)
    assert " ".join(lines[first_stage:header]).split() == stages.split()
    assert any(line.strip().startswith("bs4 ") and line.endswith("samples/s") for line in lines)


@pytest.mark.parametrize("mode", ["--quiet", "--json"])
def test_quiet_prints_the_verdict_line_and_json_the_report(mode, tmp_path):
    result = _modelgate("demo", "--model-dir", str(tmp_path / "sample"), "--targets", "none", "--no-benchmark", mode,
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    if mode == "--quiet":
        assert result.stdout == "verdict: PASSED\n"
    else:
        assert json.loads(result.stdout) == json.loads((tmp_path / "modelgate-report.json").read_text())


def test_a_failing_check_exits_1(model_dirs, tmp_path):
    result = _modelgate("validate", str(model_dirs["nan_outputs"]), "--targets", "none", "--no-benchmark",
                        cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "finite_outputs" in result.stdout and "verdict: FAILED" in result.stdout


@pytest.mark.parametrize("case", ["not_a_saved_model", "a_version_not_there", "missing_inputs_file",
                                  "missing_contract_file"])
def test_bad_input_exits_2_with_one_clear_line_first(case, tmp_path):
    # What is checked before anything starts looks at files only: a saved_model.pb is a SavedModel to it.
    model, work = tmp_path / "model", tmp_path / "work"
    model.mkdir(), work.mkdir()
    if case == "not_a_saved_model":
        (model / "notes.txt").write_text("not a model")
        args, expected = ["validate", str(model)], "not a SavedModel"
    elif case == "a_version_not_there":
        for version in ("1", "2"):  # a TF Serving base path
            (model / version).mkdir()
            (model / version / "saved_model.pb").write_bytes(b"")
        args, expected = ["validate", str(model), "--version", "7"], "no version 7; the numeric version folders are 1, 2"
    else:
        (model / "saved_model.pb").write_bytes(b"")
        option, name = ("--inputs", "absent.npz") if case == "missing_inputs_file" else ("--contract", "absent.yaml")
        args, expected = ["validate", str(model), option, name], f"{name} does not exist"
    _assert_usage_error(_modelgate(*args, cwd=work), expected, work)


@pytest.mark.parametrize("source, expected", [
    ("absent", "absent: no such directory"),
    ("model.pb", "model.pb: not a directory (a SavedModel is a directory holding saved_model.pb)"),
])
def test_a_missing_path_exits_2_before_any_prefect_or_mlflow_start(source, expected, tmp_path):
    """Answered from the files alone, in well under 2 s of the command's own time: neither Prefect nor MLflow
    (nor a framework) is imported, so no server, run or model process can have started."""
    work = tmp_path / "work"
    work.mkdir()
    if source == "model.pb":
        (work / source).write_bytes(b"\x08\x01")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "modelgate.service.cli", "validate", source],
                            cwd=work, env=env, capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [f"modelgate: error: {expected}"]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {"prefect", "mlflow", "uvicorn", "tensorflow", "keras", "onnxruntime"}
    assert not (tmp_path / "prefect-home").exists()
    assert [p.name for p in work.iterdir()] == ([source] if source == "model.pb" else [])
    own_time = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert own_time < 2, f"{own_time:.2f} s of CPU time to answer a usage error"


def test_usage_errors_exit_2(tmp_path):
    assert _modelgate("validate", cwd=tmp_path).returncode == 2
    result = _modelgate("validate", str(tmp_path), "--atol", "-1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("modelgate: error: invalid option checks.atol")
    result = _modelgate("validate", str(tmp_path), "--quiet", "--json", cwd=tmp_path)
    assert result.returncode == 2 and "--json: not allowed with argument -q/--quiet" in result.stderr


def test_worker_is_prefects_worker_with_its_options(tmp_path):
    result = _modelgate("worker", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage: prefect worker start" in result.stdout and "--pool" in result.stdout
    assert _modelgate("validate", str(tmp_path), "--pool", "x", cwd=tmp_path).returncode == 2  # not validate's


def test_user_inputs_file_is_used(model_dirs, tmp_path):
    np.savez(tmp_path / "inputs.npz", input1=np.ones((2, 4), "float32"), input2=np.ones((2, 1), "float32"))
    result = _modelgate("validate", str(model_dirs["custom_signature"]), "--inputs", "inputs.npz", "--targets", "none",
                        "--signature", "my_custom_signature", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "modelgate-report.json").read_text())
    assert report["inputs"]["source"] == "file" and report["inputs"]["shapes"]["input1"] == [2, 4]


def test_a_cli_run_keeps_its_copies_in_its_workdir_and_links_no_flow_run_without_a_ui(tmp_path):
    # A TF1 model with a reference-typed output, its own baseline: both load through copies, which must stay in
    # the validation's folder. The CLI runs on an ephemeral Prefect server: there is no UI to link to.
    model_dir = models.tf1_graph(tmp_path / "tf1")
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    result = _modelgate("validate", str(model_dir), "--signature", "weights", "--baseline", str(model_dir),
                        "--register-as", "gate-cli", "--targets", "none", "--no-benchmark", cwd=tmp_path, TMPDIR=str(system_temp))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "modelgate-report.json").read_text())
    assert {name: d["max_abs_diff"] for name, d in report["baseline"]["drift"].items()} == {"weight": 0.0, "y": 0.0}
    assert not list(system_temp.glob("modelgate-*"))
    assert {p.name for p in Path(report["workdir"]).iterdir()} >= {"loadable_model", "loadable_baseline"}
    mv = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_model_version("gate-cli", report["registry"]["version"])
    assert "modelgate.flow_run" not in mv.tags
    assert "PASSED" in mv.description and "None/" not in mv.description and "Prefect flow run" not in mv.description


@pytest.mark.usefixtures("prefect_server")
def test_a_server_named_in_a_prefect_profile_runs_the_flow(model_dirs, tmp_path):
    # The command starts an ephemeral server before it can read Prefect's settings; a profile naming the user's
    # server is found once Prefect is imported, and then the flow runs there.
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{api_url}"\n')
    report_path = str(tmp_path / "profile-report.json")  # this run's own: other tests' runs share the server
    result = _modelgate("validate", str(model_dirs["keras_export"]), "--targets", "none", "--no-benchmark", "--report",
                        report_path, cwd=tmp_path, PREFECT_PROFILES_PATH=str(profiles))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"flow runs on the Prefect server at {api_url}" in result.stdout
    assert json.loads(Path(report_path).read_text())["status"] == "passed"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert [run.state.type.value for run in runs
            if run.parameters.get("request", {}).get("output", {}).get("report_path") == report_path
            ] == ["COMPLETED"]

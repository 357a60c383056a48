"""A new SQLite store is a copy of a template migrated once; MLflow opens it without migrating, and it works."""

import logging
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from modelgate.tracking import store_template
from modelgate.tracking.store_template import prepare_store, sqlite_file

MIGRATING = "Creating initial MLflow database tables"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(store_template.CACHE_VARIABLE, str(folder))
    return folder


@pytest.fixture
def mlflow_logs(caplog):
    # MLflow's own logger does not propagate to the root: caplog's handler goes on it directly.
    logger = logging.getLogger("mlflow")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="mlflow")
    yield caplog
    logger.removeHandler(caplog.handler)


def test_sqlite_file_names_only_a_sqlite_database_on_disk():
    assert sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_file("sqlite:////abs/store.db") == Path("/abs/store.db")
    for other in ("sqlite://", "sqlite:///:memory:", "postgresql://host/db", "http://localhost:5000",
                  "sqlite:///x.db?mode=ro"):
        assert sqlite_file(other) is None


def test_a_fresh_folders_store_opens_without_migrating_and_runs_work(cache, workdir, mlflow_logs):
    assert prepare_store("sqlite:///first/fresh.db")  # builds the template: MLflow migrates it, once
    [template] = cache.iterdir()
    with sqlite3.connect(template) as connection:  # no experiment in it: each store creates its own default
        assert connection.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    assert MIGRATING in mlflow_logs.text  # what the assertion below would see if MLflow migrated the copy
    mlflow_logs.clear()

    assert prepare_store("sqlite:///fresh.db")
    client = MlflowClient("sqlite:///fresh.db")
    default = client.get_experiment("0")
    experiment = client.create_experiment("modelgate")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "m", 1.0)
    client.log_text(run.info.run_id, "hello", "note.txt")
    assert MIGRATING not in mlflow_logs.text
    assert [path.name for path in cache.iterdir()] == [template.name]  # the same template, not a second one

    assert default.name == "Default"
    assert Path(default.artifact_location.removeprefix("file://")).resolve() == (workdir / "mlruns" / "0").resolve()
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    artifact_uri = Path(client.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    assert artifact_uri.resolve().is_relative_to(workdir.resolve() / "mlruns") and (artifact_uri / "note.txt").read_text() == "hello"
    assert client.search_registered_models() == []  # the registry's tables are in it too


def test_a_store_with_anything_in_it_is_left_alone_and_an_empty_file_is_filled(cache, workdir):
    MlflowClient("sqlite:///used.db").create_experiment("kept")
    before = Path("used.db").read_bytes()
    assert not prepare_store("sqlite:///used.db")
    assert Path("used.db").read_bytes() == before

    Path("empty.db").touch()
    assert prepare_store("sqlite:///empty.db")
    assert MlflowClient("sqlite:///empty.db").get_experiment_by_name("Default") is not None
    assert not prepare_store("sqlite:///empty.db")  # filled now
    assert not list(workdir.glob(".*copying"))


def test_without_a_usable_cache_mlflow_migrates_the_store_itself(tmp_path, workdir, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv(store_template.CACHE_VARIABLE, str(blocked))
    # A name no other test opens: MLflow keeps one store per URI in a process, whatever the current folder.
    assert not prepare_store("sqlite:///uncached.db")
    assert not Path("uncached.db").exists()
    assert MlflowClient("sqlite:///uncached.db").get_experiment("0").name == "Default"
    assert Path("uncached.db").stat().st_size > 0

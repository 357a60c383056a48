from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelgate.execution.spare_keeper import keep_spares
from tests import models
from tests.signing_keys import key_pair

# Tests sharing one of tests/service's package-scoped services (a compose stack, `modelgate serve`) run on one
# pytest-xdist worker, so that each service starts once per run rather than once per worker; so do the tests of a
# module sharing a module-scoped fixture (a model built, a validation run), which each worker would build again.
SHARED_SERVICES = ("stack", "served")


def pytest_collection_modifyitems(items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if shared := [name for name in SHARED_SERVICES if name in names]:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif any(definition.scope == "module" for name in names
                 for definition in item._fixtureinfo.name2fixturedefs.get(name, ())):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def spare_keeper():
    """One spare keeper per test process, as `modelgate serve` keeps one: each pool a validation opens here or in a
    CLI it starts gets a copy of a warm spare instead of importing TensorFlow's stack afresh (seconds, on every
    validation the suite runs). benchmarks/run.py leaves it out, so that its cold figures stay cold."""
    with keep_spares() as keeper:
        yield keeper


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory):
    """A Prefect home of this pytest process's own for the commands its tests start: the ephemeral servers of two
    pytest-xdist workers' commands on one SQLite database (~/.prefect's) lock each other out on a busy machine."""
    home = tmp_path_factory.mktemp("prefect-home")
    outer = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    yield home
    if outer is None:
        os.environ.pop("PREFECT_HOME", None)
    else:
        os.environ["PREFECT_HOME"] = outer


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every test model, built once per session."""
    root = tmp_path_factory.mktemp("models")
    builders = {
        "keras_export": models.keras_export, "custom_signature": models.custom_signature,
        "two_candidates": models.two_candidates, "nan_outputs": models.nan_outputs,
        "string_input": models.string_input, "reads_files": models.reads_files, "unknown_dims": models.unknown_dims,
        "tf1_graph": models.tf1_graph, "tf1_pbtxt": models.tf1_pbtxt, "keras2_save": models.keras2_save,
        "serving_base": models.serving_base, "renamed_input": models.renamed_input,
        "unnamed_fixed_batch": models.unnamed_fixed_batch, "batch_mixing": models.batch_mixing,
        "hangs": models.hangs, "aborts": models.aborts, "eats_memory": models.eats_memory,
    }
    return {name: build(root / name) for name, build in builders.items()}


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    """The models the ONNX tests convert, built once per session; the tests only read them."""
    root = tmp_path_factory.mktemp("onnx_models")
    return {name: getattr(models, name)(root / name) for name in ("mixed_inputs", "parses_examples", "keras_cnn")}


class _BuiltOnFirstUse(dict):
    """Models of tests/models.py by name, each built the first time a test asks for it."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        self[name] = getattr(models, name)(self.root / name)
        return self[name]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict[str, Path]:
    """Models with the inputs real models take (table indices, text, tf.Example), built once per session
    and only when a test uses them: a keras-hub backbone alone costs seconds."""
    return _BuiltOnFirstUse(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect server (the test harness) for the whole session: its start costs about 10 s."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """A real MLflow tracking store on SQLite, migrated once per session."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{db}"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> tuple[Path, Path]:
    """An operator's signing key pair (private, public): only a signed version gets the registry alias."""
    return key_pair(tmp_path_factory.mktemp("keys"))

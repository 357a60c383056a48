"""A new SQLite tracking store starts as a copy of an empty one migrated once per machine.

MLflow creates a new database's tables by running every one of its alembic migrations, seconds each time, and
`modelgate validate`'s default store is `sqlite:///mlflow.db` in the current folder: every fresh folder would pay
them. So the first store of an MLflow version is migrated once, with MLflow's own `_initialize_tables`, into a
template in the user's cache (`$MODELGATE_CACHE_DIR`, else `$XDG_CACHE_HOME/modelgate`, else
`~/.cache/modelgate`), named after the MLflow version and the migrations' head revision; a store that does not
exist yet (or is an empty file) is then a copy of it, put in place atomically. The template holds no experiment:
MLflow creates its default experiment as it opens the copy, with the copy's own artifact location. Anything
that fails here leaves the store to MLflow, which migrates it as it always does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

logger = logging.getLogger("modelgate.tracking")

CACHE_VARIABLE = "MODELGATE_CACHE_DIR"
SQLITE_PREFIX = "sqlite:///"


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelgate"


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the current folder, or absolute with four slashes);
    None for any other store, an in-memory database or a URI with query parameters."""
    if not tracking_uri.startswith(SQLITE_PREFIX) or "?" in tracking_uri:
        return None
    path = tracking_uri[len(SQLITE_PREFIX):]
    return Path(path) if path and path != ":memory:" else None


@cache
def template_name() -> str:
    """The template's file name: the MLflow version and its migrations' head revision (reading the migration
    scripts, once per process)."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    return f"mlflow-{mlflow.__version__}-{_get_latest_schema_revision()}.db"


def _build(template: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template.parent.mkdir(parents=True, exist_ok=True)
    descriptor, building = tempfile.mkstemp(dir=template.parent, prefix=f".{template.name}.", suffix=".building")
    os.close(descriptor)
    try:
        engine = sqlalchemy.create_engine(f"{SQLITE_PREFIX}{building}")
        try:
            _initialize_tables(engine)
            with engine.begin() as connection:
                # MLflow creates the default experiment as a store opens, with that store's artifact location.
                connection.execute(sqlalchemy.text("DELETE FROM experiment_tags"))
                connection.execute(sqlalchemy.text("DELETE FROM experiments"))
        finally:
            engine.dispose()
        os.replace(building, template)  # two processes building at once: either one's is whole
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(building)


def template() -> Path:
    """The migrated empty store of this MLflow version, built on first use."""
    path = cache_dir() / template_name()
    if not path.is_file():
        logger.info("migrating an empty MLflow store once for this machine: %s", path)
        _build(path)
    return path


def _is_new(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def prepare_store(tracking_uri: str) -> bool:
    """Where `tracking_uri` names a SQLite store that does not exist yet (or an empty file), put a copy of the
    migrated template there, so that MLflow opens it without migrating; True if it did. Never replaces a
    database that has anything in it."""
    path = sqlite_file(tracking_uri)
    if path is None or not _is_new(path):
        return False
    try:
        source = template()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, copy = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".copying")
        os.close(descriptor)
        try:
            shutil.copyfile(source, copy)
            if path.exists():
                if not _is_new(path):  # another process filled it meanwhile
                    return False
                os.replace(copy, path)
            else:
                try:
                    os.link(copy, path)  # never over a store another process created meanwhile
                except FileExistsError:
                    return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy)
    except Exception as exc:  # noqa: BLE001 - MLflow migrates the store itself instead
        logger.warning("no migrated MLflow store template (%s): MLflow creates %s itself", exc, path)
        return False
    return True

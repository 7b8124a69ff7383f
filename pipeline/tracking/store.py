"""The project's local MLflow store: `mlflow.db` for runs, `./mlruns` for their artifacts.

Artifacts of a local-store sweep are recorded as plain `file://` URIs under `./mlruns`, so every
MLflow tool opened in the project directory (plain `mlflow ui`, `mlflow server`, an
`MlflowClient("sqlite:///mlflow.db")`) lists and downloads them without knowing about medgrid.

medgrid 0.1 served them through its private server's artifact proxy and recorded
`mlflow-artifacts:/<experiment>/<run>/artifacts`, which only a server started with
`--artifacts-destination ./mlruns` can open. `upgrade_proxied_artifacts` rewrites those URIs of
medgrid's own runs (the files already sit at the matching place under `./mlruns`), so old stores
keep working with the same tools.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from pipeline.errors import UserError
from pipeline.tracking.names import KIND_TAG  # the tag every medgrid run carries

SQLITE_PREFIX = "sqlite:///"
PROXY_PREFIX = "mlflow-artifacts:/"


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///mlflow.db` relative to where the user ran medgrid, made absolute."""
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        return SQLITE_PREFIX + str(Path(uri[len(SQLITE_PREFIX):]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for any other store)."""
    uri = absolute_sqlite(uri)
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def artifact_root(artifacts_dir: Path) -> str:
    """The `file://` URI under which new experiments keep their runs' artifacts."""
    return artifacts_dir.resolve().as_uri()


# The rows `upgrade_proxied_artifacts` rewrites: medgrid's runs (tagged KIND_TAG, the one
# parameter) recorded with proxied artifact URIs, and the experiments holding them.
_OUR_PROXIED_RUNS = (
    "artifact_uri LIKE 'mlflow-artifacts:/%' AND artifact_uri NOT LIKE 'mlflow-artifacts://%' "
    "AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ?)")
_OUR_PROXIED_EXPERIMENTS = (
    "artifact_location LIKE 'mlflow-artifacts:/%' "
    "AND artifact_location NOT LIKE 'mlflow-artifacts://%' "
    "AND experiment_id IN (SELECT r.experiment_id FROM runs r JOIN tags t "
    "ON t.run_uuid = r.run_uuid WHERE t.key = ?)")


def upgrade_proxied_artifacts(uri: str, artifacts_dir: Path) -> int:
    """Point medgrid runs recorded with proxied artifact URIs at their files under
    `artifacts_dir`; return how many runs and experiments changed (0 for non-SQLite stores)."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return 0
    root = artifact_root(artifacts_dir)
    try:
        with closing(sqlite3.connect(db, timeout=30)) as conn, conn:
            if not _has_mlflow_tables(conn):
                return 0
            runs = conn.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                f"WHERE {_OUR_PROXIED_RUNS}",
                (root + "/", len(PROXY_PREFIX) + 1, KIND_TAG)).rowcount
            experiments = conn.execute(
                "UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?) "
                f"WHERE {_OUR_PROXIED_EXPERIMENTS}",
                (root + "/", len(PROXY_PREFIX) + 1, KIND_TAG)).rowcount
    except sqlite3.Error as exc:
        raise UserError(f"{db}: cannot upgrade its artifact locations ({exc}); expected a "
                        "writable MLflow SQLite store") from exc
    return runs + experiments


def _has_mlflow_tables(conn: sqlite3.Connection) -> bool:
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"runs", "experiments", "tags"} <= names


def create_sqlite_schema(uri: str, artifacts_dir: Path) -> bool:
    """Give a new SQLite store MLflow's tables, once, whoever else starts on it at the same time;
    True if this call created them.

    MLflow's server creates the tables of a new database itself, but two servers started on one
    new file at once (two sweeps started in the same second) both migrate it and one fails
    ("Online migration expected to match one row"). Here the creation runs under an exclusive
    lock on the database's directory, and a store that already has its tables is left alone."""
    db = sqlite_path(uri)
    if db is None:
        return False
    directory = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)  # released when the descriptor closes
        if _has_schema(db):
            return False
        # Imported here: MLflow's store takes a second to import, and only a new file needs it.
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        quiet = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
        levels = [log.level for log in quiet]
        for log in quiet:  # "Creating initial MLflow database tables..." is the server's chatter
            log.setLevel(logging.WARNING)
        try:
            SqlAlchemyStore(absolute_sqlite(uri), artifact_root(artifacts_dir))
        finally:
            for log, level in zip(quiet, levels, strict=True):
                log.setLevel(level)
        return True
    finally:
        os.close(directory)


def store_in_place(uri: str, artifacts_dir: Path) -> bool:
    """Whether a private server over the SQLite store `uri` would create or change nothing: the
    database has MLflow's tables, `artifacts_dir` exists, and no run or experiment waits for
    `upgrade_proxied_artifacts`. A sweep may then start its server before its data is checked:
    a bad data file still leaves the store as it was."""
    db = sqlite_path(uri)
    if db is None or not artifacts_dir.is_dir():
        return False
    try:
        if not _has_schema(db):
            return False
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            to_upgrade = conn.execute(
                f"SELECT EXISTS(SELECT 1 FROM runs WHERE {_OUR_PROXIED_RUNS}) "
                f"OR EXISTS(SELECT 1 FROM experiments WHERE {_OUR_PROXIED_EXPERIMENTS})",
                (KIND_TAG, KIND_TAG)).fetchone()[0]
    except sqlite3.Error:  # not a database, unreadable: the server's own checks say so
        return False
    return not to_upgrade


def _has_schema(db: Path) -> bool:
    """Whether `db` holds MLflow's tables at some schema version (alembic's table is written
    last, when the creation has finished)."""
    if not db.is_file() or db.stat().st_size == 0:
        return False
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
        names = {row[0] for row in
                 conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return "alembic_version" in names

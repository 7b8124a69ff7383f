"""The private tracking server's process (`python -m pipeline.tracking.serve BACKEND ARTIFACTS
PORT`): MLflow's tracking app under uvicorn on 127.0.0.1, served by this one process.

`mlflow server --workers 1` imports MLflow and its CLI (about 3 s of CPU on the development
machine) only to start uvicorn in a second Python that imports MLflow again; at the start of a
sweep those seconds compete with Ray's start for the same cores. This process does what that
command does for a private local store (the stores initialised, the settings handed to the app
through MLflow's own server constants, no artifact proxy, no job runner) and then serves. An
MLflow without the pieces this needs (its FastAPI app, its server constants) gets its own
`mlflow server` command instead, in this process's place.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

APP = "mlflow.server.fastapi_app:app"
# MLflow settings the server reads from its environment, set where this MLflow has them: no
# workspaces, no job runner (its background GenAI jobs fork several 200 MB workers that a
# training sweep never uses), and what `mlflow server` tells its uvicorn worker.
SETTINGS = {
    "MLFLOW_ENABLE_WORKSPACES": "false",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "_MLFLOW_SGI_NAME": "uvicorn",
    "_MLFLOW_IN_JOB_EXECUTOR": "false",
}


def serve(backend_uri: str, artifact_root: str, port: int) -> None:
    """Initialise the stores and serve until SIGTERM (uvicorn's graceful shutdown)."""
    try:
        import uvicorn
        from mlflow import environment_variables as mlflow_env
        from mlflow import server as mlflow_server
        from mlflow.server import fastapi_app  # noqa: F401 - the app uvicorn serves
        from mlflow.server.handlers import initialize_backend_stores

        env = {mlflow_server.BACKEND_STORE_URI_ENV_VAR: backend_uri,
               mlflow_server.REGISTRY_STORE_URI_ENV_VAR: backend_uri,
               mlflow_server.ARTIFACT_ROOT_ENV_VAR: artifact_root}  # file URIs: no proxy
    except (ImportError, AttributeError):
        _create_schema(backend_uri, artifact_root)
        run_mlflow_server(backend_uri, artifact_root, port)
        return
    for name, value in SETTINGS.items():
        if hasattr(mlflow_env, name):
            env[name] = value
    if hasattr(mlflow_env, "_MLFLOW_SERVER_BOOT_ID"):
        env["_MLFLOW_SERVER_BOOT_ID"] = uuid.uuid4().hex
    os.environ.update(env)
    _create_schema(backend_uri, artifact_root)
    initialize_backend_stores(backend_uri, backend_uri, artifact_root)
    log_config = getattr(mlflow_server, "_UVICORN_LOG_CONFIG", None)
    uvicorn.run(APP, host="127.0.0.1", port=port, workers=1,
                **({"log_config": str(log_config)} if log_config else {}))


def _create_schema(backend_uri: str, artifact_root: str) -> None:
    """A new SQLite store's tables, made here rather than by the driver: MLflow is imported in
    this process anyway, so the migration (seconds on a new file) runs beside the driver's own
    start instead of before the server is even launched. `create_sqlite_schema` takes a lock,
    so two servers started at once on one new file still migrate it once."""
    from pipeline.tracking.store import create_sqlite_schema

    create_sqlite_schema(backend_uri, Path(url2pathname(urlsplit(artifact_root).path)))


def run_mlflow_server(backend_uri: str, artifact_root: str, port: int) -> None:
    """Become `mlflow server --workers 1` over the same store (an MLflow this module cannot
    serve in-process): same process, so the driver stops it as before."""
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    os.execv(sys.executable, [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
        "--default-artifact-root", artifact_root, "--no-serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ])


if __name__ == "__main__":
    backend, artifacts, port_text = sys.argv[1:]
    serve(backend, artifacts, int(port_text))

"""The private tracking server's process (`python -m pipeline.tracking.serve BACKEND ARTIFACTS
PORT`): MLflow's tracking app under uvicorn on 127.0.0.1, served by this one process.

`mlflow server --workers 1` imports MLflow and its CLI (about 3 s of CPU on the development
machine) only to start uvicorn in a second Python that imports MLflow again; at the start of a
sweep those seconds compete with Ray's start for the same cores. This process does what that
command does for a private local store (the stores initialised, the settings handed to the app
through MLflow's own server constants, no artifact proxy, no job runner) and then serves.
"""

from __future__ import annotations

import os
import sys
import uuid


def serve(backend_uri: str, artifact_root: str, port: int) -> None:
    """Initialise the stores and serve until SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn
    from mlflow import environment_variables as mlflow_env
    from mlflow.server import _UVICORN_LOG_CONFIG
    from mlflow.server import constants as server_env
    from mlflow.server.handlers import initialize_backend_stores

    os.environ.update({
        server_env.BACKEND_STORE_URI_ENV_VAR: backend_uri,
        server_env.REGISTRY_STORE_URI_ENV_VAR: backend_uri,
        server_env.ARTIFACT_ROOT_ENV_VAR: artifact_root,  # file URIs: no artifact proxy
        mlflow_env.MLFLOW_ENABLE_WORKSPACES.name: "false",
        # MLflow's job runner (background GenAI jobs) forks several 200 MB workers that a
        # training sweep never uses.
        mlflow_env.MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name: "false",
        mlflow_env._MLFLOW_SGI_NAME.name: "uvicorn",
        mlflow_env._MLFLOW_IN_JOB_EXECUTOR.name: "false",
        mlflow_env._MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
    })
    initialize_backend_stores(backend_uri, backend_uri, artifact_root)
    uvicorn.run("mlflow.server.fastapi_app:app", host="127.0.0.1", port=port, workers=1,
                log_config=str(_UVICORN_LOG_CONFIG))


if __name__ == "__main__":
    backend, artifacts, port_text = sys.argv[1:]
    serve(backend, artifacts, int(port_text))

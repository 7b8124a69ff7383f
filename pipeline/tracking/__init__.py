"""Tracking: the only package that talks to MLflow.

`runs` writes a sweep's parent run and its trials' child runs; `server` the private local
tracking server (and checks of a user's); `store` the local SQLite store; `ui` MLflow's UI.
Importing the package itself imports no MLflow.
"""

"""Tracking: the only package that imports MLflow.

`client` is how every other module talks to MLflow (`TrackingClient`, whose reads return the
plain `records` and whose refusals are `TrackingError`); `names` holds every tag, metric and file
name the runs carry; `runs` writes a sweep's parent run and its trials' child runs; `server` the
private local tracking server (and checks of a user's); `store` the local SQLite store; `ui`
MLflow's UI. Importing the package itself imports no MLflow, nor do `names` and `records`.
"""

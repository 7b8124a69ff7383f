"""Every tag, metric and file name medgrid reads or writes in its runs, in one place: the
conventions (DESIGN.md) say one name per thing, and the sweep, the trials and the report must
agree on each of them. No MLflow import: the report's and the tests' fast paths use these."""

from __future__ import annotations

# The local store every command opens by default, relative to the directory medgrid runs in
# (here, not in `store`, so that `medgrid --help` needs no sqlite3).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# Tags every medgrid run carries.
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial under its sweep in the UI
KIND_TAG = "medgrid.kind"  # "sweep" or "trial"
SWEEP_KIND, TRIAL_KIND = "sweep", "trial"

# On a sweep's parent run.
SWEEP_TAG = "medgrid.sweep"
RAY_PATH_TAG = "medgrid.ray_experiment_path"
SAMPLED_TAG = "medgrid.sampled"  # on a sampled sweep's parent: JSON {param: distribution kind}
SPACE_FILE_TAG = "space_file"
SPACE_SHA_TAG = "space_sha256"
DATASET_TAG = "dataset"
DATASET_MD5_TAG = "dataset_md5"
TEST_SPLIT_TAG = "test_split"
BEST_TRIAL_TAG = "best_trial"

# On a trial's child run.
KEY_TAG = "medgrid.trial_key"
ATTEMPT_TAG = "medgrid.attempt"
ERROR_TAG = "medgrid.error"
PREVIOUS_ERROR_TAG = "medgrid.previous_error"
FIGURES_ERROR_TAG = "medgrid.figures_error"  # a finished trial whose figures could not be made
# A finished trial's figures: "pending" from the run's end until its worker has drawn and uploaded
# them ("drawn"), or "failed" (the reason in FIGURES_ERROR_TAG). Still "pending" after its sweep:
# the worker ended in between, and the driver draws them (figures.redraw_pending).
FIGURES_TAG = "medgrid.figures"
FIGURES_PENDING, FIGURES_DRAWN, FIGURES_FAILED = "pending", "drawn", "failed"
ALSO_TAG = "medgrid.also"  # JSON {study: run name}: other studies this trial's training serves
STUDY_TAG = "study"
SEED_TAG = "seed"
NODE_TAG = "node"
DIVERGED_TAG = "diverged"  # "true" / "false"
STOPPED_TAG = "stopped_early"  # "true" for a trial the scheduler stopped
STOPPED_EPOCH_TAG = "stopped_epoch"  # the last epoch such a trial trained
DRIVER_TAG = "medgrid.driver"  # on a parent: the driver's host, pid and start (liveness.py)
HEARTBEAT_TAG = "medgrid.heartbeat"  # on a parent: unix time its live driver last wrote

# MLflow's UI opens an experiment of this kind on its runs and charts, not on the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

# Metrics of a trial (step = epoch); test/acc once, at the last epoch.
TRAIN_LOSS = "train/loss"
TRAIN_LOSS_SUM = "train/loss_sum"
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
TEST_ACC = "test/acc"
EPOCH_TIME = "epoch_time_s"
TRIAL_METRICS = (TRAIN_LOSS, TRAIN_LOSS_SUM, TRAIN_ACC, VAL_LOSS, VAL_ACC, TEST_ACC, EPOCH_TIME)

# Files: in each checkpoint, the run the trial continues; among a trial's artifacts, what the
# report reads.
CHECKPOINT_RUN_FILE = "mlflow_run.json"
CORRECT_FILE = "val_correct.npy"  # 1-D bool: the trial got that validation image right
CONFUSION_FILE = "confusion_matrix.csv"  # rows true, columns predicted (test set)

# What a run ended as (MLflow's run statuses).
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"

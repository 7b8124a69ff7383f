"""`medgrid tune` end to end: real local Ray, real MLflow store behind a private server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle
from mlflow.tracking import MlflowClient

from pipeline import tune as tuning
from pipeline.cli import main
from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.plan import NAME_KEY
from pipeline.sweep import SweepOptions, run_sweep
from pipeline.tracking.server import LocalTrackingServer
from pipeline.trial import TrialCheckpoint, TrialSession

pytestmark = pytest.mark.slow

SWEEP = {
    "linear.yaml": """\
name: linear
model: numpy_logreg
params: {epochs: 3, learning_rate: [0.01, 0.001]}
""",
    "net.yaml": """\
name: net
model: torch_ffn
params: {epochs: 3, batch_size: 32, hidden_size: 16, layers: 2, learning_rate: [0.05, 1.0e6]}
""",
    "both.yaml": "name: both\ninclude: [linear.yaml, net.yaml]\n",
}
TRIALS = {"linear lr=0.01 seed=42", "linear lr=0.001 seed=42", "net lr=0.05 seed=42",
          "net lr=1000000.0 seed=42"}
ARTIFACTS = {"curves.png", "confusion_matrix.csv", "confusion_matrix.png", "config.yaml",
             "weights.npz", "history.csv", "val_correct.npy"}
DIVERGED_ARTIFACTS = {"curves.png", "config.yaml", "weights.npz", "history.csv"}


def write_space(directory: Path) -> Path:
    for name, text in SWEEP.items():
        (directory / name).write_text(text)
    return directory / "both.yaml"


def children(client: MlflowClient, experiment: str = "medgrid") -> list:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`medgrid.kind` = 'trial'")
    return list(runs)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, tiny_npz: Path) -> Iterator[tuple[Path, MlflowClient]]:
    """One sweep through the command line, as a user runs it (its terminal output kept in
    terminal.txt), then a tracking server over its store for reading back."""
    work = tmp_path_factory.mktemp("sweep")
    space = write_space(work)
    done = subprocess.run([sys.executable, "-m", "pipeline", "tune", str(space), "--data",
                           str(tiny_npz), "--num-cpus", "2", "--max-concurrent", "2"], cwd=work,
                          capture_output=True, text=True, timeout=600)
    (work / "terminal.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    server = LocalTrackingServer(f"sqlite:///{work / 'mlflow.db'}", work / "mlruns",
                                 work / "server.log")
    with server:
        yield work, MlflowClient(server.url)


def test_one_finished_child_run_per_trial(finished_sweep) -> None:
    _, client = finished_sweep
    runs = children(client)
    assert sorted(r.info.run_name for r in runs) == sorted(TRIALS)
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.info.status == "FINISHED"
    for tag in ("space_sha256", "git_commit", "dataset", "dataset_md5", "test_split",
                "ray_address", "medgrid_version"):
        assert parent.data.tags.get(tag), tag


def test_child_runs_carry_config_metrics_and_tags(finished_sweep) -> None:
    _, client = finished_sweep
    for run in children(client):
        params = run.data.params
        assert set(TrialConfig.model_fields) <= set(params)
        epochs = int(params["epochs"])
        tags = run.data.tags
        assert tags["study"] in ("linear", "net") and tags["seed"] == "42" and tags["node"]
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        if tags["diverged"] == "false":
            assert len(history) == epochs
            for key in ("train/acc", "val/acc", "val/loss", "epoch_time_s"):
                assert len(client.get_metric_history(run.info.run_id, key)) == epochs
            assert 0.0 <= run.data.metrics["test/acc"] <= 1.0
        else:  # NaN weights: no test accuracy is measured, none is logged
            assert "test/acc" not in run.data.metrics


def test_diverging_trial_is_flagged_and_the_sweep_goes_on(finished_sweep) -> None:
    _, client = finished_sweep
    by_name = {r.info.run_name: r for r in children(client)}
    assert by_name["net lr=1000000.0 seed=42"].data.tags["diverged"] == "true"
    assert by_name["net lr=0.05 seed=42"].data.tags["diverged"] == "false"


def test_every_child_run_has_its_artifacts(finished_sweep, tmp_path: Path) -> None:
    _, client = finished_sweep
    for run in children(client):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        diverged = run.data.tags["diverged"] == "true"
        assert names == (DIVERGED_ARTIFACTS if diverged else ARTIFACTS), run.info.run_name
    run = children(client)[0]
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert f"learning_rate: {run.data.params['learning_rate']}" in Path(local).read_text()


def test_plain_mlflow_tools_read_every_artifact(finished_sweep, tmp_path: Path) -> None:
    work, _ = finished_sweep
    local = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")  # no server, no medgrid
    for run in children(local):
        assert run.info.artifact_uri.startswith((work / "mlruns").as_uri())
        names = {a.path for a in local.list_artifacts(run.info.run_id)}
        assert "history.csv" in names and "weights.npz" in names
    copy = local.download_artifacts(children(local)[0].info.run_id, "history.csv", str(tmp_path))
    assert Path(copy).read_text().startswith("epoch,")


def test_the_terminal_shows_medgrids_lines_not_ray_boxes(finished_sweep) -> None:
    work, _ = finished_sweep
    text = (work / "terminal.txt").read_text()
    for noise in ("╭", "Traceback", "TensorBoard", "Token authentication", "SystemExit",
                  "iteration"):
        assert noise not in text, noise
    lines = text.splitlines()
    for name in TRIALS:
        assert sum(line == f"[medgrid] start  {name}" for line in lines) == 1, name
        assert sum(line.startswith(f"[medgrid] done   {name}: ") for line in lines) == 1, name
    assert "[medgrid] done   net lr=1000000.0 seed=42: DIVERGED at epoch 1" in lines
    assert lines[-1].startswith("[medgrid] 4 trials: 3 finished, 1 diverged, 0 failed")


def test_parent_run_summarises_the_sweep(finished_sweep) -> None:
    _, client = finished_sweep
    runs = children(client)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    metrics = parent.data.metrics
    assert (metrics["trials_finished"], metrics["trials_diverged"],
            metrics["trials_failed"]) == (3, 1, 0)
    best = max((r for r in runs if r.data.tags["diverged"] == "false"),
               key=lambda r: r.data.metrics["val/acc"])
    assert metrics["best/val/acc"] == best.data.metrics["val/acc"]
    assert parent.data.tags["best_trial"] == best.info.run_name
    assert re.fullmatch(r"sweep both \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_ray_results_go_to_the_storage_directory(finished_sweep) -> None:
    work, _ = finished_sweep
    assert any((work / "ray_results").iterdir())


def _fail_net(config: TrialConfig, data: Splits, resume_from: TrialCheckpoint | None
              ) -> TrialSession:
    if config.study == "net":
        raise RuntimeError(f"injected failure in {config.study}")
    return TrialSession(config, data, resume_from)


def test_raising_trial_fails_in_mlflow_is_retried_and_the_sweep_goes_on(
        tmp_path: Path, tiny_npz: Path, monkeypatch) -> None:
    # Ray workers cannot import this test module: ship _fail_net by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.chdir(tmp_path)
    space = write_space(tmp_path)
    options = SweepOptions(data=tiny_npz, num_cpus=2, max_failures=1, experiment="faults")
    assert run_sweep(space, options, make_session=_fail_net) == 1
    with LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                             tmp_path / "server.log") as server:
        client = MlflowClient(server.url)
        runs = {r.info.run_name: r for r in children(client, "faults")}
        assert set(runs) == TRIALS  # one visible run per trial, retries included
        for name, run in runs.items():
            if name.startswith("net"):
                assert run.info.status == "FAILED"
                assert "injected failure" in run.data.tags["medgrid.error"]
                assert run.data.tags["medgrid.attempt"] == "2"  # Ray retried once
            else:
                assert run.info.status == "FINISHED"
        parent = client.get_run(next(iter(runs.values())).data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FAILED"


@pytest.mark.parametrize("asked", [("--gpus-per-trial", "1"), ("--cpus-per-trial", "5")])
def test_resources_no_node_has_are_refused_before_the_parent_run_exists(
        asked: tuple[str, str], tmp_path: Path, tiny_npz: Path, capsys, monkeypatch) -> None:
    """The refusal comes before any run is created, so nothing is left RUNNING in MLflow."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.yaml").write_text(SWEEP["net.yaml"])
    # A 2-CPU machine without GPUs, as Ray would report it (no need to start one)
    monkeypatch.setattr(tuning, "init_ray", lambda *args: False)
    monkeypatch.setattr(tuning.ray, "nodes", lambda: [{"Alive": True,
                                                       "Resources": {"CPU": 2.0}}])
    assert main(["tune", "net.yaml", "--data", str(tiny_npz), *asked]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: a trial asks for") and err.count("\n") == 1, err
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name("medgrid") is None  # not even the experiment


@pytest.mark.usefixtures("local_ray")  # the trial tags its Ray node
def test_a_trial_restored_after_its_run_finished_keeps_the_run_finished(
        tmp_path: Path, tiny_splits: Splits) -> None:
    """The driver died after a trial's run ended FINISHED but before Ray saved the trial as
    done, so `--resume` restores it from its last checkpoint. The trainable is built here as
    Tune builds it on a restore (load_checkpoint, then step): the run must stay FINISHED with
    each epoch once, not be reopened and left RUNNING (CI saw this once after a SIGKILL)."""
    from ray.tune.result import TRIAL_INFO

    from pipeline.sweep import plan_sweep
    from pipeline.tracking import runs
    from pipeline.tracking.client import TrackingClient

    space = tmp_path / "one.yaml"
    space.write_text("name: one\nmodel: numpy_logreg\nparams: {epochs: 2, learning_rate: 0.01}\n")
    plan = plan_sweep(space, SweepOptions()).plan
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = TrackingClient(uri)
    experiment = runs.ensure_experiment(client, "medgrid")
    target = tuning.TrackingTarget(uri, experiment,
                                   runs.start_sweep_run(client, experiment, "one", {}, {}))
    name = str(plan.points[0][NAME_KEY])

    class Direct(tuning.MedgridTrainable):
        def setup(self, config: dict) -> None:
            super().setup(config, tiny_splits, plan, target, TrialSession)

    def trainable() -> Direct:
        info = type("Info", (), {"trial_name": name, "trial_id": "t0"})()
        return Direct({**plan.points[0], TRIAL_INFO: info})

    first = trainable()
    first.step()
    first.save_checkpoint(str(tmp_path / "checkpoint"))  # Ray's last saved state: epoch 1
    assert first.step()["done"]  # epoch 2: the run ends FINISHED, then the driver dies
    restored = trainable()
    restored.load_checkpoint(str(tmp_path / "checkpoint"))
    assert restored.step()["done"]
    (run,) = children(MlflowClient(uri))
    assert run.info.run_name == name and run.info.status == "FINISHED"
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "val/acc")
    assert sorted(point.step for point in history) == [1, 2]


# Starts the sweep's local Ray in a fresh interpreter (not this test process's Ray) and prints
# how many worker processes it has after a while idle, then after one task, and which of Ray's
# Python helper processes run beside them ("verbose": as `--verbose` starts it). The helpers
# are found by the session's name in their command line, which each of those scripts gets.
IDLE_WORKERS_PROBE = """
import json, os, sys, time
import ray
from pipeline import tune as tuning

def processes():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline").read().split(chr(0))
            parent = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        yield pid, parent, args

def workers(session):
    # the raylet of this Ray starts the workers; its agents are no workers
    raylets = {pid for pid, _, args in processes()
               if args[0].endswith("/raylet") and any(session in a for a in args)}
    return sum(parent in raylets and (args[0].startswith("ray::") or
                                      any("default_worker.py" in a for a in args))
               and not args[0].endswith(("DashboardAgent", "RuntimeEnvAgent"))
               for _, parent, args in processes())

def helpers(session):
    # Ray's Python processes of this session beside the workers, by script name
    return sorted({os.path.basename(a) for _, _, args in processes()
                   if any(session in x for x in args) for a in args if a.endswith(".py")})

tuning.init_ray(None, num_cpus=2, verbose=sys.argv[1] == "verbose")
session = ray._private.worker._global_node.session_name
time.sleep(4)
idle = workers(session)
ray.get(ray.remote(lambda: 1).remote())
print(json.dumps({"idle": idle, "after_a_task": workers(session), "helpers": helpers(session)}))
tuning.shutdown_ray()
"""


def test_a_local_ray_starts_no_idle_workers_that_trials_would_not_use(tmp_path: Path) -> None:
    """Ray starts a worker per CPU with the node, but Tune's trial actors carry a runtime_env
    of their own and never take them: on a small machine those idle workers' start-up slowed
    the first trials by seconds. The sweep's Ray starts workers only when something runs."""
    seen = _probe_local_ray(tmp_path, "quiet")
    assert seen["idle"] == 0 and seen["after_a_task"] >= 1, seen


def _probe_local_ray(cwd: Path, how: str) -> dict:
    done = subprocess.run([sys.executable, "-c", IDLE_WORKERS_PROBE, how], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["quiet", "verbose"])
def test_a_local_ray_starts_only_the_python_helpers_a_sweep_uses(
        tmp_path: Path, how: str) -> None:
    """The sweep's own Ray has one node that never scales: no autoscaler monitor, and no API
    server (`dashboard.py`, which with the dashboard off served only usage statistics and held
    up `ray.init` while it started). Its log monitor, which streams the workers' output to the
    driver, runs only under --verbose (the only time that output is shown). All three used to
    start with every sweep, about 1.5 s of CPU."""
    seen = _probe_local_ray(tmp_path, how)
    assert seen["helpers"] == (["log_monitor.py"] if how == "verbose" else []), seen


# A local Ray as a sweep starts it, with an actor whose process is slow to exit (an atexit
# sleep stands in for a trial's interpreter with torch, MLflow and matplotlib loaded). Tune
# ends its trials' actors this way, gracefully, just before the sweep shuts Ray down. Prints
# whether the actor's process is still alive when shutdown_ray returns.
SLOW_EXIT_PROBE = """
import atexit, json, os, time
import ray
from pipeline import tune as tuning
from pipeline.process_session import alive, process_tree

@ray.remote
class SlowToExit:
    def pid(self):
        atexit.register(time.sleep, 3)
        return os.getpid()

tuning.init_ray(None, num_cpus=2)
actor = SlowToExit.remote()
worker = process_tree([ray.get(actor.pid.remote())])
actor.__ray_terminate__.remote()  # as Tune stops a trial's actor
time.sleep(0.3)
tuning.shutdown_ray()
print(json.dumps({"alive_after_shutdown": len(alive(worker))}))
"""


def test_a_local_ray_has_no_process_left_when_its_shutdown_returns(tmp_path: Path) -> None:
    """`ray.shutdown` returned while a trial's worker was still exiting; a sweep stopped by
    Ctrl-C then exited with that worker alive (seen as a leftover process under load)."""
    done = subprocess.run([sys.executable, "-c", SLOW_EXIT_PROBE], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"alive_after_shutdown": 0}

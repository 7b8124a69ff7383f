"""Sampled search, early stopping and checkpoints on real tiny sweeps (real Ray, real MLflow):
what a user exploring beyond the homework's grid relies on."""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle as cloudpickle
from conftest import steps, trial_runs
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import TrialConfig, load_space
from pipeline.data import Splits, load_splits
from pipeline.process_session import kill_session
from pipeline.sweep import SweepOptions, plan_sweep, run_sweep
from pipeline.trial import TrialCheckpoint, TrialSession, run_trial
from pipeline.tune import param_space, searcher

pytestmark = pytest.mark.slow

EXPLORE = """\
name: explore
model: torch_ffn
params:
  epochs: 6
  batch_size: 32
  hidden_size: 16
  layers: 1
  learning_rate: {loguniform: [0.001, 1.0]}
  dropout: {uniform: [0.0, 0.5]}
search: {algorithm: optuna, num_samples: 8, seed: 3}
scheduler: {asha: {grace_period: 1, reduction_factor: 2}}
"""


@pytest.fixture(scope="module")
def explored(tmp_path_factory, tiny_npz: Path) -> Path:
    """An Optuna + ASHA sweep of 8 sampled FFNs through the command line."""
    work = tmp_path_factory.mktemp("explore")
    (work / "explore.yaml").write_text(EXPLORE)
    done = subprocess.run([sys.executable, "-m", "pipeline", "tune", "explore.yaml", "--data",
                           str(tiny_npz), "--num-cpus", "2"], cwd=work, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return work


def test_asha_stops_some_trials_and_their_runs_hold_exactly_the_epochs_reached(explored: Path
                                                                               ) -> None:
    db = explored / "mlflow.db"
    runs = trial_runs(db)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    stopped = [r for r in runs if r.data.tags["stopped_early"] == "true"]
    assert 0 < len(stopped) < 8
    for run in runs:
        reached = steps(db, run.info.run_id)
        if run in stopped:
            epoch = int(run.data.tags["stopped_epoch"])
            assert reached == list(range(1, epoch + 1)) and epoch < 6
        else:
            assert reached == list(range(1, 7))
        assert 0.0 <= run.data.metrics["test/acc"] <= 1.0  # stopped ones are tested too
        names = {a.path for a in MlflowClient(f"sqlite:///{db}").list_artifacts(run.info.run_id)}
        assert {"weights.npz", "history.csv", "val_correct.npy"} <= names


def test_sampled_values_lie_in_their_ranges_and_names_show_them(explored: Path) -> None:
    runs = trial_runs(explored / "mlflow.db")
    for run in runs:
        lr, dropout = float(run.data.params["learning_rate"]), float(run.data.params["dropout"])
        assert 0.001 <= lr <= 1.0 and 0.0 <= dropout <= 0.5
        assert run.info.run_name.startswith(f"explore lr={lr:.3g} dropout={dropout:.3g} ")
    assert len({r.info.run_name for r in runs}) == 8


def test_optuna_with_a_seed_samples_the_same_configs_as_before(explored: Path) -> None:
    """The sweep's 8 configs are exactly what Optuna suggests, offline, for this space and seed
    (its first draws are seeded random ones): the same space and seed sample the same configs."""
    plan = plan_sweep(explored / "explore.yaml", SweepOptions()).plan
    offline = searcher(plan)
    offline.set_search_properties("val/acc", "max", param_space(plan))
    expected = set()
    for i in range(8):
        config = offline.suggest(f"t{i}")
        expected.add((round(config["learning_rate"], 12), round(config["dropout"], 12)))
    runs = trial_runs(explored / "mlflow.db")
    found = {(round(float(r.data.params["learning_rate"]), 12),
              round(float(r.data.params["dropout"]), 12)) for r in runs}
    assert found == expected


def test_a_sampled_sweep_parent_says_what_was_sampled_and_what_won(explored: Path) -> None:
    client = MlflowClient(f"sqlite:///{explored / 'mlflow.db'}")
    runs = trial_runs(explored / "mlflow.db")
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["medgrid.sampled"] == '{"learning_rate": "loguniform", ' \
                                                  '"dropout": "uniform"}'
    metrics = parent.data.metrics
    stopped = sum(r.data.tags["stopped_early"] == "true" for r in runs)
    assert (metrics["trials_finished"], metrics["trials_stopped_early"]) == (8 - stopped, stopped)
    complete = [r for r in runs if r.data.tags["stopped_early"] == "false"]
    assert metrics["best/val/acc"] == max(r.data.metrics["val/acc"] for r in complete)


# ------------------------------------------------------------------ a worker killed mid-trial

CHECKPOINTED = """\
name: ckpt
model: torch_ffn
params: {epochs: 6, batch_size: 32, hidden_size: 16, layers: 2, dropout: 0.2,
         optimizer: adam, learning_rate: 0.01}
"""
KILL_AT_EPOCH = 4


def _killed_once_at_epoch(config: TrialConfig, data: Splits,
                          resume_from: TrialCheckpoint | None, *, marker: Path) -> TrialSession:
    """A session whose first attempt dies (SIGKILL, as an OOM kill or a lost node would) in
    the middle of epoch 4: trained, not yet logged or checkpointed. `marker` (a file) says
    that the first attempt already died."""

    class Killed(TrialSession):
        def step(self):  # type: ignore[no-untyped-def]
            record = super().step()
            if record.epoch == KILL_AT_EPOCH and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return record

    return Killed(config, data, resume_from)


def test_a_worker_killed_mid_trial_resumes_from_its_checkpoint_to_the_same_weights(
        tmp_path: Path, tiny_npz: Path, monkeypatch) -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt.yaml").write_text(CHECKPOINTED)
    options = SweepOptions(data=tiny_npz, num_cpus=2, max_failures=1)
    kill_once = functools.partial(_killed_once_at_epoch, marker=tmp_path / "killed")
    assert run_sweep(tmp_path / "ckpt.yaml", options, make_session=kill_once) == 0
    assert (tmp_path / "killed").exists()  # the first attempt did die
    db = tmp_path / "mlflow.db"
    [run] = trial_runs(db)
    assert run.info.status == "FINISHED" and run.data.tags["medgrid.attempt"] == "2"
    for key in ("train/loss", "val/acc", "epoch_time_s"):
        assert steps(db, run.info.run_id, key) == [1, 2, 3, 4, 5, 6]  # each epoch once
    client = MlflowClient(f"sqlite:///{db}")
    weights = np.load(client.download_artifacts(run.info.run_id, "weights.npz", str(tmp_path)))
    config = load_space(tmp_path / "ckpt.yaml").studies[0]
    expected = run_trial(TrialConfig(study="ckpt", model="torch_ffn", **config.params),
                         load_splits(tiny_npz))
    assert set(weights.files) == set(expected.weights)
    for name, array in expected.weights.items():
        assert np.array_equal(weights[name], array), name  # bitwise, as if never killed
    assert math.isclose(run.data.metrics["test/acc"], expected.test_acc)


# ------------------------------------------------------ the driver killed, then --resume

SAMPLED = """\
name: sampled
model: torch_ffn
params:
  epochs: 4
  batch_size: 16
  hidden_size: 32
  layers: 2
  learning_rate: {loguniform: [0.001, 0.1]}
search: {algorithm: random, num_samples: 6, seed: 7}
"""


def kill_then_resume(work: Path, data: Path, damage: Callable[[Path], None] | None = None
                     ) -> str:
    """Run the sampled sweep in `work`, SIGKILL its driver once 2 trials finished, let `damage`
    change what the driver left behind, then `--resume` it: all 6 distinct trials must end
    FINISHED, each epoch logged once, the finished ones kept. Returns the resume's output."""
    (work / "sampled.yaml").write_text(SAMPLED)
    command = [sys.executable, "-m", "pipeline", "tune", "sampled.yaml", "--data",
               str(data), "--num-cpus", "1", "--max-concurrent", "1"]
    db = work / "mlflow.db"
    driver = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if sum(r.info.status == "FINISHED" for r in trial_runs(db)) >= 2:
            break
        time.sleep(0.3)
    assert driver.poll() is None, "the sweep ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # The killed driver's local Ray and MLflow server outlive it, in its session: kill them
    # there (not `ray stop --force`, which would also stop this process's own Ray).
    assert kill_session(driver.pid) == []
    before = {r.info.run_name for r in trial_runs(db) if r.info.status == "FINISHED"}
    assert 2 <= len(before) < 6
    if damage is not None:
        damage(work)
    log = work / "resume.log"
    with open(log, "wb") as out:
        resumed = subprocess.Popen([*command, "--resume"], cwd=work, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = resumed.wait(timeout=600)
    finally:
        kill_session(resumed.pid)  # whatever it left (nothing, after a clean exit)
    assert code == 0, log.read_text()
    runs = trial_runs(db)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.params["learning_rate"] for r in runs}) == 6  # none sampled twice
    assert before <= {r.info.run_name for r in runs}
    for run in runs:
        assert steps(db, run.info.run_id) == [1, 2, 3, 4]
    return log.read_text()


def test_driver_killed_then_resume_ends_with_num_samples_distinct_trials(
        tmp_path: Path, tiny_npz: Path) -> None:
    kill_then_resume(tmp_path, tiny_npz)


def cut_short_rays_saved_state(work: Path) -> None:
    """What a SIGKILL while Tune writes its experiment state leaves: Tune writes the file in
    place, so it ends mid-JSON (CI hit this once: the resume failed at its first trial)."""
    (state,) = work.glob("ray_results/*/experiment_state-*.json")
    text = state.read_bytes()
    state.write_bytes(text[: len(text) // 2])


def test_a_resume_whose_ray_state_was_cut_short_starts_the_trials_again_and_keeps_the_finished(
        tmp_path: Path, tiny_npz: Path) -> None:
    output = kill_then_resume(tmp_path, tiny_npz, damage=cut_short_rays_saved_state)
    (note,) = [line for line in output.splitlines() if "saved state" in line]
    assert note.startswith("[medgrid] NOTE: Ray's saved state of this sweep cannot be read "
                           "(experiment_state-") and "JSONDecodeError" in note


# --------------------------------------------------------------- bad search blocks

BASE = "name: s\nmodel: torch_ffn\nparams: {epochs: 2, learning_rate: %s%s}\n%s"
BAD_SEARCH = {
    "unknown distribution": ("{lognormal: [0.1, 1]}", "", "search: {algorithm: random, "
                             "num_samples: 2}\n"),
    "low >= high": ("{uniform: [0.5, 0.1]}", "", "search: {algorithm: random, "
                    "num_samples: 2}\n"),
    "loguniform from 0": ("{loguniform: [0.0, 1.0]}", "", "search: {algorithm: optuna, "
                          "num_samples: 2}\n"),
    "distribution under grid": ("{uniform: [0.1, 1.0]}", "", ""),
    "num_samples missing": ("{uniform: [0.1, 1.0]}", "", "search: {algorithm: random}\n"),
    "num_samples zero": ("{uniform: [0.1, 1.0]}", "", "search: {algorithm: optuna, "
                         "num_samples: 0}\n"),
    "metric not reported": ("{uniform: [0.1, 1.0]}", "", "search: {algorithm: random, "
                            "num_samples: 2, metric: test/acc}\n"),
    "dropout range reaching 1": ("0.1", ", dropout: {uniform: [0.0, 1.0]}",
                                 "search: {algorithm: random, num_samples: 2}\n"),
}


@pytest.mark.parametrize("case", BAD_SEARCH)
def test_bad_search_blocks_are_one_line_and_exit_2(case: str, tmp_path: Path, capsys) -> None:
    lr, extra, search = BAD_SEARCH[case]
    (tmp_path / "s.yaml").write_text(BASE % (lr, extra, search))
    assert main(["tune", str(tmp_path / "s.yaml"), "--data", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == [tmp_path / "s.yaml"]  # nothing launched or written

"""Search spaces: every shipped YAML loads and expands; bad files fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import TrialConfig, expand, load_space
from pipeline.errors import UserError

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
STUDY = """\
name: tiny
description: a test study
model: torch_ffn
seeds: [1, 2]
params:
  epochs: 3
  learning_rate: [0.1, 0.01]
  batch_size: 16
variants:
  - {}
  - {dropout: 0.2}
"""


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads_and_expands(path: Path) -> None:
    sweep = load_space(path)
    trials = expand(sweep)
    assert trials, f"{path.name} expands to no trial"
    assert all(isinstance(t.config, TrialConfig) for t in trials)
    assert len({t.name for t in trials}) == len(trials), "run names must be unique"


def test_hw1_runs_every_homework_study() -> None:
    trials = expand(load_space(SPACES / "hw1.yaml"))
    per_study: dict[str, int] = {}
    for trial in trials:
        per_study[trial.config.study] = per_study.get(trial.config.study, 0) + 1
    assert per_study == {"q1_perceptron": 1, "q1_logreg": 2, "q1_mlp": 1, "q2_logreg": 3,
                         "q2_batch": 2, "q2_lr": 4, "q2_reg": 3}
    lr = {t.config.learning_rate for t in trials if t.config.study == "q2_lr"}
    assert lr == {1.0, 0.1, 0.01, 0.001}
    reg = [t.config for t in trials if t.config.study == "q2_reg"]
    assert {(c.l2_decay, c.dropout) for c in reg} == {(0.0, 0.0), (1e-4, 0.0), (0.0, 0.2)}
    assert all(c.epochs == 150 and c.batch_size == 256 for c in reg)


def test_grid_times_variants_times_seeds(tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(STUDY)
    trials = expand(load_space(space))
    assert len(trials) == 2 * 2 * 2  # seeds x learning rates x variants
    names = [t.name for t in trials]
    assert "tiny lr=0.1 dropout=0.2 seed=2" in names
    assert "tiny lr=0.01 baseline seed=1" in names
    by_name = {t.name: t.config for t in trials}
    assert by_name["tiny lr=0.1 dropout=0.2 seed=2"].dropout == 0.2
    assert by_name["tiny lr=0.1 dropout=0.2 seed=2"].seed == 2


def test_content_hash_changes_with_an_included_file(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(STUDY)
    (tmp_path / "all.yaml").write_text("name: all\ninclude: [tiny.yaml]\n")
    before = load_space(tmp_path / "all.yaml").content_sha256
    (tmp_path / "tiny.yaml").write_text(STUDY.replace("epochs: 3", "epochs: 4"))
    assert load_space(tmp_path / "all.yaml").content_sha256 != before


BAD = [
    ("unknown key", STUDY.replace("batch_size: 16", "batch_sise: 16"), "batch_sise"),
    ("wrong type", STUDY.replace("epochs: 3", "epochs: three"), "epochs"),
    ("lr <= 0", STUDY.replace("[0.1, 0.01]", "[0.1, -0.5]"), "-0.5"),
    ("batch < 1", STUDY.replace("batch_size: 16", "batch_size: 0"), "batch_size"),
    ("dropout >= 1", STUDY.replace("dropout: 0.2", "dropout: 1.0"), "dropout"),
    ("unknown model", STUDY.replace("torch_ffn", "resnet"), "resnet"),
    ("missing model", STUDY.replace("model: torch_ffn\n", ""), "model"),
    ("empty grid", STUDY.replace("[0.1, 0.01]", "[]"), "learning_rate"),
    ("not yaml", "name: [unclosed\n", "YAML"),
    ("not a mapping", "- 1\n- 2\n", "mapping"),
]


@pytest.mark.parametrize("case,text,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_space_is_one_line_naming_file_and_key(tmp_path: Path, case: str, text: str,
                                                   needle: str) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(text)
    with pytest.raises(UserError) as info:
        load_space(space)
    message = str(info.value)
    assert "\n" not in message
    assert str(space) in message and needle in message


def test_missing_include_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text("name: all\ninclude: [nope.yaml]\n")
    with pytest.raises(UserError, match="nope.yaml"):
        load_space(tmp_path / "all.yaml")


def test_tune_cli_rejects_bad_space_before_launching(tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "bad.yaml"
    space.write_text(STUDY.replace("[0.1, 0.01]", "[0.1, 0]"))
    assert main(["tune", str(space), "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learning_rate" in err[0] and "bad.yaml" in err[0]
    # nothing launched or written: no tracking store, no Ray results
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_numpy_model_with_torch_only_option_is_rejected_at_load(tmp_path: Path) -> None:
    space = tmp_path / "np.yaml"
    space.write_text("name: np\nmodel: numpy_mlp\nparams: {epochs: 2, learning_rate: 0.001, "
                     "dropout: 0.3}\n")
    with pytest.raises(UserError, match="dropout.*numpy_mlp") as info:
        load_space(space)
    assert str(space) in str(info.value)

"""Search spaces: every shipped YAML loads and expands (or, sampled, describes its space); bad
files fail with one clear line; the homework grid keeps its trial names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import (
    LONG_NAMES,
    REPORTED_METRICS,
    SHORT_NAMES,
    AshaSpec,
    Distribution,
    PlannedTrial,
    SearchSpec,
    TrialConfig,
    config_from_values,
    expand,
    expand_study,
    load_space,
    merge_identical,
    planned_trials,
    sampled_keys,
    sampled_space,
    trial_name,
)
from pipeline.errors import UserError

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

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


SAMPLED = """\
name: samp
model: torch_ffn
params:
  epochs: 4
  batch_size: 16
  learning_rate: {loguniform: [0.001, 1.0]}
  dropout: 0.1
search: {algorithm: random, num_samples: 5}
"""

# `medgrid tune search_spaces/hw1.yaml` ran these 16 trials before sampled search existed.
HW1_NAMES = [
    "q1_perceptron seed=42",
    "q1_logreg lr=0.01 seed=42", "q1_logreg lr=0.001 seed=42",
    "q1_mlp seed=42",
    "q2_logreg lr=0.1 seed=42", "q2_logreg lr=0.01 seed=42", "q2_logreg lr=0.001 seed=42",
    "q2_batch batch=16 seed=42", "q2_batch batch=1024 seed=42",
    "q2_lr lr=1.0 seed=42", "q2_lr lr=0.1 seed=42", "q2_lr lr=0.01 seed=42",
    "q2_lr lr=0.001 seed=42",
    "q2_reg baseline seed=42", "q2_reg l2=0.0001 seed=42", "q2_reg dropout=0.2 seed=42",
]


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads_and_expands(path: Path) -> None:
    sweep = load_space(path)
    trials = expand(sweep)
    if sweep.sampled_study is not None:  # drawn while it runs: no list beforehand
        assert trials == [] and len(sweep.studies) == 1
        assert sampled_keys(sweep.sampled_study)
        return
    assert trials, f"{path.name} expands to no trial"
    assert all(isinstance(t.config, TrialConfig) for t in trials)
    assert len({t.name for t in trials}) == len(trials), "run names must be unique"


def test_hw1_keeps_its_trial_names_and_configs() -> None:
    sweep = load_space(SPACES / "hw1.yaml")
    trials = expand(sweep)
    assert [t.name for t in trials] == HW1_NAMES
    by_name = {t.name: t.config for t in trials}
    assert by_name["q1_perceptron seed=42"] == TrialConfig(
        study="q1_perceptron", model="numpy_perceptron", seed=42, epochs=20, learning_rate=1.0)
    assert by_name["q2_batch batch=1024 seed=42"] == TrialConfig(
        study="q2_batch", model="torch_ffn", epochs=20, learning_rate=0.1, batch_size=1024,
        layers=2)
    assert by_name["q2_reg l2=0.0001 seed=42"] == TrialConfig(
        study="q2_reg", model="torch_ffn", epochs=150, learning_rate=0.1, batch_size=256,
        layers=2, l2_decay=1e-4)
    # a grid sweep: default search block, no scheduler, a checkpoint every epoch
    assert sweep.search == SearchSpec() and sweep.scheduler is None
    assert sweep.checkpoint_every == 1 and sweep.sampled_study is None
    # trial_name of a grid study is expand's name
    study = next(s for s in sweep.studies if s.name == "q2_reg")
    assert [trial_name(study, t.config) for t in expand_study(study)] == HW1_NAMES[-3:]


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
    # issue 14: accepted though wrong, or a traceback
    ("lr .inf", STUDY.replace("[0.1, 0.01]", ".inf"), "learning_rate = inf: input should be a "
     "finite number"),
    ("lr .nan in a grid", STUDY.replace("[0.1, 0.01]", "[0.1, .nan]"), "learning_rate = nan"),
    ("boolean epochs", STUDY.replace("epochs: 3", "epochs: true"),
     "epochs = true: a boolean where an integer is expected"),
    ("boolean lr", STUDY.replace("[0.1, 0.01]", "[0.1, yes]"),
     "learning_rate = true: a boolean where a number is expected"),
    ("boolean seed", STUDY.replace("seeds: [1, 2]", "seeds: [1, true]"), "seeds = true"),
    ("duplicate key", STUDY.replace("  batch_size: 16\n", "  batch_size: 16\n  epochs: 5\n"),
     "duplicate key 'epochs' at line 9; expected each key once"),
    ("duplicate top key", STUDY + "model: numpy_mlp\n", "duplicate key 'model'"),
    ("name with a quote", STUDY.replace("name: tiny", "name: \"q2'lr\""),
     "name = \"q2'lr\": a name may contain letters, digits, '_', '.' and '-' only"),
    ("name with a slash", STUDY.replace("name: tiny", "name: q2/lr"), "name = 'q2/lr'"),
    ("list in a variant", STUDY.replace("{dropout: 0.2}", "{dropout: [0.2, 0.5]}"),
     "variants[1].dropout = [0.2, 0.5]: a variant sets one value per key"),
    ("distribution in a variant", STUDY.replace("{dropout: 0.2}", "{dropout: {uniform: [0, 1]}}"),
     "variants[1].dropout"),
    ("no epochs anywhere", STUDY.replace("  epochs: 3\n", ""), "missing key 'params.epochs'"),
    ("alias to itself", "name: &a [*a]\n", "alias *a at line 1 refers to a node that contains"),
    ("nested too deep", "name: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than"),
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


def test_non_utf8_space_is_one_line_naming_the_byte(tmp_path: Path) -> None:
    space = tmp_path / "latin1.yaml"
    space.write_bytes(STUDY.replace("a test study", "caf\u00e9").encode("latin-1"))
    message = _one_line_error(space)
    assert str(space) in message and "not UTF-8 text (byte 0xe9 at offset" in message


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=True))


def test_alias_expansion_beyond_the_bound_is_refused(tmp_path: Path) -> None:
    # 9**9 "lol"s once expanded, in 300 bytes; used to run past 60 s and 2.7 GB.
    message = _one_line_error(_write(tmp_path, BILLION_LAUGHS))
    assert "more than 100,000 YAML nodes once aliases are expanded" in message


def test_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    text = STUDY.replace("{dropout: 0.2}",
                         "{dropout: &d 0.2}\n  - {dropout: *d, l2_decay: 0.001}")
    trials = expand(load_space(_write(tmp_path, text)))
    assert len(trials) == 2 * 2 * 3  # seeds x learning rates x variants
    assert {t.config.dropout for t in trials} == {0.0, 0.2}


@pytest.mark.parametrize("source", ["file", "/dev/zero"])
def test_space_over_the_size_limit_is_refused_unread(tmp_path: Path, source: str) -> None:
    if source == "file":
        space = _write(tmp_path, STUDY + "#" * 1_000_000 + "\n")
    else:
        space = Path(source)
        if not space.exists():
            pytest.skip("no /dev/zero on this system")
    message = _one_line_error(space)
    assert str(space) in message and "larger than 1,000,000 bytes" in message


def test_sweep_name_follows_the_name_rule(tmp_path: Path) -> None:
    _write(tmp_path, STUDY, "tiny.yaml")
    named = _write(tmp_path, "name: all'of\ninclude: [tiny.yaml]\n", "all.yaml")
    assert "name = \"all'of\": a name may contain" in _one_line_error(named)
    unnamed = _write(tmp_path, "include: [tiny.yaml]\n", "my sweep.yaml")
    assert "name (the file's stem, as it has no name key) = 'my sweep'" in (
        _one_line_error(unnamed))


def test_planned_trials_counts_what_expand_makes(tmp_path: Path) -> None:
    for path in [*sorted(SPACES.glob("*.yaml")), _write(tmp_path, STUDY)]:
        sweep = load_space(path)
        if sweep.sampled_study is None:
            assert planned_trials(sweep) == len(expand(sweep)), path.name
    sampled = load_space(_write(tmp_path, SAMPLED.replace("epochs: 4", "epochs: [2, 4]"),
                                "samp.yaml"))
    assert planned_trials(sampled) == 5 * 2  # Ray repeats the grid for every sample


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


HUGE_GRID = "name: huge\nmodel: torch_ffn\nseeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nparams:\n" + (
    "".join(f"  {key}: [{', '.join(str(v) for v in values)}]\n" for key, values in [
        ("epochs", range(1, 11)), ("learning_rate", [i / 10 for i in range(1, 11)]),
        ("batch_size", range(1, 11)), ("hidden_size", range(1, 11)), ("layers", range(1, 11)),
        ("dropout", [i / 10 for i in range(10)]), ("l2_decay", [i / 10 for i in range(10)])]))


def _tune_refused(tmp_path: Path, capsys, argv: list[str]) -> str:
    """`medgrid tune ARGV` run in tmp_path exits 2 with one line and creates nothing."""
    assert main(["tune", *argv, "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for made in ["mlflow.db", "mlruns", "ray_results"]:
        assert not (tmp_path / made).exists(), made
    return err[0]


@pytest.mark.parametrize("content,needle", [
    (HUGE_GRID, "huge.yaml: plans 100,000,000 trials, more than --max-trials 10,000"),
    (BILLION_LAUGHS, "more than 100,000 YAML nodes"),
    ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
    (STUDY.replace("name: tiny", "name: \"q2'lr\""), "a name may contain letters, digits"),
], ids=["10^8 grid", "billion laughs", "latin-1", "unsafe name"])
def test_tune_refuses_hostile_space_before_anything_starts(tmp_path: Path, monkeypatch, capsys,
                                                          content: str | bytes,
                                                          needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "huge.yaml"
    space.write_bytes(content.encode() if isinstance(content, str) else content)
    assert needle in _tune_refused(tmp_path, capsys, [str(space)])


def test_tune_max_trials_is_a_limit_the_user_sets(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    space = _write(tmp_path, STUDY)  # 8 trials
    line = _tune_refused(tmp_path, capsys, [str(space), "--max-trials", "7"])
    assert "plans 8 trials, more than --max-trials 7" in line
    line = _tune_refused(tmp_path, capsys, [str(space), "--seeds", "3", "--max-trials", "8"])
    assert "plans 12 trials" in line  # --seeds counts


def _read_only_dirs() -> list:
    """Directories a sweep cannot write in: /sys (refused even to root) and, where the tests do
    not run as root, one whose permissions say so."""
    cases = [pytest.param("sys", id="/sys")]
    cases.append(pytest.param("chmod", id="chmod 555", marks=pytest.mark.skipif(
        os.geteuid() == 0, reason="root writes in a read-only-by-mode directory")))
    return cases


@pytest.mark.parametrize("kind", _read_only_dirs())
def test_tune_refuses_unwritable_storage(tmp_path: Path, monkeypatch, capsys,
                                         kind: str) -> None:
    monkeypatch.chdir(tmp_path)
    space = _write(tmp_path, STUDY)
    if kind == "sys":
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no /sys on this system")
        storage, where = Path("/sys/kernel/medgrid_results"), "/sys/kernel"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        storage, where = locked / "ray_results", str(locked)
    line = _tune_refused(tmp_path, capsys, [str(space), "--storage", str(storage)])
    assert f"--storage {storage}: cannot write in {where}" in line
    assert not storage.exists()


def test_tune_refuses_storage_under_a_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    space = _write(tmp_path, STUDY)
    line = _tune_refused(tmp_path, capsys, [str(space), "--storage", str(space / "results")])
    assert f"{space} is not a directory" in line


def test_numpy_model_with_torch_only_option_is_rejected_at_load(tmp_path: Path) -> None:
    space = tmp_path / "np.yaml"
    space.write_text("name: np\nmodel: numpy_mlp\nparams: {epochs: 2, learning_rate: 0.001, "
                     "dropout: 0.3}\n")
    with pytest.raises(UserError, match="dropout.*numpy_mlp") as info:
        load_space(space)
    assert str(space) in str(info.value)


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_explore_ffn_is_an_optuna_study_with_asha() -> None:
    sweep = load_space(SPACES / "explore_ffn.yaml")
    study = sweep.sampled_study
    assert study is not None and sweep.studies == (study,)
    assert sweep.search == SearchSpec(algorithm="optuna", num_samples=24, metric="val/acc",
                                      mode="max", seed=0)
    assert sweep.scheduler == AshaSpec(grace_period=2, reduction_factor=2, max_t=20)
    assert study.scheduler == sweep.scheduler and sweep.checkpoint_every == 1
    assert sampled_keys(study) == ["learning_rate", "dropout", "l2_decay"]
    space = sampled_space(study)
    assert space == {"study": "explore_ffn", "model": "torch_ffn", "seed": 42, "epochs": 20,
                     "batch_size": 16, "hidden_size": 200, "layers": 2, "activation": "relu",
                     "optimizer": "sgd",
                     "learning_rate": Distribution("loguniform", 0.001, 1.0),
                     "dropout": Distribution("uniform", 0.0, 0.5),
                     "l2_decay": Distribution("loguniform", 1e-6, 1e-2)}
    assert expand(sweep) == []


def test_config_from_values_and_trial_name() -> None:
    np = pytest.importorskip("numpy")
    study = load_space(SPACES / "explore_ffn.yaml").studies[0]
    drawn = {"learning_rate": np.float64(0.031622776), "dropout": np.float64(0.123456),
             "l2_decay": 3.1622776e-5}
    config = config_from_values(study, drawn)
    assert config.learning_rate == pytest.approx(0.031622776)
    assert type(config.learning_rate) is float and config.epochs == 20 and config.layers == 2
    assert trial_name(study, config) == "explore_ffn lr=0.0316 dropout=0.123 l2=3.16e-05 seed=42"
    # Ray passes the whole config back, fixed values and numpy ints included
    full = {**sampled_space(study), **drawn, "seed": np.int64(42), "batch_size": np.int64(16)}
    again = config_from_values(study, full)
    assert again == config and type(again.batch_size) is int and type(again.seed) is int


DRAWN = {"learning_rate": 0.1, "dropout": 0.1, "l2_decay": 1e-4}
BAD_VALUES = [
    ("value outside the rule", {**DRAWN, "dropout": 1.0}, "dropout = 1.0"),
    ("a range left undrawn", {"dropout": 0.1, "l2_decay": 1e-4}, "learning_rate"),
    ("unknown key", {**DRAWN, "lr": 1}, "'lr'"),
    ("another study", {**DRAWN, "study": "q2_lr"}, "study"),
]


@pytest.mark.parametrize("case,values,needle", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_config_from_bad_values_is_one_line(case: str, values: dict, needle: str) -> None:
    study = load_space(SPACES / "explore_ffn.yaml").studies[0]
    with pytest.raises(UserError) as info:
        config_from_values(study, values)
    message = str(info.value)
    assert "\n" not in message and "explore_ffn" in message and needle in message


def test_randint_excludes_its_high_bound(tmp_path: Path) -> None:
    text = SAMPLED.replace("batch_size: 16", "layers: {randint: [1, 4]}")
    study = load_space(_write(tmp_path, text)).studies[0]
    layers = sampled_space(study)["layers"]
    assert layers == Distribution("randint", 1, 4)
    assert [v for _, v in layers.ends()] == [1, 3]  # 4 is never drawn
    # the drawn int stays an int in the config and the name
    config = config_from_values(study, {"learning_rate": 0.5, "layers": 3})
    assert config.layers == 3 and trial_name(study, config) == "samp layers=3 lr=0.5 seed=42"
    # torch_logreg allows hidden_size 200 only: [200, 201] draws 200; [200, 202] may draw 201
    logreg = SAMPLED.replace("torch_ffn", "torch_logreg").replace("dropout: 0.1", "")
    load_space(_write(tmp_path, logreg.replace("batch_size: 16",
                                               "hidden_size: {randint: [200, 201]}")))
    message = _one_line_error(_write(tmp_path, logreg.replace(
        "batch_size: 16", "hidden_size: {randint: [200, 202]}")))
    assert "hidden_size = 201" in message


def test_random_search_mixes_grids_and_choices(tmp_path: Path) -> None:
    text = SAMPLED.replace("batch_size: 16", "batch_size: [16, 64]").replace(
        "dropout: 0.1", "activation: {choice: [relu, tanh]}\n  dropout: 0.1")
    study = load_space(_write(tmp_path, text)).studies[0]
    assert sampled_keys(study) == ["batch_size", "learning_rate", "activation"]
    space = sampled_space(study)
    assert space["batch_size"] == [16, 64] and space["dropout"] == 0.1
    assert space["activation"] == Distribution("choice", values=("relu", "tanh"))
    config = config_from_values(study, {"batch_size": 64, "learning_rate": 0.0123456,
                                        "activation": "tanh"})
    assert trial_name(study, config) == "samp batch=64 lr=0.0123 activation=tanh seed=42"


def test_scheduler_on_a_grid_study_uses_the_default_metric(tmp_path: Path) -> None:
    sweep = load_space(_write(tmp_path, STUDY + "scheduler: {asha: {}}\ncheckpoint_every: 0\n"))
    assert sweep.search == SearchSpec() and sweep.search.metric in REPORTED_METRICS
    assert sweep.scheduler == AshaSpec(grace_period=1, reduction_factor=2, max_t=3)
    assert sweep.checkpoint_every == 0 and sweep.sampled_study is None
    assert len(expand(sweep)) == 8


S = SAMPLED
BAD_SAMPLED = [
    # distributions
    ("unknown distribution", S.replace("{loguniform: [0.001, 1.0]}", "{normal: [0, 1]}"),
     "normal"),
    ("two distributions", S.replace("{loguniform: [0.001, 1.0]}",
                                    "{uniform: [0.1, 0.2], loguniform: [0.1, 0.2]}"),
     "params.learning_rate"),
    ("one bound", S.replace("[0.001, 1.0]", "[0.001]"), "params.learning_rate"),
    ("three bounds", S.replace("[0.001, 1.0]", "[0.001, 0.1, 1.0]"), "params.learning_rate"),
    ("bounds not a list", S.replace("[0.001, 1.0]", "0.001"), "params.learning_rate"),
    ("not numbers", S.replace("[0.001, 1.0]", "[small, big]"), "params.learning_rate"),
    ("low above high", S.replace("[0.001, 1.0]", "[1.0, 0.001]"), "params.learning_rate"),
    ("low equals high", S.replace("[0.001, 1.0]", "[0.1, 0.1]"), "params.learning_rate"),
    ("loguniform from 0", S.replace("[0.001, 1.0]", "[0.0, 1.0]"), "<= 0"),
    ("randint of floats", S.replace("batch_size: 16", "batch_size: {randint: [8.0, 64.5]}"),
     "params.batch_size"),
    ("empty randint", S.replace("batch_size: 16", "batch_size: {randint: [16, 16]}"),
     "params.batch_size"),
    ("empty choice", S.replace("batch_size: 16", "batch_size: {choice: []}"),
     "params.batch_size"),
    ("choice not a list", S.replace("batch_size: 16", "batch_size: {choice: 16}"),
     "params.batch_size"),
    ("range past the rule", S.replace("dropout: 0.1", "dropout: {uniform: [0.0, 1.0]}"),
     "high bound 1.0"),
    ("range below the rule", S.replace("{loguniform: [0.001, 1.0]}", "{uniform: [0.0, 1.0]}"),
     "low bound 0.0"),
    ("randint below the rule", S.replace("batch_size: 16", "batch_size: {randint: [0, 8]}"),
     "low bound 0"),
    ("bad choice", S.replace("dropout: 0.1", "activation: {choice: [relu, sigmoid]}"),
     "sigmoid"),
    ("uniform on an int", S.replace("batch_size: 16", "batch_size: {uniform: [16, 64]}"),
     "randint"),
    ("loguniform on an int", S.replace("epochs: 4", "epochs: {loguniform: [1, 10]}"),
     "params.epochs"),
    ("numpy model option", S.replace("torch_ffn", "numpy_mlp").replace(
        "dropout: 0.1", "dropout: {uniform: [0.0, 0.5]}"), "numpy_mlp"),
    # search block
    ("distribution on a grid", S.replace("search: {algorithm: random, num_samples: 5}\n", ""),
     "params.learning_rate"),
    ("explicit grid", S.replace("algorithm: random, num_samples: 5", "algorithm: grid"),
     "params.learning_rate"),
    ("random without samples", S.replace(", num_samples: 5", ""), "search.num_samples"),
    ("zero samples", S.replace("num_samples: 5", "num_samples: 0"), "num_samples"),
    ("samples as a bool", S.replace("num_samples: 5", "num_samples: true"), "num_samples"),
    ("grid with samples", STUDY + "search: {algorithm: grid, num_samples: 3}\n",
     "search.num_samples"),
    ("unknown algorithm", S.replace("algorithm: random", "algorithm: bayes"),
     "search.algorithm"),
    ("unreported metric", S.replace("num_samples: 5", "num_samples: 5, metric: val/f1"),
     "search.metric"),
    ("unknown mode", S.replace("num_samples: 5", "num_samples: 5, mode: best"), "search.mode"),
    ("loss maximised", S.replace("num_samples: 5", "num_samples: 5, metric: val/loss"),
     "search.mode"),
    ("unknown search key", S.replace("num_samples: 5", "num_samples: 5, trials: 3"),
     "search.trials"),
    ("optuna grid", S.replace("algorithm: random", "algorithm: optuna").replace(
        "batch_size: 16", "batch_size: [16, 64]"), "{choice"),
    ("sampled variants", S + "variants: [{}, {l2_decay: 0.001}]\n", "variants"),
    ("sampled seeds", S + "seeds: [1, 2]\n", "seeds"),
    ("nothing sampled", S.replace("{loguniform: [0.001, 1.0]}", "[0.1, 0.01]"),
     "search.algorithm"),
    # scheduler
    ("unknown scheduler", S + "scheduler: {hyperband: {max_t: 4}}\n", "hyperband"),
    ("scheduler as a word", S + "scheduler: asha\n", "scheduler"),
    ("grace period 0", S + "scheduler: {asha: {grace_period: 0}}\n",
     "scheduler.asha.grace_period"),
    ("reduction factor 1", S + "scheduler: {asha: {reduction_factor: 1}}\n",
     "scheduler.asha.reduction_factor"),
    ("max_t 0", S + "scheduler: {asha: {max_t: 0}}\n", "scheduler.asha.max_t"),
    ("grace past max_t", S + "scheduler: {asha: {grace_period: 3, max_t: 2}}\n",
     "scheduler.asha.grace_period"),
    ("grace past epochs", S + "scheduler: {asha: {grace_period: 5}}\n", "max_t = 4"),
    ("unknown asha key", S + "scheduler: {asha: {patience: 3}}\n", "scheduler.asha.patience"),
    # checkpoints
    ("negative checkpoint_every", S + "checkpoint_every: -1\n", "checkpoint_every"),
    ("checkpoint_every as text", S + "checkpoint_every: often\n", "checkpoint_every"),
    ("fractional checkpoint_every", STUDY + "checkpoint_every: 1.5\n", "checkpoint_every"),
]


@pytest.mark.parametrize("case,text,needle", BAD_SAMPLED, ids=[b[0] for b in BAD_SAMPLED])
def test_bad_search_is_one_line_naming_file_and_key(tmp_path: Path, case: str, text: str,
                                                    needle: str) -> None:
    path = _write(tmp_path, text, "bad.yaml")
    message = _one_line_error(path)
    assert str(path) in message and needle in message


GRID_B = STUDY.replace("name: tiny", "name: other").replace("epochs: 3", "epochs: 6")
ASHA = "scheduler: {asha: {grace_period: 2}}\n"
BAD_SWEEPS = [
    ("grid and sampled", {"a.yaml": STUDY, "b.yaml": SAMPLED}, "", "one sampled study"),
    ("two sampled", {"a.yaml": SAMPLED, "b.yaml": SAMPLED.replace("name: samp", "name: samp2")}, "",
     "one sampled study"),
    ("two schedulers", {"a.yaml": STUDY + ASHA,
                        "b.yaml": GRID_B + ASHA.replace("2}", "3}")}, "", "scheduler"),
    ("scheduler and none", {"a.yaml": STUDY + ASHA, "b.yaml": GRID_B}, "", "scheduler"),
    ("two search blocks", {"a.yaml": STUDY,
                           "b.yaml": GRID_B + "search: {metric: val/loss, mode: min}\n"},
     "", "search"),
    ("two checkpoint intervals", {"a.yaml": STUDY, "b.yaml": GRID_B + "checkpoint_every: 5\n"},
     "", "checkpoint_every"),
    ("bad sweep checkpoint_every", {"a.yaml": STUDY}, "checkpoint_every: -2\n",
     "checkpoint_every"),
    ("unknown sweep key", {"a.yaml": STUDY}, "scheduler: {asha: {}}\n", "scheduler"),
]


@pytest.mark.parametrize("case,files,extra,needle", BAD_SWEEPS, ids=[b[0] for b in BAD_SWEEPS])
def test_bad_sweep_is_one_line(tmp_path: Path, case: str, files: dict[str, str], extra: str,
                               needle: str) -> None:
    for name, text in files.items():
        _write(tmp_path, text, name)
    sweep = _write(tmp_path, f"name: all\ninclude: {sorted(files)}\n{extra}", "all.yaml")
    message = _one_line_error(sweep)
    assert str(sweep) in message and needle in message


def test_sweep_shares_its_scheduler_and_checkpoints(tmp_path: Path) -> None:
    _write(tmp_path, STUDY + ASHA + "checkpoint_every: 2\n", "a.yaml")
    _write(tmp_path, GRID_B + ASHA, "b.yaml")
    sweep = load_space(_write(tmp_path, "name: all\ninclude: [a.yaml, b.yaml]\n"
                              "checkpoint_every: 3\n", "all.yaml"))
    # max_t: the largest epochs of the sweep; each study keeps its own
    assert sweep.scheduler == AshaSpec(grace_period=2, max_t=6)
    assert [s.scheduler.max_t for s in sweep.studies] == [3, 6]
    # the sweep file's checkpoint_every applies to every study
    assert sweep.checkpoint_every == 3 and {s.checkpoint_every for s in sweep.studies} == {3}
    assert len(expand(sweep)) == 16


def test_a_sweep_of_one_sampled_study(tmp_path: Path) -> None:
    _write(tmp_path, SAMPLED + "scheduler: {asha: {max_t: 10}}\n", "samp.yaml")
    sweep = load_space(_write(tmp_path, "name: s\ninclude: [samp.yaml]\n", "s.yaml"))
    assert sweep.sampled_study is sweep.studies[0]
    assert sweep.search == SearchSpec(algorithm="random", num_samples=5)
    assert sweep.scheduler == AshaSpec(max_t=10) and expand(sweep) == []


def test_identical_configurations_across_studies_are_trained_once() -> None:
    trials = expand(load_space(SPACES / "hw1.yaml"))
    merged = merge_identical(trials)
    assert len(trials) == 16 and len(merged) == 15
    shared = next(t for t in merged if t.also)
    assert shared.name == "q2_batch batch=16 seed=42"
    assert shared.also == {"q2_lr": "q2_lr lr=0.1 seed=42"}
    assert "q2_lr lr=0.1 seed=42" not in {t.name for t in merged}
    # Another seed is another training: nothing merged.
    seeded = merge_identical([*trials, *(
        PlannedTrial(t.config.model_copy(update={"seed": 7}), t.name + "7") for t in trials)])
    assert len(seeded) == 15 + 15


def test_dtype_follows_the_model_unless_written(tmp_path: Path) -> None:
    trials = expand(load_space(SPACES / "hw1.yaml"))
    assert {t.config.model: t.config.dtype for t in trials} == {
        "numpy_perceptron": "float64", "numpy_logreg": "float64", "numpy_mlp": "float64",
        "torch_logreg": "float32", "torch_ffn": "float32"}
    assert [t.name for t in trials] == HW1_NAMES  # the default is not part of a name
    # Written, it is the trial's; gridded, it is part of the name like any gridded key.
    space = _write(tmp_path, "name: np\nmodel: numpy_mlp\nparams: {epochs: 1, learning_rate: "
                             "0.001, dtype: [float64, float32]}\n")
    assert [(t.name, t.config.dtype) for t in expand(load_space(space))] == [
        ("np dtype=float64 seed=42", "float64"), ("np dtype=float32 seed=42", "float32")]
    study = load_space(_write(tmp_path, SAMPLED)).studies[0]
    assert config_from_values(study, {"learning_rate": 0.01}).dtype == "float32"


def test_torch_model_in_float64_is_refused_at_load(tmp_path: Path) -> None:
    space = _write(tmp_path, STUDY.replace("batch_size: 16", "batch_size: 16\n  dtype: float64"))
    message = _one_line_error(space)
    assert str(space) in message
    assert "dtype = 'float64' is not supported by torch_ffn; expected 'float32'" in message


# --------------------------------------------------------------- the rules of one trial config
BASE = {"study": "s", "epochs": 2, "learning_rate": 0.1}
TRIAL_RULES = [
    # (model, values beyond BASE, the message's key phrase, or None: accepted)
    ("torch_ffn", {"dropout": 0.5, "l2_decay": 1e-4, "layers": 3, "optimizer": "adam"}, None),
    ("torch_ffn", {"dropout": 1.0}, "dropout"),
    ("torch_ffn", {"dropout": -0.1}, "dropout"),
    ("torch_ffn", {"learning_rate": 0.0}, "learning_rate"),
    ("torch_ffn", {"learning_rate": float("inf")}, "finite"),
    ("torch_ffn", {"batch_size": 0}, "batch_size"),
    ("torch_ffn", {"epochs": True}, "epochs"),  # YAML's `yes`: not one epoch
    ("torch_ffn", {"l2_decay": -1e-4}, "l2_decay"),
    ("torch_ffn", {"dtype": "float64"}, "dtype = 'float64' is not supported by torch_ffn"),
    ("torch_ffn", {"optimizer": "rmsprop"}, "optimizer"),
    ("torch_ffn", {"colour": "red"}, "colour"),
    ("torch_logreg", {"dropout": 0.1}, "dropout = 0.1 is not supported by torch_logreg"),
    ("torch_logreg", {"layers": 2}, "layers = 2 is not supported by torch_logreg"),
    ("numpy_mlp", {"dtype": "float32"}, None),
    ("numpy_mlp", {"layers": 2}, "layers = 2 is not supported by numpy_mlp"),
    ("numpy_mlp", {"l2_decay": 1e-4}, "l2_decay = 0.0001 is not supported by numpy_mlp"),
    ("numpy_logreg", {"optimizer": "adam"}, "optimizer = 'adam' is not supported"),
    ("numpy_perceptron", {"activation": "tanh"}, "activation = 'tanh' is not supported"),
    ("resnet", {}, "model"),
]


@pytest.mark.parametrize(("model", "values", "refused"), TRIAL_RULES,
                         ids=[f"{m}-{'-'.join(v) or 'base'}" for m, v, _ in TRIAL_RULES])
def test_trial_config_rules(model: str, values: dict, refused: str | None) -> None:
    if refused is None:
        config = TrialConfig.model_validate({**BASE, "model": model, **values})
        assert all(getattr(config, k) == v for k, v in values.items())
        return
    with pytest.raises(ValueError, match=refused):
        TrialConfig.model_validate({**BASE, "model": model, **values})


@pytest.mark.parametrize(("model", "dtype"), [
    ("numpy_perceptron", "float64"), ("numpy_logreg", "float64"), ("numpy_mlp", "float64"),
    ("torch_logreg", "float32"), ("torch_ffn", "float32"),
])
def test_an_unwritten_dtype_is_the_models_own(model: str, dtype: str) -> None:
    assert TrialConfig.model_validate({**BASE, "model": model}).dtype == dtype


@pytest.mark.parametrize(("name", "short"), [
    ("learning_rate", "lr"), ("batch_size", "batch"), ("l2_decay", "l2"),
    ("hidden_size", "hidden"), ("dropout", "dropout"),
])
def test_run_names_use_the_one_short_name_map(name: str, short: str) -> None:
    assert SHORT_NAMES.get(name, name) == short
    assert LONG_NAMES.get(short, short) == name  # and the reference file reads it back

"""The homework's published numbers beside measured ones (pipeline/report/reference.py): how a
reference config is read, which published row a trial matches, and a bad reference file as one
line. Table-driven, no MLflow: the fast layer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import UserError
from pipeline.report.reference import (
    DEFAULT_REFERENCE,
    load_reference,
    match_reference,
    parse_config,
)

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(("text", "wanted"), [
    ("lr=0.01;epochs=50", {"learning_rate": "0.01", "epochs": "50"}),
    ("hidden=200; lr=0.001 ;", {"hidden_size": "200", "learning_rate": "0.001"}),
    ("batch=16", {"batch_size": "16"}),
    ("batch_size=16;l2=0.0001", {"batch_size": "16", "l2_decay": "0.0001"}),
    ("regularization=none", {"l2_decay": "0", "dropout": "0"}),
    ("", {}),
])
def test_a_reference_config_reads_short_and_long_names(text: str,
                                                       wanted: dict[str, str]) -> None:
    assert parse_config(text) == wanted


@pytest.mark.parametrize("text", ["lr", "=0.1", "lr=0.1;;epochs"])
def test_a_reference_config_without_key_value_pairs_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_config(text)


REFERENCE = pd.DataFrame([
    {"study": "q1_logreg", "model": "numpy_logreg", "config": "lr=0.01;epochs=50",
     "val_acc": 0.6568, "test_acc": 0.5784, "train_loss": None},
    {"study": "q1_logreg", "model": "numpy_logreg", "config": "lr=0.001;epochs=50",
     "val_acc": 0.6639, "test_acc": 0.5936, "train_loss": None},
    {"study": "q1_mlp", "model": "numpy_mlp", "config": "hidden=200;lr=0.001",
     "val_acc": 0.7857, "test_acc": 0.7448, "train_loss": 57795.7751},
    {"study": "q2_reg", "model": None, "config": "regularization=none",
     "val_acc": 0.8, "test_acc": 0.7, "train_loss": 0.5},
])


def trial(**values: object) -> pd.Series:
    return pd.Series({"model": "numpy_logreg", "epochs": 50, "l2_decay": 0.0, "dropout": 0.0,
                      **values})


@pytest.mark.parametrize(("row", "config", "values", "note"), [
    # the same lr: matched, values under the report's metric names
    (trial(study="q1_logreg", learning_rate=0.001), "lr=0.001;epochs=50",
     {"val/acc": 0.6639, "test/acc": 0.5936}, ""),
    # 1e-3 written another way is the same number
    (trial(study="q1_logreg", learning_rate=1e-3), "lr=0.001;epochs=50",
     {"val/acc": 0.6639, "test/acc": 0.5936}, ""),
    # other epochs still match, with a note saying so
    (trial(study="q1_logreg", learning_rate=0.01, epochs=5), "lr=0.01;epochs=50",
     {"val/acc": 0.6568, "test/acc": 0.5784}, "published after 50 epochs; these runs trained 5"),
    # the MLP's published train loss is the epoch's sum
    (trial(study="q1_mlp", model="numpy_mlp", hidden_size=200, learning_rate=0.001),
     "hidden=200;lr=0.001", {"val/acc": 0.7857, "test/acc": 0.7448,
                             "train/loss_sum": 57795.7751}, ""),
    # a row without a model matches any model of its study
    (trial(study="q2_reg", model="torch_ffn"), "regularization=none",
     {"val/acc": 0.8, "test/acc": 0.7, "train/loss": 0.5}, ""),
])
def test_a_trial_matches_its_published_row(row: pd.Series, config: str,
                                           values: dict[str, float], note: str) -> None:
    match = match_reference(REFERENCE, row)
    assert match is not None
    assert (match.config, match.values, match.note) == (config, pytest.approx(values), note)


@pytest.mark.parametrize("row", [
    trial(study="q1_logreg", learning_rate=0.1),  # a value the homework did not publish
    trial(study="q1_logreg", model="numpy_mlp", learning_rate=0.01),  # another model
    trial(study="q9_new", learning_rate=0.01),  # a study the homework does not have
    trial(study="q2_reg", model="torch_ffn", dropout=0.2),  # regularised: not "none"
    trial(study="q1_logreg", learning_rate=float("nan")),  # nothing measured matches
])
def test_a_trial_without_a_published_row_matches_nothing(row: pd.Series) -> None:
    assert match_reference(REFERENCE, row) is None


def test_the_shipped_reference_loads() -> None:
    frame = load_reference(DEFAULT_REFERENCE)
    assert {"q1_perceptron", "q1_logreg", "q1_mlp", "q2_batch", "q2_lr"} <= set(frame["study"])


@pytest.mark.parametrize(("text", "said"), [
    ("study,model\nq1,numpy_logreg\n", "no column 'config'"),
    ("study,model,config,val_acc\nq1,m,lr=0.1,high\n", "column 'val_acc' holds a value"),
    ("study,model,config\nq1,m,lr\n", "row 2 config 'lr'"),
    ("", "cannot read"),
])
def test_a_bad_reference_file_is_one_line(text: str, said: str, tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=said) as error:
        load_reference(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)

"""Question 3: the hand-built MLPs compute f, keep their margin, and the CLI writes the results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.boolean import mlp as boolean_mlp
from pipeline.boolean.nets import (
    ABOVE,
    cube,
    inside_sums,
    margin,
    random_flips,
    relu_mlp,
    sign_mlp,
    target,
    tight_perturbation,
)
from pipeline.boolean.perceptron import perceptron_study, train_perceptron
from pipeline.cli import main

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BUILDERS = [sign_mlp, relu_mlp]


def _cases(max_D: int):
    for D in range(1, max_D + 1):
        for A in range(-D, D + 1):
            for B in range(A, D + 1):
                yield D, A, B


def test_target_follows_the_definition_on_a_small_cube():
    for x in cube(3):
        assert target(x, -1, 1) == (1 if -1 <= sum(int(v) for v in x) <= 1 else -1)


def test_both_mlps_compute_f_on_every_input_for_every_interval_up_to_D10():
    sweep = boolean_mlp.exhaustive_sweep(10)
    assert sweep.cases == sum((2 * D + 1) * (D + 1) for D in range(1, 11)) == 945
    assert sweep.failures == []


@pytest.mark.parametrize("build", BUILDERS)
def test_parameters_are_integers(build):
    for D, A, B in _cases(6):
        net = build(D, A, B)
        for array in (net.W, net.b, net.v, net.levels):
            assert np.issubdtype(array.dtype, np.integer)
        assert isinstance(net.c, int)


@pytest.mark.parametrize("build", BUILDERS)
def test_margin_is_one_over_D_or_infinite_when_the_interval_holds_no_attainable_sum(build):
    for D, A, B in _cases(8):
        lo, hi = inside_sums(D, A, B)
        expected = 1 / D if lo <= hi else math.inf
        assert margin(build(D, A, B)) == pytest.approx(expected), (D, A, B)


@pytest.mark.parametrize("build", BUILDERS)
def test_empty_interval_gives_minus_one_everywhere_even_on_the_hyperplanes(build):
    for D, A, B in _cases(6):
        lo, hi = inside_sums(D, A, B)
        if lo <= hi:
            continue
        # Points (s, 0, ..., 0) have sum exactly s; quarter steps of s hit every hidden
        # hyperplane and kink exactly (all at integer sums).
        sums = np.arange(-2 * D - 2, 2 * D + 2.25, 0.25)
        points = np.zeros((len(sums), D))
        points[:, 0] = sums
        assert (build(D, A, B).predict(points) == -1).all(), (D, A, B)


@pytest.mark.parametrize("build", BUILDERS)
def test_no_perturbation_below_the_margin_changes_the_output(build):
    rng = np.random.default_rng(1)
    for D, A, B in _cases(6):
        net = build(D, A, B)
        m = margin(net)
        radius = m * boolean_mlp.BELOW if math.isfinite(m) else boolean_mlp.FAR
        flips, tried = random_flips(net, target(cube(D), A, B), radius, 40, rng)
        assert flips == 0 and tried == 42 * 2**D, (D, A, B)


@pytest.mark.parametrize("build", BUILDERS)
def test_margin_is_tight_just_above_it(build):
    for D, A, B in _cases(6):
        net = build(D, A, B)
        found = tight_perturbation(net)
        if math.isinf(margin(net)):
            assert found is None
            continue
        x, delta = found
        assert np.abs(delta).max() == pytest.approx(margin(net) * ABOVE)
        assert net.predict(x + delta) != target(x, A, B), (D, A, B)


def test_robustness_check_detects_flips_just_above_the_margin():
    net = sign_mlp(4, -2, 2)
    flips, _ = random_flips(net, target(cube(4), -2, 2), margin(net) * 1.01, 10,
                            np.random.default_rng(0))
    assert flips > 0


def test_perceptron_cannot_fit_the_xor_like_interval_on_D2():
    for seed in range(5):
        best = train_perceptron(cube(2).astype(float), target(cube(2), -1, 1), 200, seed)
        assert best.correct == 3 and best.total == 4
    study = perceptron_study(-1, 1)
    assert not study.separable and study.labellings == 14


def test_perceptron_fits_an_interval_that_touches_an_end():
    study = perceptron_study(-2, 0)
    assert study.separable and study.result.correct == 4


def _forward_from_json(params: dict, X: np.ndarray) -> np.ndarray:
    """The network computed straight from weights.json, independently of TwoUnitMLP."""
    pre = X @ np.array(params["hidden_weights"]).T + np.array(params["hidden_biases"])
    act = np.where(pre >= 0, 1, -1) if params["hidden_activation"] == "sign" else pre.clip(0)
    out = act @ np.array(params["output_weights"]) + params["output_bias"]
    return np.where(out >= 0, 1, -1)


def test_cli_writes_weights_and_figures(tmp_path: Path, capsys):
    out = tmp_path / "q3"
    assert main(["boolean", "--D", "2", "--A", "-1", "--B", "1", "--out", str(out)]) == 0
    assert "3/4" in capsys.readouterr().out
    names = {"weights.json", "class_layout.png", "mlp_hyperplanes.png", "perceptron.png"}
    assert {p.name for p in out.iterdir()} == names
    for name in names - {"weights.json"}:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    doc = json.loads((out / "weights.json").read_text())
    assert (doc["D"], doc["A"], doc["B"]) == (2, -1, 1)
    assert doc["sign_mlp"]["hidden_weights"] == [[1, 1], [-1, -1]]
    assert doc["sign_mlp"]["hidden_biases"] == [1, 1]
    for key in ("sign_mlp", "relu_mlp"):
        assert doc[key]["margin_inf"] == 0.5
        values = [v for row in doc[key]["hidden_weights"] for v in row] + doc[key]["hidden_biases"]
        assert all(isinstance(v, int) for v in values)
        assert np.array_equal(_forward_from_json(doc[key], cube(2)), target(cube(2), -1, 1))


def test_cli_empty_interval_gives_constant_minus_one_and_null_margin(tmp_path: Path):
    out = tmp_path / "q3"
    assert main(["boolean", "--D", "3", "--A", "0", "--B", "0", "--out", str(out)]) == 0
    doc = json.loads((out / "weights.json").read_text())
    assert doc["attainable_sums_inside"] == []
    for key in ("sign_mlp", "relu_mlp"):
        assert doc[key]["margin_inf"] is None
        assert (_forward_from_json(doc[key], cube(3)) == -1).all()
    assert not (out / "perceptron.png").exists()  # only drawn for D = 2


@pytest.mark.parametrize("D, A, B, named", [
    ("2", "1", "-1", "A=1"), ("2", "-3", "1", "A=-3"), ("2", "0", "3", "B=3"),
    ("17", "0", "1", "D=17"),
])
def test_cli_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, D, A, B,
                                                                   named):
    out = tmp_path / "q3"
    assert main(["boolean", "--D", D, "--A", A, "--B", B, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
    assert not out.exists()


def test_cli_out_path_that_is_a_file_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["boolean", "--D", "2", "--A", "-1", "--B", "1", "--out", str(blocker)]) == 2
    assert str(blocker) in capsys.readouterr().err


def test_failure_before_writing_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(boolean_mlp.boolean_plots, "with_lines", broken)
    with pytest.raises(RuntimeError):
        boolean_mlp.run(2, -1, 1, tmp_path / "q3")
    assert not (tmp_path / "q3").exists()

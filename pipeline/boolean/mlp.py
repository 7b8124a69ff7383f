"""Question 3 end to end: check the hand-built MLPs, study a single perceptron, write the results.

`run` checks both constructions of `nets` against f exhaustively (every D <= 10, every
interval), measures this case's margin, tries random perturbations below it and one just above
it, trains a perceptron when D = 2, then writes weights.json and the figures.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.boolean import plots as boolean_plots
from pipeline.boolean.nets import (
    ABOVE,
    TwoUnitMLP,
    cube,
    decision_units,
    inside_sums,
    margin,
    random_flips,
    relu_mlp,
    sign_mlp,
    target,
    tight_perturbation,
)
from pipeline.boolean.perceptron import PerceptronStudy, perceptron_study
from pipeline.errors import UserError

MAX_D = 16  # 2^16 inputs: the largest cube we still enumerate in well under a second
SWEEP_MAX_D = 10
# "Strictly below the margin", yet far enough below that rounding x + delta cannot land on a
# hyperplane.
BELOW = 1 - 1e-9
FAR = 10.0  # probe radius when no perturbation can change the output (infinite margin)
PERTURBATION_BUDGET = 2_000_000  # floats per robustness check: keeps `run` within a second
NAMES = {"sign": "sign", "relu": "ReLU"}
CLAIM = ("for every x in {-1,+1}^D and every delta with ||delta||_inf < margin_inf, "
         "the MLP's output on x + delta equals f(x)")


def validate(D: int, A: int, B: int) -> None:
    """Raise UserError naming the bad value unless 1 <= D <= MAX_D and -D <= A <= B <= D."""
    for name, value in (("D", D), ("A", A), ("B", B)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name}={value!r} is not an integer; expected an integer")
    if not 1 <= D <= MAX_D:
        raise UserError(f"D={D} is out of range: the exhaustive check enumerates all 2^D inputs; "
                        f"expected 1 <= D <= {MAX_D}")
    if A > B:
        raise UserError(f"A={A} is greater than B={B}; expected A <= B")
    if A < -D:
        raise UserError(f"A={A} is below -D={-D}; expected -D <= A <= B <= D")
    if B > D:
        raise UserError(f"B={B} is above D={D}; expected -D <= A <= B <= D")


@dataclass(frozen=True)
class SweepResult:
    """Outcome of the exhaustive check over every (D, A, B) with D <= max_D."""

    cases: int
    failures: list[tuple[str, int, int, int]]


def exhaustive_sweep(max_D: int = SWEEP_MAX_D) -> SweepResult:
    """Check both networks against f on all 2^D inputs for every D <= max_D, -D <= A <= B <= D."""
    cases, failures = 0, []
    for D in range(1, max_D + 1):
        X = cube(D)
        for A in range(-D, D + 1):
            for B in range(A, D + 1):
                cases += 1
                f = target(X, A, B)
                for build in (sign_mlp, relu_mlp):
                    if not np.array_equal(build(D, A, B).predict(X), f):
                        failures.append((build.__name__, D, A, B))
    return SweepResult(cases, failures)


@dataclass(frozen=True)
class CaseCheck:
    """One network verified on one (D, A, B); `tight_*` is None when the margin is infinite."""

    correct: int
    total: int
    margin: float
    margin_l2: float
    flips: int
    tried: int
    radius: float
    tight_x: np.ndarray | None
    tight_changed: bool | None


def check_case(net: TwoUnitMLP, f: np.ndarray, seed: int = 0) -> CaseCheck:
    """Exhaustive correctness, margins, random perturbations below the margin, one above it."""
    D = net.W.shape[1]
    X = cube(D)
    m = margin(net)
    per_input = int(np.clip(PERTURBATION_BUDGET // (len(X) * D), 2, 2000))
    radius = m * BELOW if math.isfinite(m) else FAR
    flips, tried = random_flips(net, f, radius, per_input, np.random.default_rng(seed))
    tight = tight_perturbation(net)
    x, changed = None, None
    if tight is not None:
        x, delta = tight
        changed = bool(net.predict(x + delta) != f[_row(X, x)])
    return CaseCheck(int((net.predict(X) == f).sum()), len(f), m, margin(net, 2), flips, tried,
                     radius, x, changed)


def _row(X: np.ndarray, x: np.ndarray) -> int:
    return int(np.flatnonzero((X == x).all(axis=1))[0])


def _json_margin(value: float) -> float | None:
    return round(value, 12) if math.isfinite(value) else None  # null: no perturbation matters


def weights_json(D: int, A: int, B: int, nets: dict[str, TwoUnitMLP],
                 checks: dict[str, CaseCheck]) -> str:
    """Both constructions' integer parameters and margins, as JSON text."""
    lo, hi = inside_sums(D, A, B)
    doc: dict[str, object] = {
        "D": D, "A": A, "B": B, "sign_convention": "sign(0) = +1",
        "attainable_sums_inside": list(range(lo, hi + 1, 2)),
        "claim": CLAIM + "; margin null: no perturbation changes the output",
    }
    for name, net in nets.items():
        doc[f"{name}_mlp"] = {**net.as_dict(), "margin_inf": _json_margin(checks[name].margin),
                              "margin_l2": _json_margin(checks[name].margin_l2)}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _net_lines(net: TwoUnitMLP) -> list[boolean_plots.Line]:
    """Each hidden unit's decision hyperplane (solid) and, when it differs, its kink (dotted)."""
    lines, matter = [], decision_units(net)
    for j, colour in enumerate(("tab:green", "tab:purple")):
        w, b, level = net.W[j], int(net.b[j]), int(net.levels[j])
        if level != 0:
            kink = -b // int(w[0])
            lines.append(boolean_plots.Line(w, b, f"h{j + 1} kink: sum = {kink}", colour, True))
        at = (level - b) // int(w[0])
        role = "decides" if j in matter else "never changes the output"
        lines.append(boolean_plots.Line(w, b - level, f"h{j + 1} {role}: sum = {at}", colour))
    return lines


def figures(D: int, A: int, B: int, nets: dict[str, TwoUnitMLP], checks: dict[str, CaseCheck],
            study: PerceptronStudy | None) -> dict[str, bytes]:
    """The PNG figures by file name: class layout, the MLPs' hyperplanes, the perceptron's line."""
    X = cube(D)
    f = target(X, A, B)
    files = {"class_layout.png": boolean_plots.class_layout(
        X, f, f"f(x) = +1 iff {A} <= sum(x) <= {B}, D = {D}")}
    panels = [(f"{NAMES[name]} MLP, margin_inf = {_fmt(checks[name].margin)}", _net_lines(net))
              for name, net in nets.items()]
    files["mlp_hyperplanes.png"] = boolean_plots.with_lines(X, f, panels)
    if study is not None:
        best = study.result
        lines = [boolean_plots.Line(best.w, best.b, f"best line: {best.correct}/{best.total}",
                                    "tab:orange")] if np.any(best.w) else []
        title = f"single perceptron, best of {best.epochs} epochs: {best.correct}/{best.total}"
        files["perceptron.png"] = boolean_plots.with_lines(X, f, [(title, lines)])
    return files


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "infinite"


def _case_lines(name: str, c: CaseCheck, D: int) -> list[str]:
    lines = [f"{NAMES[name]} MLP: {c.correct}/{c.total} inputs correct; "
             f"margin_inf = {_fmt(c.margin)}"
             + (" (= 1/D)" if math.isclose(c.margin, 1 / D) else "")
             + f", margin_l2 = {_fmt(c.margin_l2)}",
             f"  robustness: {c.flips} of {c.tried:,} random perturbations with ||delta||_inf "
             f"<= {c.radius:.10g} changed the output"]
    if c.tight_x is None:
        lines.append("  no hyperplane decides: the output is -1 on all of R^D, so no "
                     "perturbation of any size changes it")
    else:
        outcome = "changes the output: the margin is tight" if c.tight_changed else \
            "does NOT change the output"
        lines.append(f"  at x = {tuple(int(v) for v in c.tight_x)}, a delta of "
                     f"{ABOVE:.7g} x margin along sign(w) {outcome}")
    return lines


def summary(D: int, A: int, B: int, sweep: SweepResult, checks: dict[str, CaseCheck],
            study: PerceptronStudy | None) -> list[str]:
    """The verification summary, one finding per line."""
    lo, hi = inside_sums(D, A, B)
    inside = (f"attainable sums inside: {lo}..{hi} in steps of 2" if lo <= hi else
              "no attainable sum inside: f = -1 everywhere")
    verdict = "all correct" if not sweep.failures else f"FAILED: {sweep.failures[:5]}"
    lines = [f"f(x) = +1 iff {A} <= sum(x) <= {B} on {{-1,+1}}^{D}; {inside}",
             f"exhaustive sweep: {sweep.cases} (D, A, B) cases, every D <= {SWEEP_MAX_D} and "
             f"-D <= A <= B <= D, all 2^D inputs, sign and ReLU MLPs: {verdict}"]
    for name, check in checks.items():
        lines += _case_lines(name, check, D)
    lines.append(f"claim: {CLAIM}")
    lines.append(study.describe() if study else
                 "perceptron and 2-D figures: only for D = 2 (figures drawn over sum(x) instead)")
    return lines


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: `path` is either whole or absent."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:  # plain open, unlike mkstemp, honours the umask
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Create out_dir and write every file atomically; an OS failure becomes a UserError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            _write_atomic(out_dir / name, data)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None


def run(D: int, A: int, B: int, out_dir: Path) -> str:
    """Verify both MLPs for f on {-1,+1}^D with [A, B], write weights and figures, summarise."""
    validate(D, A, B)
    out_dir = Path(out_dir)
    sweep = exhaustive_sweep()
    f = target(cube(D), A, B)
    nets = {"sign": sign_mlp(D, A, B), "relu": relu_mlp(D, A, B)}
    checks = {name: check_case(net, f) for name, net in nets.items()}
    study = perceptron_study(A, B) if D == 2 else None
    # Everything is computed before the first byte is written, so a failure leaves nothing.
    files = {"weights.json": weights_json(D, A, B, nets, checks).encode()}
    files.update(figures(D, A, B, nets, checks, study))
    write_files(out_dir, files)
    lines = summary(D, A, B, sweep, checks, study)
    return "\n".join([*lines, f"wrote {', '.join(files)} to {out_dir}"])

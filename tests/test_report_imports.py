"""`medgrid report` starts without Ray: its help and a real report import no `ray` (Ray costs
about a second of start-up and has nothing to do with reading runs). Checked in a fresh
interpreter, since this test process may have imported Ray for other tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_sweep_store

# Runs `medgrid` in-process and prints which of the heavy packages it imported.
PROBE = """
import json, sys
from pipeline.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help exits through argparse
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(
    {name.split(".")[0] for name in sys.modules} & {"ray", "mlflow", "torch"})}))
"""


def _imports(*args: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.fast
def test_report_help_imports_neither_ray_nor_mlflow(tmp_path: Path) -> None:
    assert _imports("report", "--help", cwd=tmp_path) == {"code": 0, "loaded": []}


def test_a_report_imports_no_ray(tmp_path: Path) -> None:
    uri = small_sweep_store(tmp_path)
    seen = _imports("report", "--tracking-uri", uri, "--out", str(tmp_path / "out"),
                    cwd=tmp_path)
    assert seen["code"] == 0 and (tmp_path / "out" / "summary.csv").is_file()
    assert "ray" not in seen["loaded"] and "mlflow" in seen["loaded"]


@pytest.mark.fast
def test_a_sweep_refused_for_bad_data_imports_neither_ray_nor_mlflow(tmp_path: Path) -> None:
    """`medgrid tune` checks the space and the data before the seconds of importing Ray and
    MLflow (and before launching the tracking server, which they overlap)."""
    (tmp_path / "s.yaml").write_text("name: s\nmodel: numpy_logreg\n"
                                     "params: {epochs: 1, learning_rate: 0.01}\n")
    (tmp_path / "bad.npz").write_bytes(b"not an npz file")
    seen = _imports("tune", "s.yaml", "--data", "bad.npz", cwd=tmp_path)
    assert seen == {"code": 2, "loaded": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "s.yaml"]

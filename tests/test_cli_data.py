"""`medgrid data fetch|synth|info`: exit codes and the one-line error contract."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import data, data_source
from pipeline.cli import main

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`


def test_synth_writes_a_readable_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.npz"
    code = main(["data", "synth", "--out", str(out), "--train", "40", "--val", "20",
                 "--test", "8", "--seed", "1"])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    assert data.read_npz(out)["test_images"].shape == (8, 28, 28)


def test_synth_into_missing_directory_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["data", "synth", "--out", str(tmp_path / "no" / "s.npz"), "--train", "4"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "no") in err


def test_info_prints_summary(tiny_npz: Path, capsys) -> None:
    assert main(["data", "info", str(tiny_npz)]) == 0
    out = capsys.readouterr().out
    assert data_source.file_md5(tiny_npz) in out and "250 / 250 / 250 / 250" in out


def test_info_octmnist_flag_rejects_synthetic_file(tiny_npz: Path, capsys) -> None:
    assert main(["data", "info", "--octmnist", str(tiny_npz)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MD5" in err


def test_fetch_unreachable_exits_2_with_both_remedies(tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    info = dict(data_source.octmnist_info(), url=f"http://127.0.0.1:{port}/octmnist.npz")
    monkeypatch.setattr(data_source, "octmnist_info", lambda: info)
    code = main(["data", "fetch", "--dir", str(tmp_path), "--timeout", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(tmp_path / "octmnist.npz") in err and "medgrid data synth" in err


@pytest.mark.parametrize("argv", [["data"], ["data", "synth"], ["data", "synth", "--out", "x",
                                                                "--train", "0"]])
def test_bad_arguments_exit_2(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_truncated_file_in_a_real_process(tmp_path: Path, tiny_npz: Path) -> None:
    cut = tmp_path / "cut.npz"
    cut.write_bytes(tiny_npz.read_bytes()[:5000])
    result = subprocess.run([sys.executable, "-m", "pipeline", "data", "info", str(cut)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and str(cut) in result.stderr


@pytest.mark.parametrize("how", ["environment", "flag"])
def test_num_cpus_beside_a_cluster_address_is_one_line_exit_2(how: str, tiny_npz: Path,
                                                              monkeypatch, capsys) -> None:
    argv = ["tune", "search_spaces/q2_lr.yaml", "--data", str(tiny_npz), "--num-cpus", "1"]
    if how == "environment":
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    else:
        argv += ["--ray-address", "10.0.0.9:6379"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--num-cpus 1" in err and "10.0.0.9:6379" in err



def _split_arrays(n_val: int) -> dict[str, np.ndarray]:
    """Tiny arrays in MedMNIST's format (`n_val` validation images)."""
    sizes = {"train": 4, "val": n_val, "test": 4}
    arrays = {f"{s}_images": np.zeros((n, 28, 28), np.uint8) for s, n in sizes.items()}
    arrays.update({f"{s}_labels": np.zeros((n, 1), np.uint8) for s, n in sizes.items()})
    return arrays


def test_info_on_a_huge_declared_shape_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in _split_arrays(2).items():
            member = io.BytesIO()
            if key == "train_images":  # 784 TB declared over 64 bytes of data
                np.lib.format.write_array_header_1_0(member, {
                    "descr": "|u1", "fortran_order": False, "shape": (10**12, 28, 28)})
                member.write(bytes(64))
            else:
                np.lib.format.write_array(member, array)
            archive.writestr(f"{key}.npy", member.getvalue())
    assert main(["data", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "declares shape" in err


def test_tune_on_an_empty_split_exits_2_before_tracking(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    path = tmp_path / "empty_val.npz"
    np.savez_compressed(path, **_split_arrays(0))
    space = Path("search_spaces/q2_lr.yaml").resolve()
    monkeypatch.chdir(tmp_path)
    assert main(["tune", str(space), "--data", str(path), "--test-split", "full"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "split 'val' has 0 images" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()

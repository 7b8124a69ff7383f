"""`medgrid data fetch|synth|info`: exit codes and the one-line error contract."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import data, data_source
from pipeline.cli import main


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

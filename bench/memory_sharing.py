"""Does the data really live once? Run `medgrid tune` with 1 trial and then with 8 concurrent
trials on the full-size synthetic set, sample the memory of every Ray process while they run,
and compare the peaks.

Memory is the sum of PSS (proportional set size, /proc/PID/smaps_rollup): pages shared through
the object store count once in total, not once per process as RSS would. Two scopes: the sweep's
whole process tree (the driver, which loads the data and runs a private MLflow server, and Ray's
processes) and Ray's processes alone.

    python bench/memory_sharing.py [--trials 8] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = """\
name: mem
model: torch_logreg
seeds: {seeds}
params: {{epochs: 2, batch_size: 64, learning_rate: 0.01}}
"""


FIELDS = ("Pss", "Pss_Shmem", "Pss_Anon")


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process that can be read."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found[int(proc.name)] = (parent, cmdline)
    return found


def _is_ray(cmdline: bytes) -> bool:
    return (cmdline.startswith(b"ray::") or b"raylet" in cmdline or b"gcs_server" in cmdline
            or b"default_worker.py" in cmdline)


def _descendants(root: int, processes: dict[int, tuple[int, bytes]]) -> set[int]:
    tree, grown = {root}, True
    while grown:
        children = {pid for pid, (parent, _) in processes.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return tree


def _pss_mb(pids: set[int]) -> dict[str, float]:
    """PSS of `pids` summed, with its shared-memory (the object store's pages: the data) and
    private anonymous parts."""
    total_kb = dict.fromkeys(FIELDS, 0)
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key = line.split(":")[0]
                if key in total_kb:
                    total_kb[key] += int(line.split()[1])
        except OSError:
            continue
    return {k: v / 1024 for k, v in total_kb.items()}


def sample(driver: int) -> dict[str, dict[str, float]]:
    """Memory of Ray's processes alone, and of the sweep's whole process tree (the driver, which
    loaded the data, its private MLflow server, and Ray's processes, all started under it)."""
    processes = _processes()
    ray = {pid for pid, (_, cmdline) in processes.items() if _is_ray(cmdline)}
    return {"ray": _pss_mb(ray), "sweep": _pss_mb(_descendants(driver, processes) | ray)}


def peak_memory(space: Path, data: Path, work: Path, trials: int) -> dict[str, dict]:
    """Run the sweep; return the peak of each scope's memory while it ran."""
    command = [sys.executable, "-m", "pipeline", "tune", str(space), "--data", str(data),
               "--num-cpus", "2", "--cpus-per-trial", str(2 / trials), "--max-concurrent",
               str(trials), "--experiment", f"mem{trials}"]
    samples: list[dict[str, dict[str, float]]] = []
    with open(work / f"tune{trials}.log", "w") as log:
        process = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            samples.append(sample(process.pid))
            time.sleep(0.3)
    if process.returncode != 0:
        raise SystemExit(f"the sweep failed; see {work / f'tune{trials}.log'}")
    peaks = {}
    for scope in ("ray", "sweep"):
        peak = max((s[scope] for s in samples), key=lambda m: m["Pss"])
        peaks[scope] = {"peak_pss_mb": round(peak["Pss"], 1),
                        "shared_mb": round(peak["Pss_Shmem"], 1),
                        "private_mb": round(peak["Pss_Anon"], 1)}
    return {**peaks, "samples": len(samples)}


def ratios(one: dict, many: dict, trials: int) -> dict[str, float]:
    return {
        "ratio_total_pss": round(many["peak_pss_mb"] / one["peak_pss_mb"], 2),
        # What each extra trial process costs on its own (Python, torch, MLflow, Ray worker).
        "private_mb_per_extra_trial": round(
            (many["private_mb"] - one["private_mb"]) / (trials - 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medgrid-mem-"))
    data = args.data
    if data is None:
        data = work / "full.npz"
        subprocess.run([sys.executable, "-m", "pipeline", "data", "synth", "--out", str(data)],
                       check=True)
    results = {}
    for n in (1, args.trials):
        space = work / f"mem{n}.yaml"
        space.write_text(SPACE.format(seeds=list(range(n))))
        results[n] = peak_memory(space, data, work, n)
    one, many = results[1], results[args.trials]
    print(json.dumps({
        "one_trial": one, f"{args.trials}_trials": many,
        # The sweep as the machine sees it: driver + MLflow server + Ray. The data is held by
        # the driver and once in the object store, whatever the number of trials.
        "sweep": ratios(one["sweep"], many["sweep"], args.trials),
        # Ray's processes alone: shared pages mapped by the driver are not counted here, so
        # this scope's share of the object store grows with the number of workers mapping it.
        "ray_only": ratios(one["ray"], many["ray"], args.trials),
        "goal": "total ratio <= 2.5",
    }, indent=2))


if __name__ == "__main__":
    main()

"""Does the data really live once? Run `medgrid tune` with 1 trial and then with 8 concurrent
trials on the full-size synthetic set, sample the memory of every Ray process while they run,
and compare the peaks.

Memory is the sum of PSS (proportional set size, /proc/PID/smaps_rollup) over Ray's processes:
pages shared through the object store count once in total, not once per process as RSS would.

    python bench/memory_sharing.py [--trials 8] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SPACE = """\
name: mem
model: torch_logreg
seeds: {seeds}
params: {{epochs: 2, batch_size: 64, learning_rate: 0.01}}
"""


FIELDS = ("Pss", "Pss_Shmem", "Pss_Anon")


def ray_pss_mb() -> dict[str, float]:
    """PSS summed over Ray's processes (workers, raylet with the object store, GCS), split into
    shared memory (the object store's pages: the data) and private anonymous memory."""
    total_kb = dict.fromkeys(FIELDS, 0)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            if not (cmdline.startswith(b"ray::") or b"raylet" in cmdline
                    or b"gcs_server" in cmdline or b"default_worker.py" in cmdline):
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                key = line.split(":")[0]
                if key in total_kb:
                    total_kb[key] += int(line.split()[1])
        except OSError:
            continue
    return {k: v / 1024 for k, v in total_kb.items()}


def peak_memory(space: Path, data: Path, work: Path, trials: int) -> dict[str, float]:
    """Run the sweep; return the peak and the idle baseline of Ray's memory."""
    command = [sys.executable, "-m", "pipeline", "tune", str(space), "--data", str(data),
               "--num-cpus", "2", "--cpus-per-trial", str(2 / trials), "--max-concurrent",
               str(trials), "--experiment", f"mem{trials}"]
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(ray_pss_mb())
            time.sleep(0.3)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with open(work / f"tune{trials}.log", "w") as log:
        subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, check=True)
    stop.set()
    sampler.join()
    peak = max(samples, key=lambda sample: sample["Pss"])
    return {"peak_pss_mb": round(peak["Pss"], 1), "shared_mb": round(peak["Pss_Shmem"], 1),
            "private_mb": round(peak["Pss_Anon"], 1), "samples": len(samples)}


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
        "ratio_total_pss": round(many["peak_pss_mb"] / one["peak_pss_mb"], 2),
        # The data lives in the object store once: this stays near 1 however many trials run.
        "ratio_shared_data": round(many["shared_mb"] / one["shared_mb"], 2),
        # What each extra trial process costs on its own (Python, torch, MLflow, Ray worker).
        "private_mb_per_extra_trial": round(
            (many["private_mb"] - one["private_mb"]) / (args.trials - 1), 1),
        "goal": "total ratio <= 2.5",
    }, indent=2))


if __name__ == "__main__":
    main()

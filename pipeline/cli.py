"""The `medgrid` command line: the only module that parses arguments.

Every user error ends here as one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__, ray_address
from pipeline.errors import UserError
from pipeline.interrupts import SweepInterrupted
from pipeline.tracking.names import DEFAULT_TRACKING_URI

EXIT_USAGE = 2
# The reader of stdout left before medgrid was done (`medgrid report | head`): the shell's code
# for a program ended by SIGPIPE, which Python turns into BrokenPipeError instead. A sweep
# stops gracefully then (`output_loss`) and exits 1 like any sweep medgrid stopped itself.
EXIT_PIPE_CLOSED = 128 + 13


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the usage block first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


# ----------------------------------------------------------------------------- data
def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from pipeline import data_source

    path = data_source.fetch(args.dir or data_source.default_cache_dir(), timeout=args.timeout)
    print(f"octmnist.npz verified and saved to {path}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from pipeline import synthetic

    path = synthetic.synthesize(
        args.out, n_train=args.train, n_val=args.val, n_test=args.test, seed=args.seed
    )
    print(f"synthetic OCTMNIST-format data written to {path}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from pipeline import data

    print(data.describe(args.file, expect_octmnist=args.octmnist))
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="get, make and inspect OCTMNIST-format data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    fetch = dsub.add_parser("fetch", help="download octmnist.npz into the cache and check its MD5")
    fetch.add_argument("--dir", type=Path, help="cache directory (default: $MEDGRID_DATA_DIR "
                       "or ~/.medmnist)")
    fetch.add_argument("--timeout", type=float, default=10.0, help="network timeout, seconds")
    fetch.set_defaults(func=_cmd_data_fetch)

    synth = dsub.add_parser("synth", help="write a synthetic OCT-like stand-in in MedMNIST's "
                            "npz format")
    synth.add_argument("--out", type=Path, required=True, help="output .npz file")
    synth.add_argument("--train", type=_positive_int, help="training images (default: "
                       "OCTMNIST's 97,477)")
    synth.add_argument("--val", type=_positive_int, help="validation images (default 10,832)")
    synth.add_argument("--test", type=_positive_int, help="test images (default 1,000)")
    synth.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed")
    synth.set_defaults(func=_cmd_data_synth)

    info = dsub.add_parser("info", help="shapes, dtypes, class counts and MD5 of an npz file")
    info.add_argument("file", type=Path)
    info.add_argument("--octmnist", action="store_true",
                      help="also require the file to be MedMNIST's octmnist.npz (MD5 check)")
    info.set_defaults(func=_cmd_data_info)


# -------------------------------------------------------------------------- boolean
def _cmd_boolean(args: argparse.Namespace) -> int:
    from pipeline.boolean import mlp as boolean_mlp

    print(boolean_mlp.run(args.D, args.A, args.B, args.out))
    return 0


def _add_boolean(sub: argparse._SubParsersAction) -> None:
    boolean = sub.add_parser("boolean", help="question 3: hand-built MLPs for "
                             "f(x) = +1 iff A <= sum(x) <= B")
    boolean.add_argument("--D", type=_positive_int, required=True, help="input dimension")
    boolean.add_argument("--A", type=int, required=True, help="lower bound of the sum")
    boolean.add_argument("--B", type=int, required=True, help="upper bound of the sum")
    boolean.add_argument("--out", type=Path, required=True, help="output directory")
    boolean.set_defaults(func=_cmd_boolean)


# ----------------------------------------------------------------------------- tune
def _cmd_tune(args: argparse.Namespace) -> int:
    from pipeline.tracking.server import is_remote, require_server

    if is_remote(args.tracking_uri):  # before the ~4 s of importing Ray, MLflow and torch
        require_server(args.tracking_uri)
    _check_storage(args.storage)
    from pipeline.disk_space import require_free_space, written_dirs

    # ./mlruns: where a local store keeps artifacts (SweepOptions.artifacts_dir)
    require_free_space(written_dirs(args.storage, args.tracking_uri, Path("mlruns")))
    _check_trial_count(args.space, args.seeds, args.max_trials)
    cluster = ray_address.choose(args.ray_address)
    if cluster and args.num_cpus is not None:
        raise UserError(f"--num-cpus {args.num_cpus} with {cluster.source} {cluster.address}: "
                        "--num-cpus sizes a local Ray; expected one of them (a cluster has the "
                        "CPUs it has)")
    if cluster:
        print(f"[medgrid] joining the Ray cluster at {cluster.address} (from {cluster.source}"
              + ("; unset it, or pass --ray-address local, for a local Ray of the sweep's own)"
                 if cluster.source == "$RAY_ADDRESS" else ")"), flush=True)
        ray_address.check_reachable(cluster)
    address = cluster.address if cluster else None
    from pipeline.sweep import SweepOptions, run_sweep

    options = SweepOptions(
        data=args.data, dataset=args.dataset, test_split=args.test_split,
        experiment=args.experiment, tracking_uri=args.tracking_uri,
        ray_address=address, num_cpus=args.num_cpus,
        max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, epochs=args.epochs, limit_train=args.limit_train,
        resume=args.resume, storage=args.storage, max_failures=args.max_failures,
        checkpoint_every=args.checkpoint_every, verbose=args.verbose, seeds=args.seeds,
    )
    return run_sweep(args.space, options)


DEFAULT_MAX_TRIALS = 10_000


def _check_trial_count(space: Path, seeds: tuple[int, ...] | None, limit: int) -> None:
    """Refuse a space that plans more than `limit` trials, counted without expanding the grid
    (the sweep loads the space again: a few milliseconds, and the refusal comes before the
    seconds of importing Ray)."""
    from pipeline.config import load_space, planned_trials, with_seeds

    sweep = with_seeds(load_space(space), seeds)
    count = planned_trials(sweep)
    if count > limit:
        raise UserError(f"{space}: plans {count:,} trials, more than --max-trials {limit:,}; "
                        "expected fewer grid values, variants or seeds (or a larger "
                        "--max-trials, if you mean to run them all)")


def _check_storage(storage: Path) -> None:
    """Refuse a --storage directory that cannot be created or written, before anything starts
    (Ray and the private tracking server's log write there; a read-only one used to fail
    after the parent run existed, with a traceback)."""
    existing = storage.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the directory the missing ones would be created in
    if not existing.is_dir():
        raise UserError(f"--storage {storage}: {existing} is not a directory; expected a "
                        "directory for Ray's results")
    try:  # a real write: permission bits say nothing of read-only mounts, or to root
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"--storage {storage}: cannot write in {existing} "
                        f"({exc.strerror or exc}); expected a writable directory for Ray's "
                        "results") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _nonnegative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


HOMEWORK_SEED = 42  # the homework's seed: `--seeds N` starts from it


def _seeds(text: str) -> tuple[int, ...]:
    """`--seeds 3` -> (42, 43, 44); `--seeds 1,7,9` -> (1, 7, 9)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count or a comma-separated list "
                                         "of integer seeds") from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a count >= 1")
        return tuple(range(HOMEWORK_SEED, HOMEWORK_SEED + values[0]))
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct seeds >= 0")
    return tuple(values)


def _add_tune(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser("tune", help="run a search space's grid as parallel Ray Tune trials, "
                          "each tracked in MLflow")
    tune.add_argument("space", type=Path, help="search space YAML (e.g. search_spaces/hw1.yaml)")
    source = tune.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="an OCTMNIST-format .npz file")
    source.add_argument("--dataset", choices=["octmnist", "synthetic"], default="octmnist",
                        help="octmnist from the cache (default), or the synthetic stand-in")
    tune.add_argument("--test-split", choices=["hw1", "full"], default="hw1",
                      help="hw1: the homework's 529-image test subset (default); full: 1,000")
    tune.add_argument("--experiment", default="medgrid", help="MLflow experiment name")
    tune.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                      help=f"MLflow store or server (default: {DEFAULT_TRACKING_URI}, served to "
                      "the trials by a private local server)")
    tune.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS if "
                      "set, else a local Ray of the sweep's own; 'local' forces the latter)")
    tune.add_argument("--num-cpus", type=_positive_int, help="CPUs of the local Ray "
                      "(default: all)")
    tune.add_argument("--max-concurrent", type=_positive_int, help="trials running at once")
    tune.add_argument("--cpus-per-trial", type=_positive_float, default=1.0,
                      help="CPUs per torch trial (numpy trials take one)")
    tune.add_argument("--gpus-per-trial", type=_nonnegative_float, default=0.0,
                      help="GPU fraction per torch trial (when the cluster has GPUs)")
    tune.add_argument("--epochs", type=_positive_int, help="cap every trial's epochs "
                      "(quick runs)")
    tune.add_argument("--limit-train", type=_positive_int, help="train on a seeded random "
                      "subset of N samples")
    tune.add_argument("--resume", action="store_true", help="continue the latest interrupted "
                      "sweep of this space")
    tune.add_argument("--storage", type=Path, default=Path("ray_results"),
                      help="Ray Tune's results directory (default ./ray_results); must be "
                      "shared by all nodes for --resume on a cluster")
    tune.add_argument("--max-failures", type=_nonnegative_int, default=1,
                      help="retries of a failing trial")
    tune.add_argument("--max-trials", type=_positive_int, default=DEFAULT_MAX_TRIALS,
                      help="refuse a space that plans more trials than this (default "
                      f"{DEFAULT_MAX_TRIALS:,})")
    tune.add_argument("--seeds", type=_seeds, metavar="N|S1,S2,...",
                      help="replace every study's seeds: N seeds from 42 (42, 43, ...), or a "
                      "list; several seeds give the report paired tests over seeds")
    tune.add_argument("--checkpoint-every", type=_nonnegative_int, metavar="N",
                      help="checkpoint each trial every N epochs (default: the space's "
                      "checkpoint_every, 1; 0: never)")
    tune.add_argument("--verbose", action="store_true", help="Ray Tune's own status tables "
                      "and worker output instead of medgrid's progress lines")
    tune.set_defaults(func=_cmd_tune)


# --------------------------------------------------------------------------- report
def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report.build import ReportOptions, make_report

    options = ReportOptions(
        experiment=args.experiment, tracking_uri=args.tracking_uri, sweep=args.sweep,
        out=args.out, reference=args.reference, log_to_run=not args.no_log,
    )
    print(make_report(options).summary())
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="the homework's tables, figures and CSV summaries "
                            "of a sweep, read from MLflow")
    report.add_argument("--experiment", help="MLflow experiment (default: medgrid)")
    report.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                        help=f"MLflow store or server (default: {DEFAULT_TRACKING_URI})")
    report.add_argument("--sweep", metavar="RUN_ID", help="the sweep's parent run (default: the "
                        "experiment's latest sweep)")
    report.add_argument("--out", type=Path, default=Path("report_out"),
                        help="output directory: new, empty, or an earlier medgrid report (which is "
                        "replaced); never a folder holding other files (default: report_out)")
    report.add_argument("--reference", type=Path, help="published numbers to set beside the "
                        "measured ones (default: the repository's reference/hw1.csv)")
    report.add_argument("--no-log", action="store_true", help="don't log the report as "
                        "artifacts of the sweep's parent run")
    report.set_defaults(func=_cmd_report)


# ------------------------------------------------------------------------------- ui
def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be <= 65535")
    return value


def _cmd_ui(args: argparse.Namespace) -> int:
    from pipeline.tracking.ui import serve_ui

    return serve_ui(args.tracking_uri, args.artifacts, args.port)


def _add_ui(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser("ui", help="MLflow's UI over the project's store, on 127.0.0.1, opened "
                        "on the latest sweep")
    ui.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                    help=f"the local store (default: {DEFAULT_TRACKING_URI})")
    ui.add_argument("--artifacts", type=Path, default=Path("mlruns"),
                    help="where the store's artifacts live (default: ./mlruns)")
    ui.add_argument("--port", type=_port, default=5000, help="port on 127.0.0.1 (default 5000)")
    ui.set_defaults(func=_cmd_ui)


def build_parser() -> argparse.ArgumentParser:
    """The full `medgrid` argument parser."""
    parser = _Parser(prog="medgrid", description="The OCTMNIST homework as an experiment "
                     "pipeline: Ray Tune grids, MLflow tracking, report tables.")
    parser.add_argument("--version", action="version", version=f"medgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_data(sub)
    _add_boolean(sub)
    _add_tune(sub)
    _add_report(sub)
    _add_ui(sub)
    return parser


def _interrupted(exc: SweepInterrupted, argv: Sequence[str]) -> str:
    """The one line a stopped sweep leaves: what was closed, and the command that continues."""
    why = f"stopped: {exc.cause}" if exc.cause else f"interrupted by {exc}"
    if not exc.detail:  # stopped before its parent run existed: nothing to continue
        return f"medgrid: {why} before the sweep started"
    again = [arg for arg in argv if arg != "--resume"] + ["--resume"]
    return (f"medgrid: {why}: {exc.detail}; {exc.advice + ', then ' if exc.advice else ''}"
            f"continue with: medgrid {shlex.join(again)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `medgrid` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except UserError as exc:
        print(f"medgrid: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SweepInterrupted as exc:  # runs closed, Ray and the tracking server already down
        print(_interrupted(exc, argv), file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medgrid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `medgrid ... | head`: the reader left before medgrid was done
        sys.stderr.close()
        return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    raise SystemExit(main())

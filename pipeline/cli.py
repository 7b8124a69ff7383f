"""The `medgrid` command line: the only module that parses arguments.

Every user error ends here as one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.errors import UserError

EXIT_USAGE = 2


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
    from pipeline import data

    path = data.fetch(args.dir or data.default_cache_dir(), timeout=args.timeout)
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
    from pipeline import boolean_mlp

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


def build_parser() -> argparse.ArgumentParser:
    """The full `medgrid` argument parser."""
    parser = _Parser(prog="medgrid", description="The OCTMNIST homework as an experiment "
                     "pipeline: Ray Tune grids, MLflow tracking, report tables.")
    parser.add_argument("--version", action="version", version=f"medgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_data(sub)
    _add_boolean(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `medgrid` console script."""
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except UserError as exc:
        print(f"medgrid: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medgrid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

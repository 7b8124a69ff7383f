"""Where `medgrid report` may write, and how it swaps a finished report in.

A report directory is medgrid's own only if it holds the marker file that medgrid leaves in every
report, listing the files it wrote. `--out` may name a directory that does not exist yet, an empty
one, or one of medgrid's own reports holding nothing but what medgrid wrote there; anything else
(a folder of the user's, the current directory or one above it, a file, a symlink) is refused
before anything is read or written, so a typo in `--out` can never delete a user's files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import UserError

MARKER = ".medgrid-report.json"


def check_out_dir(out: Path) -> Path:
    """`out` made absolute, once it is known to be safe to write or replace; else a `UserError`."""
    given = out
    out = Path(os.path.abspath(out))  # not resolve(): a symlink must be seen as one
    if out.is_symlink():
        raise UserError(f"--out {given} is a symbolic link; expected a real directory "
                        "(or a new path) for the report")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {given} is a file; expected a directory to write the report into")
    cwd = Path.cwd().resolve()
    if out.resolve() == cwd or out.resolve() in cwd.parents:
        raise UserError(f"--out {given} is the current directory or contains it; expected a "
                        "new or report-only directory such as report_out/")
    if out.is_dir():
        foreign = _foreign_entries(out)
        if foreign:
            raise UserError(f"--out {given} holds files medgrid did not write (e.g. "
                            f"'{foreign[0]}'); expected a new or empty directory, or an earlier "
                            "medgrid report")
    return out


def _foreign_entries(directory: Path) -> list[str]:
    """Names in `directory` that the marker of an earlier report does not account for."""
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError as exc:
        raise UserError(f"--out {directory}: cannot list it ({exc.strerror or exc}); expected "
                        "a readable directory") from exc
    if not names:
        return []
    try:
        written = set(json.loads((directory / MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return names  # no marker (or not ours): every entry is the user's
    return [n for n in names if n != MARKER and n not in written]


def write_marker(directory: Path) -> None:
    """Record every entry of the finished report, so a later run may replace exactly these."""
    files = sorted(p.name for p in directory.iterdir() if p.name != MARKER)
    (directory / MARKER).write_text(json.dumps({"written_by": "medgrid report", "files": files},
                                               indent=1), encoding="utf-8")


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A fresh directory beside `out` that becomes `out` on success and vanishes on error.

    The old report is moved aside only once the new one is complete, and removed only after
    the new one is in place: an interrupted report leaves the old one intact.
    """
    out = check_out_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write beside it ({exc.strerror or exc}); "
                        "expected a writable directory") from exc
    stage.chmod(0o755)  # mkdtemp's 0700 would make the finished report private
    try:
        yield stage
        write_marker(stage)
        check_out_dir(out)  # again: something may have appeared in `out` meanwhile
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            try:
                os.rename(stage, out)
            except OSError:
                os.rename(old / out.name, out)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

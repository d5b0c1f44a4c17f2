"""Where a result came from: versions, code commit, command line, time and data."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any


@cache
def git_commit() -> str | None:
    """The commit of the memetrm source, ``+dirty`` when it has local changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


@cache
def repo_root() -> Path:
    """The checkout memetrm runs from (the git top level of its source); outside git, the
    working directory."""
    here = Path(__file__).resolve().parent
    try:
        return Path(subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"],
                                   capture_output=True, text=True, timeout=5,
                                   check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return Path.cwd()


def _module(orig_argv: Sequence[str]) -> str | None:
    """The module of ``python [options] -m MODULE ...``; None for a script or a program."""
    for i, arg in enumerate(orig_argv[1:-1], 1):
        if arg == "-m":
            return orig_argv[i + 1]
        if not arg.startswith("-"):
            return None
    return None


def command_line(argv: Sequence[str] | None = None, orig_argv: Sequence[str] | None = None,
                 root: Path | None = None) -> str:
    """The command as typed at the repository root, with no machine's layout in it: the
    program by its name (``memetrm``, ``python -m benchmarks.heads``, ``python
    benchmarks/x.py``) and every absolute path relative to the root (``../shared/data``)."""
    argv = list(sys.argv if argv is None else argv)
    orig_argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    root = root or repo_root()

    def relative(arg: str) -> str:
        option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return option + eq + (os.path.relpath(value, root) if os.path.isabs(value) else value)

    module = _module(orig_argv)
    program = (f"python -m {module}" if module else
               f"python {relative(argv[0])}" if argv[0].endswith(".py") else Path(argv[0]).name)
    return " ".join([program, *(shlex.quote(relative(a)) for a in argv[1:])])


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions, commit, command line and UTC time, plus ``extra`` (data hash, seeds, ...)."""
    import torch

    from memetrm import __version__

    return {
        "memetrm": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "git_commit": git_commit(),
        "command": command_line(), "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def combined_hash(parts: dict[str, str]) -> str:
    """One hash over named hashes (e.g. per split and field), independent of dict order."""
    h = hashlib.sha256()
    for key in sorted(parts):
        h.update(f"{key}={parts[key]};".encode())
    return h.hexdigest()

"""Where a result came from: versions, code commit, command line, time and data."""

from __future__ import annotations

import hashlib
import platform
import shlex
import subprocess
import sys
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


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions, commit, command line and UTC time, plus ``extra`` (data hash, seeds, ...)."""
    import torch

    from memetrm import __version__

    return {
        "memetrm": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "git_commit": git_commit(),
        "command": shlex.join(sys.argv), "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def combined_hash(parts: dict[str, str]) -> str:
    """One hash over named hashes (e.g. per split and field), independent of dict order."""
    h = hashlib.sha256()
    for key in sorted(parts):
        h.update(f"{key}={parts[key]};".encode())
    return h.hexdigest()

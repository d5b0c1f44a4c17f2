"""One rich progress bar style for every long-running loop."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Piped or logged output is not wrapped at 80 columns (tables would split their cells).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def make_progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=disable,
    )


def quiet_third_party(verbose: bool = False) -> None:
    """Silence the loading bars and warnings of transformers / sentence-transformers / HF hub
    (printed on every model load), unless the user asked for them."""
    if verbose:
        return
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "timm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="transformers|sentence_transformers|timm|torch")

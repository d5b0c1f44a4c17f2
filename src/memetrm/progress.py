"""Where the command line writes: results on stdout, diagnostics (progress, warnings) on
stderr; one rich progress bar style for every long-running loop."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Diagnostics: progress, warnings, errors. Piped or logged output is not wrapped at 80
#: columns (tables would split their cells).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
#: Results (lists, tables, summaries), so that ``memetrm list | grep trm`` finds them.
results = Console(width=None if sys.stdout.isatty() else 200)
#: warnings shown by this command, each once
_warned: set[str] = set()


def warn(message: str, kind: str = "warning") -> None:
    """A warning (or a ``note``) as one line on stderr; one already shown (by another head or
    seed of the same command) is not repeated."""
    if f"{kind}: {message}" not in _warned:
        _warned.add(f"{kind}: {message}")
        console.print(f"[yellow]{kind}:[/] {escape(message)}", soft_wrap=True)


def readable_warnings() -> None:
    """Python's warnings (``warnings.warn``, ours and third parties') through ``warn``: the
    message alone, without the source path, line and code Python's format adds. Starts a
    command: no warning has been shown yet."""
    import warnings

    _warned.clear()
    warnings.showwarning = lambda message, *_args, **_kwargs: warn(str(message))


#: seconds between two progress lines of one task when output goes to a file, not a terminal
LOG_INTERVAL = 30.0


class LogProgress(Progress):
    """A progress that also writes plain lines, for output that is a file or a pipe.

    Rich redraws its bar only on a terminal: in a log (a batch job, CI, ``nohup``) it would
    show nothing until the loop ends. This one prints a task's line whenever its description
    changes (a new seed, epoch or phase) and at least every ``interval`` seconds otherwise."""

    def __init__(self, *columns: Any, interval: float = LOG_INTERVAL, **kwargs: Any):
        super().__init__(*columns, **kwargs)
        self.interval = interval
        self._logged: dict[TaskID, tuple[float, str]] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._logged[task_id] = (time.monotonic(), description)
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        last, described = self._logged[task_id]
        if self.disable or task.finished or (
                now - last < self.interval and task.description == described):
            return
        self._logged[task_id] = (now, task.description)
        total = f"/{task.total:.0f}" if task.total is not None else ""
        elapsed = task.elapsed or 0.0
        # the mean rate so far: rich's own estimate needs updates closer than a log line's
        left = (elapsed * (task.total - task.completed) / task.completed
                if task.total is not None and task.completed > 0 else None)
        self.console.print(f"  {task.description}: {task.completed:.0f}{total}, {elapsed:.0f} s"
                           + (f", about {left:.0f} s left" if left is not None else ""),
                           highlight=False, markup=False)


def make_progress(disable: bool = False, out: Console | None = None) -> Progress:
    """One bar style everywhere; plain periodic lines where ``out`` is not a terminal."""
    out = out or console
    cls = Progress if out.is_terminal else LogProgress
    return cls(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out,
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

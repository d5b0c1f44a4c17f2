"""``memetrm report``: a markdown results table with ROC (and reasoning-trace) plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memetrm.progress import results


def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (from --out-dir).")],
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("report.md"),
) -> None:
    """A markdown results table with ROC (and reasoning-trace) plots across runs."""
    from memetrm.evaluation.report import write_report  # matplotlib: import on use

    write_report([runs], out)
    results.print(f"wrote {out}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(report)

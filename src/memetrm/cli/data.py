"""``memetrm data prepare``: build extra datasets as Hateful-Memes-format jsonl folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memetrm.progress import console

data = typer.Typer(help="Prepare extra datasets as Hateful-Memes-format jsonl folders.",
                   no_args_is_help=True)
prepare = typer.Typer(help="Build a dataset folder usable as --dataset PATH.", no_args_is_help=True)
data.add_typer(prepare, name="prepare")


@prepare.command("openclipart")
def prepare_openclipart(
    source: Annotated[Path, typer.Option(
        help="Folder of SVGs (Debian package openclipart-svg).")] = Path("/usr/share/openclipart/svg"),
    out: Annotated[Path, typer.Option()] = Path("~/.cache/memetrm/datasets/openclipart"),
    limit: Annotated[int | None, typer.Option(min=1, help="Keep N files (hash order).")] = None,
    size: Annotated[int, typer.Option(min=16, help="Square output side, pixels.")] = 224,
    workers: Annotated[int, typer.Option(min=0, help="Render processes (0 = inline).")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds per SVG before skipping it.")] = 20.0,
    max_mb: Annotated[float, typer.Option(help="Skip SVG files larger than this.")] = 5.0,
) -> None:
    """Rasterise Open Clip Art SVGs into train/val/test jsonl + PNGs (broken files are skipped)."""
    from memetrm.data.openclipart import prepare_openclipart as prepare_folder

    prepare_folder(source, out, limit, size, workers, timeout, int(max_mb * 1_000_000),
                   log=console.print)


def register(app: typer.Typer) -> None:
    app.add_typer(data, name="data")

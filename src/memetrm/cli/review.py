"""``memetrm review``: the review queue's decisions, outside the server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memetrm.errors import DataError
from memetrm.progress import console

review = typer.Typer(help="The review queue of `serve --review-db`.", no_args_is_help=True)


@review.command("export")
def export(
    db: Annotated[str, typer.Option(help="The review database: a file or an SQLAlchemy URL.")],
    output: Annotated[Path, typer.Option(
        help="decisions.jsonl (pictures saved beside, in img/) or decisions.parquet (pictures "
             "inside).")],
) -> None:
    """Write the decided memes as a labelled dataset (id, label, img, text): `memory add --input`
    reads it, and so does `train` with a folder holding it as train.jsonl."""
    from memetrm.serving.review import ReviewStore, export_decisions

    if "://" not in db and not Path(db).is_file():
        raise DataError(f"{db}: no such review database")
    if output.suffix not in (".jsonl", ".parquet"):
        raise DataError(f"{output}: give a .jsonl or a .parquet file to write")
    n = export_decisions(ReviewStore(db), output)
    console.print(f"{n} decided memes -> {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(review, name="review")

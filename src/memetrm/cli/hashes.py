"""``memetrm hashes``: a model's list of known memes (PDQ hash + label), answered before any
model runs by ``predict`` and ``serve``."""

from __future__ import annotations

from pathlib import Path

import typer

from memetrm.cli.options import Model
from memetrm.errors import DataError
from memetrm.progress import console
from memetrm.utils import plural

hashes = typer.Typer(help="A model's list of known memes (PDQ hashes with labels).",
                     no_args_is_help=True)


def _model_list(model: Path):
    from memetrm.modelstore import CONFIG_NAME
    from memetrm.serving.hashlist import MODEL_LIST, HashList

    if not (model / CONFIG_NAME).is_file():
        raise DataError(f"{model}: not a model directory (no {CONFIG_NAME})")
    return model / MODEL_LIST, HashList.of_model(model)


def _save(model: Path, new: list, what: str) -> None:
    """Add ``new`` to the model's list as a new revision of the folder, read and written under
    its writer lock: concurrent ``hashes add`` and ``memory add`` runs queue, none loses rows."""
    from memetrm.serving.hashlist import MODEL_LIST, edit_model_list

    _model_list(model)
    try:
        now = edit_model_list(model, lambda current: current.add(new))
    except DataError as e:
        raise DataError(f"{what}: {e}") from e
    console.print(f"{model / MODEL_LIST}: {len(now)} known memes ({len(new)} added)")


def add(
    model: Model,
    input: Path = typer.Option(..., "--input", help="jsonl: id, label (0/1), img path, text"),
) -> None:
    """Hash labelled memes (PDQ, with their normalised text) onto the model's known-meme list
    (all rows or none). A listed meme with text answers only memes whose text agrees."""
    from memetrm.serving.hashlist import labelled_entries

    if not input.is_file():
        raise DataError(f"{input}: no such file")
    entries, flat = labelled_entries(input)
    if flat:
        console.print(f"{plural(len(flat), 'image')} with too little detail for PDQ left out: {flat[:10]}")
    bare = [e.source_id for e in entries if not e.text]
    if bare:
        console.print(f"{plural(len(bare), 'meme')} without text, matched by their picture alone: "
                      f"{bare[:10]}", markup=False)
    _save(model, entries, str(input))


def import_list(
    model: Model,
    input: Path = typer.Option(..., "--input", help="hash list CSV: pdq,label,source_id[,text]"),
) -> None:
    """Add the rows of a hash list file (e.g. from ThreatExchange) to the model's list."""
    from memetrm.serving.hashlist import HashList

    if not input.is_file():
        raise DataError(f"{input}: no such file")
    _save(model, HashList.read(input).entries, str(input))


def remove(
    model: Model,
    id: list[str] = typer.Option(..., "--id", help="source_id of a listed meme (repeatable)"),
) -> None:
    """Take memes off the model's known-meme list (all ids or none), e.g. after a moderator
    reversed a decision."""
    from memetrm.serving.hashlist import MODEL_LIST, edit_model_list

    left = edit_model_list(model, lambda current: current.remove(id))
    console.print(f"{model / MODEL_LIST}: {len(left)} known memes ({plural(len(id), 'id')} removed)")


def export(
    model: Model,
    output: Path = typer.Option(..., "--output", help="CSV file to write"),
) -> None:
    """Write the model's known-meme list as CSV (pdq,label,source_id,text)."""
    path, current = _model_list(model)
    current.write(output)
    console.print(f"{len(current)} known memes -> {output}")


def register(app: typer.Typer) -> None:
    hashes.command("add")(add)
    hashes.command("import")(import_list)
    hashes.command("remove")(remove)
    hashes.command("export")(export)
    app.add_typer(hashes, name="hashes")

"""``memetrm memory add`` / ``remove``: labelled memes join or leave a saved memory head,
without retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memetrm.cli.options import Device, Model
from memetrm.errors import DataError
from memetrm.modelstore import read_config as load_config
from memetrm.progress import console

memory = typer.Typer(help="A memory head's labelled memes (retrieval).", no_args_is_help=True)


@memory.command("add")
def memory_add(
    model: Model,
    input: Annotated[Path, typer.Option(
        help="jsonl: id, label (0/1), text fields, optional img path.")],
    device: Device = None,
) -> None:
    """Add labelled memes to a saved memory head without retraining (all rows or none)."""
    if not input.is_file():
        raise DataError(f"{input}: no such file")
    from memetrm.serving.memory import add_to_memory

    size = add_to_memory(model, input, device=device)
    console.print(f"{model}: memory now holds {size} memes")
    fitted = (load_config(model).get("fitted") or {}).values()
    alphas = [f["alpha_"] for f in fitted if "alpha_" in f]
    if alphas and not any(alphas):
        console.print("[yellow]warning:[/] this head's memory weight (alpha) is 0: on its "
                      "training memes (leave-one-out) the learned scorer alone ranked best, so "
                      "its scores ignore the memory and the added memes change no score "
                      "(predict lists them as neighbours only)", soft_wrap=True)


@memory.command("remove")
def memory_remove(
    model: Model,
    id: Annotated[list[str], typer.Option("--id", help="Id of a meme in the memory (repeatable).")],
) -> None:
    """Take memes out of a saved memory head (all ids or none), e.g. after a moderator reversed
    a decision."""
    from memetrm.serving.memory import remove_from_memory

    size = remove_from_memory(model, id)
    console.print(f"{model}: memory now holds {size} memes")


def register(app: typer.Typer) -> None:
    app.add_typer(memory, name="memory")

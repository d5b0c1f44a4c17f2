"""Entry point: each command group lives in its own module exposing ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer

from memetrm.errors import MemetrmError
from memetrm.progress import console

app = typer.Typer(
    name="memetrm",
    help="Frozen vision-language encoders + tiny reasoning heads for meme classification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)



@app.callback()
def _global(
    threads: int | None = typer.Option(
        None, envvar="MEMETRM_THREADS",
        help="torch intra-op threads; 1 is fastest for the tiny heads on a busy CPU."),
) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


#: command modules under memetrm.cli; each defines ``register(app: typer.Typer) -> None``
COMMAND_MODULES = ["core", "serve", "align"]

for _mod in COMMAND_MODULES:
    importlib.import_module(f"memetrm.cli.{_mod}").register(app)


def main() -> None:
    """Run the CLI; user errors become one red line and exit code 2, not a traceback."""
    try:
        app()
    except MemetrmError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Entry point: each command group lives in its own module exposing ``register(app)``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="memetrm",
    help="Frozen vision-language encoders + tiny reasoning heads for meme classification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

#: command modules under memetrm.cli; each defines ``register(app: typer.Typer) -> None``
COMMAND_MODULES = ["core"]

for _mod in COMMAND_MODULES:
    importlib.import_module(f"memetrm.cli.{_mod}").register(app)


if __name__ == "__main__":
    app()

"""Entry point: each command is a module-level function in its own module, which exposes
``register(app)``; the work itself lives in the library."""

from __future__ import annotations

import importlib
import os

import typer
from rich.markup import escape
from typer.core import TyperGroup

from memetrm.errors import MemetrmError
from memetrm.progress import console, quiet_third_party, readable_warnings


class _Group(TyperGroup):
    """Turns a user error anywhere below into one red line and exit code 2, not a traceback."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except MemetrmError as e:
            # escaped: brackets in a message (``memetrm[ray]``, a path) are text, not markup
            console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="memetrm",
    cls=_Group,
    help="Frozen vision-language encoders + tiny reasoning heads for meme classification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[default: 5]": plain text, not rich markup tags
)


def _version(value: bool) -> None:
    if value:
        from memetrm import __version__

        typer.echo(f"memetrm {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    threads: int | None = typer.Option(
        None, envvar="MEMETRM_THREADS", min=1,
        help="torch intra-op CPU threads [default: torch's choice; 1 while training heads, "
             "which is fastest for them]."),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show third-party progress bars and warnings too."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    readable_warnings()
    quiet_third_party(verbose)
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ["MEMETRM_THREADS"] = str(threads)  # head training reads it (train_threads)


#: command modules under memetrm.cli, in ``--help`` order; each defines ``register(app)``
COMMAND_MODULES = ["listing", "extract", "train", "evaluate", "report", "predict", "serve",
                   "policy", "memory", "hashes", "review", "drift", "align", "data", "tune"]

for _mod in COMMAND_MODULES:
    importlib.import_module(f"memetrm.cli.{_mod}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``memetrm tune``: contrastive tuning of a text tower, saved for ``--encoder tuned:PATH``.

Its settings are ``TuneConfig``'s fields, one option each, with the dataclass's default and
help: a setting is declared once."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from memetrm.cli.options import DataRoot
from memetrm.config import TuneConfig


def tune(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tuned tower to.")],
    dataset: Annotated[str, typer.Option(
        "--dataset", help="Registered name or jsonl folder path.")] = "hateful_memes",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a tower an earlier tune wrote at --out (files it did not "
                            "write stay).")] = False,
    data_root: DataRoot = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print tuning.json on stdout.")] = False,
    **settings: Any,
) -> None:
    """Tune a text tower contrastively on the training memes (selection on dev); a benchmark
    and a command, never part of `make run`."""
    from memetrm.training.tune import tune_text_tower

    summary = tune_text_tower(dataset, out, TuneConfig(**settings), data_root=data_root,
                              log=lambda m: typer.echo(m, err=True), overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"saved to {out}; use it as --encoder tuned:{out}", err=True)


def _setting_options() -> list[inspect.Parameter]:
    """One option per ``TuneConfig`` field: ``--batch-size`` for ``batch_size``, a flag pair
    for a boolean."""
    hints = typing.get_type_hints(TuneConfig)
    params = []
    for f in dataclasses.fields(TuneConfig):
        flag = f"--{f.name.replace('_', '-')}"
        decl = f"{flag}/--no-{flag[2:]}" if hints[f.name] is bool else flag
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
            annotation=Annotated[hints[f.name], typer.Option(decl, help=f.metadata["help"])]))
    return params


def register(app: typer.Typer) -> None:
    fixed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
             for p in inspect.signature(tune, eval_str=True).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]
    tune.__signature__ = inspect.Signature(fixed + _setting_options())  # type: ignore[attr-defined]
    app.command("tune")(tune)

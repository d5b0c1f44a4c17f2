"""``memetrm list``: the registered datasets, encoders and heads."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from memetrm.errors import ConfigError
from memetrm.progress import results

WHAT = ("all", "datasets", "encoders", "heads")


def list_components(
    what: Annotated[str, typer.Argument(help="all, datasets, encoders or heads")] = "all",
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Heads: description, parameters and options.")] = False,
) -> None:
    """Registered datasets, encoders and heads (`list heads -v` for their options)."""
    if what not in WHAT:
        raise ConfigError(f"list what? {what!r}: use datasets, encoders or heads")
    if what in ("all", "datasets"):
        from memetrm.data import list_datasets

        results.print(f"datasets: {', '.join(list_datasets())} (or a jsonl folder path, such as "
                      "the openclipart one `memetrm data prepare openclipart` writes)")
    if what in ("all", "encoders"):
        from memetrm.encoders import DEFAULT_ENCODER, list_encoders

        results.print(f"encoders: {', '.join(list_encoders())} (default {DEFAULT_ENCODER}; "
                      "hf-clip:<hub id or path>, open-clip:<arch>:<tag or path>)")
    if what in ("all", "heads"):
        from memetrm.heads import list_heads

        if verbose:
            results.print(heads_table(), soft_wrap=True)
        else:
            results.print(f"heads:    {', '.join(list_heads())}")


def heads_table() -> Table:
    """Each head: what it is, its size on typical features, and its options with defaults."""
    import dataclasses

    from memetrm.heads import create_head, head_config, head_entry, list_heads

    dims = {"image": 1280, "text": 384}  # minilm-effnet, image + text
    table = Table(title=f"heads (parameters for {dims}; tokens of the same widths)",
                  caption="(by name): not in --heads all (make run); runs when named, "
                          "e.g. --heads perceiver")
    for col in ("head", "description", "params", "options (defaults)", "training preset"):
        table.add_column(col, overflow="fold")
    for name in list_heads():
        entry = head_entry(name)
        params = sum(p.numel() for p in create_head(name, dims, dims).parameters()
                     if p.requires_grad)
        options = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(head_config(name)).items())
        preset = ", ".join(f"{k}={v}" for k, v in entry.train.items()) or "-"
        table.add_row(name + ("" if entry.in_all else " (by name)"), entry.description,
                      f"{params:,}", options or "-", preset)
    return table


def register(app: typer.Typer) -> None:
    app.command("list")(list_components)

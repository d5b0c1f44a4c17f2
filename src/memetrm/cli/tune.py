"""``memetrm tune``: contrastive tuning of a text tower, saved for ``--encoder tuned:PATH``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from memetrm.cli.options import DataRoot


def tune(
    dataset: str = typer.Option("hateful_memes", "--dataset",
                                help="registered name or jsonl folder path"),
    out: Path = typer.Option(..., "--out", help="folder to write the tuned tower to"),
    tower: str = typer.Option("all-MiniLM-L6-v2", "--tower",
                              help="all-MiniLM-L6-v2, all-mpnet-base-v2 or a sentence-transformers "
                                   "folder"),
    field: str = typer.Option("text+caption", "--field",
                              help="text, caption, or text+caption (the meme as one sequence)"),
    loss: str = typer.Option("batch-all", "--loss",
                             help="batch-all | batch-hard | batch-semi-hard | contrastive (SetFit "
                                  "pairs)"),
    epochs: int = typer.Option(1, "--epochs", min=1),
    batch_size: int = typer.Option(32, "--batch-size", min=4),
    lr: float = typer.Option(2e-5, "--lr"),
    lora_rank: int = typer.Option(0, "--lora-rank", min=0, help="LoRA rank (0: full tuning)"),
    train_layers: int = typer.Option(0, "--train-layers", min=0,
                                     help="train only the top N layers (0: all)"),
    fraction: float = typer.Option(1.0, "--fraction",
                                   help="stratified share of train to tune on; the rest is "
                                        "held out for fitting heads"),
    max_seq_length: int = typer.Option(64, "--max-seq-length", min=8),
    probe_sample: int = typer.Option(2000, "--probe-sample", min=0,
                                     help="training memes the dev probe fits on (0: all)"),
    max_steps: int = typer.Option(-1, "--max-steps",
                                  help="stop after N steps, no dev selection (benchmarks)"),
    seed: int = typer.Option(0, "--seed"),
    data_root: DataRoot = None,
    as_json: bool = typer.Option(False, "--json", help="print tuning.json on stdout"),
) -> None:
    """Tune a text tower contrastively on the training memes (selection on dev); a benchmark
    and a command, never part of `make run`."""
    from memetrm.training.tune import TuneConfig, tune_text_tower

    cfg = TuneConfig(tower=tower, field=field, loss=loss, epochs=epochs, batch_size=batch_size,
                     lr=lr, lora_rank=lora_rank, train_layers=train_layers, fraction=fraction,
                     max_seq_length=max_seq_length, probe_sample=probe_sample,
                     max_steps=max_steps, seed=seed)
    summary = tune_text_tower(dataset, out, cfg, data_root=data_root,
                              log=lambda m: typer.echo(m, err=True))
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"saved to {out}; use it as --encoder tuned:{out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)

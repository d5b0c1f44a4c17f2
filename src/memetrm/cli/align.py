"""``memetrm align``: projections on frozen towers, with a retrieval / zero-shot report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memetrm.cli.options import DataRoot, Device, Encoder, MissingImages
from memetrm.progress import make_progress

console = Console(stderr=True)


def metrics_table(m: dict[str, Any]) -> Table:
    """Retrieval R@k beside chance, and zero-shot accuracy beside its baselines."""
    r = m["retrieval"]
    t = Table(title=f"{m['objective']} on {m['dataset']} ({m['split']}, N = {int(r['n'])})")
    for col in ("metric", "image->text", "text->image", "chance"):
        t.add_column(col, justify="right")
    for k in (1, 5, 10):
        t.add_row(f"R@{k}", f"{r[f'i2t_R@{k}']:.3f}", f"{r[f't2i_R@{k}']:.3f}",
                  f"{r[f'chance_R@{k}']:.3f}")
    z = m.get("zero_shot")
    if z:
        t.add_row("zero-shot acc", f"{z['accuracy']:.3f}", "",
                  f"majority {z['majority_baseline']:.3f}")
        t.add_row("zero-shot bal. acc", f"{z['balanced_accuracy']:.3f}", "",
                  f"{z['chance_balanced']:.3f}")
        if "auroc" in z:
            t.add_row("zero-shot AUROC", f"{z['auroc']:.3f}", "", "0.500")
    rho = m.get("specificity", {}).get("spearman_words_vs_text_dist")
    if rho is not None:
        t.add_row("Spearman(words, d0)", f"{rho:.3f}", "", "0")
    return t


def align(
    dataset: Annotated[str, typer.Option(help="Registered name or jsonl folder path.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    objective: Annotated[str, typer.Option(help="clip | meru | itm")] = "clip",
    encoder: Encoder = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    lr: Annotated[float, typer.Option()] = 1e-3,
    embed_dim: Annotated[int, typer.Option(min=2)] = 256,
    image_field: Annotated[str, typer.Option(
        help="The 'image' side (e.g. caption when images are absent).")] = "image",
    text_field: Annotated[str, typer.Option()] = "text",
    seed: Annotated[int, typer.Option()] = 0,
    data_root: DataRoot = None,
    on_missing_image: MissingImages = None,
    device: Device = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train projections on frozen towers (LiT-style) and report held-out retrieval/zero-shot."""
    from memetrm.alignment import AlignConfig, align_train_config, run_alignment
    from memetrm.devices import resolve_device
    from memetrm.encoders import DEFAULT_ENCODER

    encoder = encoder or DEFAULT_ENCODER
    tcfg = align_train_config(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    cfg = AlignConfig(objective=objective, embed_dim=embed_dim, image_field=image_field,
                      text_field=text_field)
    with make_progress() as bar:
        task = bar.add_task(f"align {objective}", total=tcfg.epochs)
        metrics = run_alignment(
            dataset, out, cfg, encoder, data_root, on_missing_image or "skip", tcfg=tcfg,
            device=str(resolve_device(device)),
            log=lambda row: bar.update(task, advance=1, description=(
                f"align {objective} epoch {row['epoch'] + 1}: loss {row['loss']:.4f}"
                + (f", dev mean R@k {row['dev_score']:.3f}" if "dev_score" in row else ""))))
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    Console().print(metrics_table(metrics))
    console.print(f"saved to {out}")


def register(app: typer.Typer) -> None:
    app.command()(align)

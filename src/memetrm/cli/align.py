"""``memetrm align`` (projection training + retrieval/zero-shot report) and ``memetrm data``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from memetrm.cli.options import DataRoot, Device
from memetrm.config import DEFAULT_ENCODER
from memetrm.progress import make_progress

console = Console(stderr=True)

data_app = typer.Typer(help="Prepare extra datasets as Hateful-Memes-format jsonl folders.",
                       no_args_is_help=True)
prepare_app = typer.Typer(help="Build a dataset folder usable as --dataset PATH.",
                          no_args_is_help=True)
data_app.add_typer(prepare_app, name="prepare")


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
    dataset: str = typer.Option(..., "--dataset", help="registered name or jsonl folder path"),
    objective: str = typer.Option("clip", "--objective", help="clip | meru | itm"),
    out: Path = typer.Option(..., "--out", help="run directory to write"),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder"),
    epochs: int = typer.Option(30, "--epochs", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=2),
    lr: float = typer.Option(1e-3, "--lr"),
    embed_dim: int = typer.Option(256, "--embed-dim", min=2),
    image_field: str = typer.Option("image", "--image-field",
                                    help="the 'image' side (e.g. caption when images are absent)"),
    text_field: str = typer.Option("text", "--text-field"),
    seed: int = typer.Option(0, "--seed"),
    data_root: DataRoot = None,
    on_missing_image: str = typer.Option("skip", "--on-missing-image", help="skip | error"),
    device: Device = None,
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON on stdout"),
) -> None:
    """Train projections on frozen towers (LiT-style) and report held-out retrieval/zero-shot."""
    from memetrm.alignment import AlignConfig, align_train_config, run_alignment
    from memetrm.devices import resolve_device

    if on_missing_image not in ("skip", "error"):
        raise typer.BadParameter("--on-missing-image must be skip or error")
    tcfg = align_train_config(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                              device=str(resolve_device(device)))
    cfg = AlignConfig(objective=objective, embed_dim=embed_dim, image_field=image_field,
                      text_field=text_field)
    with make_progress() as bar:
        task = bar.add_task(f"align {objective}", total=tcfg.epochs)
        metrics = run_alignment(
            dataset, out, cfg, encoder, data_root, on_missing_image, tcfg=tcfg,
            log=lambda row: bar.update(task, advance=1, description=(
                f"align {objective} epoch {row['epoch'] + 1}: loss {row['loss']:.4f}"
                + (f", dev mean R@k {row['dev_score']:.3f}" if "dev_score" in row else ""))))
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    Console().print(metrics_table(metrics))
    console.print(f"saved to {out}")


def prepare_openclipart_cmd(
    source: Path = typer.Option(Path("/usr/share/openclipart/svg"), "--source",
                                help="folder of SVGs (Debian package openclipart-svg)"),
    out: Path = typer.Option(Path("~/.cache/memetrm/datasets/openclipart"), "--out"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="keep N files (hash order)"),
    size: int = typer.Option(224, "--size", min=16, help="square output side, pixels"),
    workers: int = typer.Option(2, "--workers", min=0, help="render processes (0 = inline)"),
    timeout: float = typer.Option(20.0, "--timeout", help="seconds per SVG before skipping it"),
    max_mb: float = typer.Option(5.0, "--max-mb", help="skip SVG files larger than this"),
) -> None:
    """Rasterise Open Clip Art SVGs into train/val/test jsonl + PNGs (broken files are skipped)."""
    from memetrm.data.openclipart import prepare_openclipart

    prepare_openclipart(source, out, limit, size, workers, timeout, int(max_mb * 1_000_000),
                        log=console.print)


def register(app: typer.Typer) -> None:
    app.command("align")(align)
    prepare_app.command("openclipart")(prepare_openclipart_cmd)
    app.add_typer(data_app, name="data")

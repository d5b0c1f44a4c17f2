"""Core commands: extract, train, compare, evaluate, report, list."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memetrm.config import load_run_config
from memetrm.data import get_dataset, list_datasets
from memetrm.encoders import DEFAULT_ENCODER, list_encoders
from memetrm.errors import ConfigError
from memetrm.evaluation import compute_metrics
from memetrm.features import FeatureSet, load_features
from memetrm.heads import from_pretrained, list_heads
from memetrm.progress import console
from memetrm.training.engine import predict
from memetrm.training.runner import run
from memetrm.utils import atomic_write_text

DataRoot = Annotated[str | None, typer.Option(
    "--data-root", envvar="MEMETRM_DATA",
    help="Folder holding the named datasets (default ../shared/data).")]
Dataset = Annotated[str, typer.Option(help="Registered dataset name or a jsonl folder path.")]
Fields = Annotated[str | None, typer.Option(
    help="Comma-separated fields to encode, e.g. text,caption (default: the dataset's).")]
MissingImages = Annotated[str, typer.Option(
    "--on-missing-image", help="error (default) or skip; skipped ids are counted and reported.")]
CacheDir = Annotated[str | None, typer.Option(
    envvar="MEMETRM_CACHE", help="Feature cache folder (default ~/.cache/memetrm).")]


def _split_csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _summary_table(results: list[dict]) -> Table:
    table = Table(title="results (mean ± std over seeds; test AUROC 95% bootstrap CI)")
    table.add_column("head", no_wrap=True)
    for col in ("dev AUROC", "test AUROC", "95% CI", "test acc", "test F1", "s/seed"):
        table.add_column(col)
    for r in results:
        dev, test = r["splits"][r["roles"]["dev"]], r["splits"][r["roles"]["test"]]
        ci = test["auroc"]["ci95"]
        table.add_row(
            r["head"], f"{dev['auroc']['mean']:.3f} ± {dev['auroc']['std']:.3f}",
            f"{test['auroc']['mean']:.3f} ± {test['auroc']['std']:.3f}",
            f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-",
            f"{test['accuracy']['mean']:.3f} ± {test['accuracy']['std']:.3f}",
            f"{test['f1']['mean']:.3f} ± {test['f1']['std']:.3f}",
            f"{r['train_seconds_per_seed']:.1f}",
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        dataset: Dataset = "multioff",
        encoder: str = DEFAULT_ENCODER,
        splits: Annotated[str | None, typer.Option(help="Comma-separated (default: all).")] = None,
        fields: Fields = None,
        tokens: Annotated[bool, typer.Option(help="Also store token-level features.")] = False,
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = "error",
        batch_size: int = 32,
        num_workers: Annotated[int | None, typer.Option(help="Image-decoding workers.")] = None,
    ) -> None:
        """Compute features once per (split, encoder, field) and cache them."""
        ds = get_dataset(dataset, data_root)
        field_list = _split_csv(fields) or list(ds.default_fields)
        for split in _split_csv(splits) or ds.splits():
            t0 = time.perf_counter()
            fs = load_features(dataset, split, encoder, field_list, tokens, data_root,
                               on_missing_image, cache_dir, batch_size, num_workers)
            state = f"encoded {', '.join(fs.meta['encoded'])}" if fs.meta["encoded"] else "cached"
            console.print(f"{ds.identity}/{split}: {len(fs)} records, {state} "
                          f"({time.perf_counter() - t0:.1f}s)")

    @app.command()
    def train(
        dataset: Dataset = "multioff",
        encoder: str = DEFAULT_ENCODER,
        head: Annotated[str, typer.Option(help=f"One of: {', '.join(list_heads())}.")] = "mlp",
        seeds: int = 5,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write results JSON here.")] = None,
        fields: Fields = None,
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = "error",
        config: Annotated[Path | None, typer.Option(help="YAML run config.")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Override, e.g. --set train.lr=1e-4 --set head_cfg.hidden=256.")] = None,
        out_dir: Annotated[str | None, typer.Option(help="Keep results + predictions here.")] = None,
        save: Annotated[str | None, typer.Option(help="Save the best-dev checkpoint here.")] = None,
    ) -> None:
        """Train a head on cached features over N seeds; select on dev; report every split."""
        t0 = time.perf_counter()
        cfg = load_run_config(config, set_, dataset=dataset, encoder=encoder, head=head,
                              seeds=seeds, fields=_split_csv(fields), data_root=data_root,
                              cache_dir=cache_dir, on_missing_image=on_missing_image,
                              out_dir=out_dir, save=save)
        results = run(cfg)
        results["wall_seconds"] = time.perf_counter() - t0
        console.print(_summary_table([results]))
        if json_out:
            atomic_write_text(json_out, json.dumps(results, indent=2))
            console.print(f"wrote {json_out}")

    @app.command()
    def compare(
        dataset: Dataset = "multioff",
        encoder: str = DEFAULT_ENCODER,
        heads: Annotated[str, typer.Option(help="Comma-separated heads, or 'all'.")] = "all",
        seeds: int = 5,
        fields: Fields = None,
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = "error",
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override for every head.")] = None,
        out_dir: Annotated[Path, typer.Option(help="One sub-folder per head.")] = Path("runs"),
        report: Annotated[Path | None, typer.Option(help="Write a markdown report here.")] = None,
    ) -> None:
        """Train and evaluate several heads with the same features, seeds and protocol."""
        names = list_heads(all_only=True) if heads == "all" else _split_csv(heads) or []
        results, dirs = [], []
        for name in names:
            console.rule(f"{dataset}: {name}")
            d = out_dir / name
            cfg = load_run_config(None, set_, dataset=dataset, encoder=encoder, head=name,
                                  seeds=seeds, fields=_split_csv(fields), data_root=data_root,
                                  cache_dir=cache_dir, on_missing_image=on_missing_image,
                                  out_dir=str(d))
            results.append(run(cfg))
            dirs.append(d)
        console.print(_summary_table(results))
        if report:
            from memetrm.evaluation.report import write_report  # matplotlib: import on use

            write_report([dirs], report, title=f"memetrm: {dataset}")
            console.print(f"wrote {report}")

    @app.command()
    def evaluate(
        model: Annotated[Path, typer.Option(help="A checkpoint folder from train --save.")],
        dataset: Dataset = "multioff",
        split: str = "test",
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = "error",
        json_out: Annotated[Path | None, typer.Option("--json")] = None,
    ) -> None:
        """Score a saved checkpoint on one split at its dev-chosen threshold."""
        head, meta = from_pretrained(model)
        fs: FeatureSet = load_features(dataset, split, meta["encoder"], meta["fields"],
                                       meta.get("tokens", False), data_root, on_missing_image,
                                       cache_dir)
        y = fs.labels.numpy()
        if (y != y).any():
            raise ConfigError(f"{dataset}/{split} has unlabelled records; cannot evaluate")
        metrics = compute_metrics(y, predict(head, fs)["prob"].numpy(), meta["threshold"])
        console.print_json(data=metrics)
        if json_out:
            atomic_write_text(json_out, json.dumps(metrics, indent=2))

    @app.command()
    def report(
        runs: Annotated[list[Path], typer.Argument(help="Run folders (from --out-dir).")],
        out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("report.md"),
    ) -> None:
        """A markdown results table with ROC (and reasoning-trace) plots across runs."""
        from memetrm.evaluation.report import write_report

        write_report([runs], out)
        console.print(f"wrote {out}")

    @app.command("list")
    def list_components() -> None:
        """Registered datasets, encoders and heads."""
        console.print(f"datasets: {', '.join(list_datasets())} (or a jsonl folder path)")
        console.print(f"encoders: {', '.join(list_encoders())}")
        console.print(f"heads:    {', '.join(list_heads())}")




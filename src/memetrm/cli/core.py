"""Core commands: extract, train, compare, evaluate, report, list."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from memetrm.cli.options import (
    AllowOutside,
    BadLine,
    CacheDir,
    DataRoot,
    Dataset,
    Device,
    Encoder,
    Fields,
    MissingImages,
    Model,
    Precision,
    Threshold,
    ThresholdMetric,
    split_csv,
)
from memetrm.config import DEFAULT_ENCODER, RunConfig, load_run_config
from memetrm.data import get_dataset, list_datasets
from memetrm.devices import resolve_device
from memetrm.errors import ConfigError
from memetrm.progress import console
from memetrm.utils import atomic_write_text

# torch-backed modules are imported inside the commands, so --help and errors in the
# arguments answer without loading them

Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override, e.g. --set train.lr=1e-4 --set head_cfg.hidden=256.")]
ConfigFile = Annotated[Path | None, typer.Option(
    help="YAML run config; options you type override it, --set overrides both.")]
PrintConfig = Annotated[bool, typer.Option(
    "--print-config", help="Print the resolved config as YAML and exit.")]


def _summary_table(results: list[dict]) -> Table:
    from memetrm.evaluation.report import SUMMARY_HEADER, summary_rows

    table = Table(title="results (mean ± std over seeds; test AUROC 95% bootstrap CI)")
    for i, col in enumerate(SUMMARY_HEADER):
        table.add_column(col, no_wrap=i == 0, justify="right" if i in (1, 2, 3, 4) else "left")
    for row in summary_rows(results):
        table.add_row(*row)
    return table


def _check_devices(cfg: RunConfig) -> None:
    """A device that is not there is an error before any data or model is loaded."""
    resolve_device(cfg.device)
    resolve_device(cfg.train.get("device", cfg.device))


def _print_config(cfg: RunConfig) -> None:
    from memetrm.training.runner import resolved_config

    typer.echo(yaml.safe_dump(resolved_config(cfg), sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        dataset: Dataset = None,
        encoder: Encoder = None,
        splits: Annotated[str | None, typer.Option(help="Comma-separated (default: all).")] = None,
        fields: Fields = None,
        tokens: Annotated[bool, typer.Option(help="Also store token-level features.")] = False,
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = None,
        on_bad_line: BadLine = None,
        allow_outside_images: AllowOutside = False,
        batch_size: int = 32,
        num_workers: Annotated[int | None, typer.Option(help="Image-decoding workers.")] = None,
        device: Device = None,
        precision: Precision = None,
        engine: Annotated[str, typer.Option(help="local, or ray (shards over Ray workers)")] = "local",
        address: Annotated[str | None, typer.Option(
            help="Ray cluster to join (default: start an embedded local one).")] = None,
        workers: Annotated[int, typer.Option(help="Ray workers.", min=1)] = 2,
        gpus_per_worker: Annotated[float, typer.Option(min=0)] = 0.0,
    ) -> None:
        """Compute features once per (split, encoder, field) and cache them."""
        from memetrm.features import load_features

        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {engine!r}")

        cfg = load_run_config(None, None, dataset=dataset, encoder=encoder,
                              on_missing_image=on_missing_image, on_bad_line=on_bad_line,
                              allow_outside_images=allow_outside_images or None, device=device,
                              precision=precision)
        _check_devices(cfg)
        ds = get_dataset(cfg.dataset, data_root, on_bad_line=cfg.on_bad_line,
                         allow_outside_images=cfg.allow_outside_images)
        field_list = split_csv(fields) or list(ds.default_fields)
        for split in split_csv(splits) or ds.splits():
            t0 = time.perf_counter()
            if engine == "ray":
                from memetrm.features.cache import FeatureCache
                from memetrm.features.distributed import extract_ray, init_ray
                from memetrm.features.extract import plan_extraction

                init_ray(address, num_cpus=workers)
                plan = plan_extraction(cfg.dataset, split, cfg.encoder, field_list, tokens,
                                       data_root, cfg.on_missing_image, cfg.on_bad_line,
                                       cfg.allow_outside_images)
                extract_ray(plan, FeatureCache(cache_dir), workers, gpus_per_worker,
                            cfg.precision, batch_size)
            fs = load_features(cfg.dataset, split, cfg.encoder, field_list, tokens, data_root,
                               cfg.on_missing_image, cache_dir, batch_size, num_workers,
                               cfg.device, cfg.precision, cfg.on_bad_line,
                               cfg.allow_outside_images)
            state = f"encoded {', '.join(fs.meta['encoded'])}" if fs.meta["encoded"] else "cached"
            console.print(f"{ds.identity}/{split}: {len(fs)} records, {state} "
                          f"({time.perf_counter() - t0:.1f}s)")

    def train(
        ctx: typer.Context,
        dataset: Dataset = None,
        encoder: Encoder = None,
        head: Annotated[str | None, typer.Option(
            "--head", "--heads", help="A head, several (comma-separated) or 'all' "
            "[default: mlp for train, all for compare]; `memetrm list` names them.")] = None,
        seeds: Annotated[int | None, typer.Option(help="Seeds per head [default: 5].")] = None,
        cv: Annotated[int | None, typer.Option(
            "--cv", help="K folds: merge train and dev, select epoch, hyperparameters and "
                         "threshold on out-of-fold predictions, refit, score test [default: "
                         "off; suggested when dev has < 300 examples].")] = None,
        threshold_metric: ThresholdMetric = None,
        fields: Fields = None,
        field_sets: Annotated[str | None, typer.Option(
            "--field-sets", help="Sweep field subsets, ';'-separated, e.g. "
            "'text;image;text,image' (a field may name its encoder: text@mpnet-effnet); every "
            "head runs on each.")] = None,
        ensemble: Annotated[int | None, typer.Option(
            "--ensemble", min=1, help="Also report (and with --save, save) the mean of the K "
                                      "configurations with the best dev AUROC.")] = None,
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = None,
        on_bad_line: BadLine = None,
        allow_outside_images: AllowOutside = False,
        device: Device = None,
        precision: Precision = None,
        config: ConfigFile = None,
        set_: Overrides = None,
        json_out: Annotated[Path | None, typer.Option(
            "--json", help="Write results JSON here (a list when several heads run).")] = None,
        out_dir: Annotated[Path | None, typer.Option(
            help="Keep results + predictions here (one sub-folder per head when several run).")
        ] = None,
        save: Annotated[str | None, typer.Option(help="Save the best-dev checkpoint here.")] = None,
        report: Annotated[Path | None, typer.Option(help="Write a markdown report here.")] = None,
        print_config: PrintConfig = False,
    ) -> None:
        """Train heads on cached features over N seeds; select on dev; report every split."""
        from memetrm.heads import list_heads
        from memetrm.training.runner import run_models

        spec = head or ("all" if ctx.info_name == "compare" else None)
        names = list_heads(all_only=True) if spec == "all" else split_csv(spec) or [None]
        sets = ([split_csv(f) for f in field_sets.split(";") if split_csv(f)] if field_sets
                else [split_csv(fields)])
        combos = [(n, f) for n in names for f in sets]
        if report and not out_dir:
            out_dir = Path("runs")
        if save and len(combos) > 1 and not ensemble:
            raise ConfigError("--save keeps one model: name one head and one field set, or "
                              "save an --ensemble")
        if threshold_metric:  # a typed option: any --set of the same key still wins
            set_ = [f"train.threshold_metric={threshold_metric}", *(set_ or [])]

        def sub_dir(name: str | None, f: list[str] | None) -> str | None:
            if not out_dir:
                return None
            parts = ([name or "head"] if len(names) > 1 else []) + (
                ["+".join(f).replace("@", "_").replace(":", "_")] if field_sets else [])
            return str(out_dir.joinpath(*parts))

        cfgs = [load_run_config(
            config, set_, dataset=dataset, encoder=encoder, head=name, seeds=seeds, cv=cv,
            fields=f, data_root=data_root, cache_dir=cache_dir,
            on_missing_image=on_missing_image, on_bad_line=on_bad_line,
            allow_outside_images=allow_outside_images or None, device=device, precision=precision,
            save=None if ensemble else save, out_dir=sub_dir(name, f))
            for name, f in combos]
        if print_config:
            for cfg in cfgs:
                _print_config(cfg)
            return
        for cfg in cfgs:
            _check_devices(cfg)
        outs = []
        for cfg in cfgs:
            console.rule(f"{cfg.dataset}: {cfg.head}" + (f" on {'+'.join(cfg.fields)}"
                                                         if field_sets else ""))
            outs.append(run_models(cfg))
        results = [o.results for o in outs]
        console.print(_summary_table(results))
        record = _ensemble(outs, ensemble, save, out_dir) if ensemble else None
        if json_out:
            body = results[0] if len(results) == 1 else results
            atomic_write_text(json_out, json.dumps(
                {"runs": results, "ensemble": record} if record else body, indent=2))
            console.print(f"wrote {json_out}")
        if report:
            from memetrm.evaluation.report import write_report  # matplotlib: import on use

            write_report([[Path(c.out_dir) for c in cfgs]], report,
                         title=f"memetrm: {cfgs[0].dataset}")
            console.print(f"wrote {report}")

    def _ensemble(outs: list, k: int, save: str | None, out_dir: Path | None) -> dict:
        from memetrm.evaluation.report import fmt
        from memetrm.provenance import provenance
        from memetrm.training.ensemble import save_ensemble, select_ensemble

        tcfg = outs[0].results["config"]["train"]
        sel = select_ensemble(outs, k, tcfg["threshold_metric"], outs[0].cfg.bootstrap)
        table = Table(title=f"ensemble of the {len(sel['members'])} best on dev: "
                            f"{', '.join(sel['members'])} (threshold {sel['threshold']:.3f})")
        for col in ("split", "n", "AUROC [95% CI]", "accuracy", "F1"):
            table.add_column(col)
        for split, m in sel["splits"].items():
            table.add_row(split, str(m["n"]), fmt(m["auroc"], ci=True), fmt(m["accuracy"]),
                          fmt(m["f1"]))
        console.print(table)
        record = {k: v for k, v in sel.items() if not k.startswith("_")}
        record["provenance"] = provenance(seeds=[r.seed for o in outs for r in o.runs])
        if out_dir:
            atomic_write_text(out_dir / "ensemble.json", json.dumps(record, indent=2))
        if save:
            save_ensemble(sel, save, record["provenance"])
            console.print(f"saved the ensemble to {save}")
        return record

    app.command("train")(train)
    app.command("compare", help="Train and compare several heads with the same features, seeds "
                                "and protocol (train with --heads, all by default).")(train)

    @app.command()
    def evaluate(
        model: Model,
        dataset: Annotated[str | None, typer.Option(
            help="Dataset name or folder [default: the model's own].")] = None,
        split: Annotated[str | None, typer.Option(
            help="Split to score [default: the dataset's test split].")] = None,
        data_root: DataRoot = None,
        cache_dir: CacheDir = None,
        on_missing_image: MissingImages = None,
        device: Device = None,
        threshold: Threshold = None,
        json_out: Annotated[Path | None, typer.Option("--json")] = None,
    ) -> None:
        """Score a saved model on a split at its dev-chosen threshold (or --threshold): n,
        metrics with a bootstrap CI, and the confusion matrix."""
        from memetrm.evaluation import bootstrap_ci, compute_metrics
        from memetrm.features import load_features
        from memetrm.serving.predictor import load_model
        from memetrm.training.engine import predict

        dev = resolve_device(device)
        head, meta, chosen = load_model(model, dev)
        source = "chosen on dev" if threshold is None else "set by --threshold"
        threshold = chosen if threshold is None else threshold
        saved = meta.get("run_config") or {}
        dataset = dataset or meta.get("dataset") or RunConfig.dataset
        split = split or get_dataset(dataset, data_root).roles()["test"]
        fs = load_features(dataset, split, meta["encoder"], meta["fields"],
                           meta.get("tokens", False), data_root,
                           on_missing_image or saved.get("on_missing_image", "error"),
                           cache_dir, device=str(dev))
        y = fs.labels.cpu().numpy()
        if (y != y).any() or len(set(y.tolist())) < 2:
            raise ConfigError(f"{dataset}/{split} needs labels of both classes to be evaluated")
        prob = predict(head, fs)["prob"].cpu().numpy()
        pred = prob >= threshold
        names = meta.get("labels") or ["negative", "positive"]
        ci = bootstrap_ci(y, [prob], [threshold])
        metrics = compute_metrics(y, prob, threshold)
        report = {"model": str(model), "dataset": dataset, "split": split, "n": len(y),
                  "threshold": threshold, "labels": names,
                  "metrics": {m: {"value": v, "ci95": list(ci[m])} for m, v in metrics.items()},
                  "confusion": {f"true {a} / predicted {b}": int(((y == i) & (pred == j)).sum())
                                for i, a in enumerate(names) for j, b in enumerate(names)}}
        table = Table(title=f"{model} on {dataset}/{split}: n = {len(y)}, threshold "
                            f"{threshold:.3f} ({source})")
        for col in ("metric", "value", "95% bootstrap CI"):
            table.add_column(col)
        for m, v in report["metrics"].items():
            table.add_row(m, f"{v['value']:.3f}", f"[{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")
        console.print(table)
        matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
        matrix.add_column("")
        for b in names:
            matrix.add_column(b, justify="right")
        for i, a in enumerate(names):
            matrix.add_row(a, *(str(int(((y == i) & (pred == j)).sum())) for j in range(2)))
        console.print(matrix)
        if json_out:
            atomic_write_text(json_out, json.dumps(report, indent=2))

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
    def list_components(
        what: Annotated[str, typer.Argument(help="all, datasets, encoders or heads")] = "all",
        verbose: Annotated[bool, typer.Option(
            "--verbose", "-v", help="Heads: description, parameters and options.")] = False,
    ) -> None:
        """Registered datasets, encoders and heads (``list heads -v`` for their options)."""
        if what not in ("all", "datasets", "encoders", "heads"):
            raise ConfigError(f"list what? {what!r}: use datasets, encoders or heads")
        if what in ("all", "datasets"):
            console.print(f"datasets: {', '.join(list_datasets())} (or a jsonl folder path)")
        if what in ("all", "encoders"):
            from memetrm.encoders import list_encoders

            console.print(f"encoders: {', '.join(list_encoders())} (default {DEFAULT_ENCODER}; "
                          "hf-clip:<hub id or path>, open-clip:<arch>:<tag or path>)")
        if what in ("all", "heads"):
            from memetrm.heads import list_heads

            if verbose:
                console.print(_heads_table(), soft_wrap=True)
            else:
                console.print(f"heads:    {', '.join(list_heads())}")


def _heads_table() -> Table:
    """Each head: what it is, its size on typical features, and its options with defaults."""
    import dataclasses

    from memetrm.heads import create_head, head_config, head_entry, list_heads

    dims = {"image": 1280, "text": 384}  # minilm-effnet, image + text
    table = Table(title=f"heads (parameters for {dims}; tokens of the same widths)")
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

"""``memetrm train`` and ``memetrm compare``: heads over N seeds on cached features, selected on
dev (or by cross-validation), every split reported with CIs.

``compare`` is ``train`` with every head by default. Options typed on the command line map to
config keys (``TYPED_KEYS``) and apply over ``--config`` by one rule; ``--set`` beats both.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from memetrm.cli.options import (
    AllowOutside,
    BadLine,
    CacheDir,
    ConfigFile,
    DataRoot,
    Dataset,
    Device,
    Encoder,
    Fields,
    MissingImages,
    Overrides,
    Precision,
    PrintConfig,
    ThresholdMetric,
    split_csv,
)
from memetrm.config import RunConfig, dump_yaml, load_run_config
from memetrm.errors import ConfigError, MemetrmError
from memetrm.progress import console
from memetrm.utils import atomic_write_text

#: command-line parameter -> the config key it sets (None typed = not typed, the file's value stays)
TYPED_KEYS = {
    "dataset": "dataset", "encoder": "encoder", "head": "head", "seeds": "seeds", "cv": "cv",
    "fields": "fields", "data_root": "data_root", "cache_dir": "cache_dir",
    "on_missing_image": "on_missing_image", "on_bad_line": "on_bad_line",
    "allow_outside_images": "allow_outside_images", "device": "device",
    "precision": "precision", "save": "save", "out_dir": "out_dir",
    "threshold_metric": "train.threshold_metric", "train_ids": "train_ids",
    "calibration": "calibration",
}


def train(
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
    calibration: Annotated[str | None, typer.Option(
        help="How the saved model's probabilities are calibrated, on dev (on the out-of-fold "
             "predictions under --cv): temperature, platt, isotonic (needs 1,000 examples) "
             "or none [default: temperature].")] = None,
    fields: Fields = None,
    train_ids: Annotated[str | None, typer.Option(
        "--train-ids", help="Fit on these training memes only: a file of ids, one per line, or "
                            "a tuning.json (its held_out_ids, which a tuned tower never saw).")
    ] = None,
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
    allow_outside_images: AllowOutside = None,
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
    wide: Annotated[bool, typer.Option(
        "--wide", help="Print every column (± std, dev accuracy and F1, parameters, time); "
                       "the default table fits 100 columns.")] = False,
) -> None:
    """Train heads on cached features over N seeds; select on dev; report every split."""
    from memetrm.heads import list_heads

    given = locals()
    typed = {key: given[param] for param, key in TYPED_KEYS.items()}
    typed["out_dir"] = out_dir and str(out_dir)
    names = list_heads(all_only=True) if head == "all" else split_csv(head) or [None]
    sets = ([split_csv(f) for f in field_sets.split(";") if split_csv(f)] if field_sets
            else [split_csv(fields)])
    combos = [(n, f) for n in names for f in sets]
    if save and len(combos) > 1 and not ensemble:
        raise ConfigError("--save keeps one model: name one head and one field set, or "
                          "save an --ensemble")
    cfgs = [load_run_config(config, set_, {
        **typed, "head": name, "fields": f, "save": None if ensemble else save})
        for name, f in combos]
    # out_dir comes by the same rule as every key; each run of a sweep gets a sub-folder
    root = Path(cfgs[0].out_dir) if cfgs[0].out_dir else None
    if report and root is None:
        raise ConfigError("--report is made from the runs' folders: pass --out-dir (or set "
                          "out_dir in the config)")

    def sub_dir(root: Path, cfg: RunConfig, name: str | None, f: list[str] | None) -> RunConfig:
        parts = ([name or "head"] if len(names) > 1 else []) + (
            ["+".join(f).replace("@", "_").replace(":", "_")] if field_sets else [])
        return dataclasses.replace(cfg, out_dir=str(root.joinpath(*parts))) if parts else cfg

    if root is not None:
        cfgs = [sub_dir(root, cfg, *combo) for cfg, combo in zip(cfgs, combos, strict=True)]
    if print_config:
        from memetrm.training.runner import resolved_config

        for cfg in cfgs:
            typer.echo(dump_yaml(resolved_config(cfg)), nl=False)
        return
    run_and_report(cfgs, field_sets is not None, ensemble, save, root, json_out, report, wide)


def run_and_report(cfgs: list[RunConfig], sweep: bool, ensemble: int | None, save: str | None,
                   out_dir: Path | None, json_out: Path | None, report: Path | None,
                   wide: bool = False) -> None:
    """Run each configuration, print the comparison, and write what was asked for."""
    from memetrm.devices import resolve_device
    from memetrm.evaluation.tables import summary_table
    from memetrm.modelstore import check_destination
    from memetrm.training.runner import run_models

    for cfg in cfgs:  # a device that is not there fails before any data or model is loaded
        resolve_device(cfg.device)
    for dest in {*(cfg.save for cfg in cfgs if cfg.save), *([save] if save else [])}:
        check_destination(dest)  # refused before training, not after

    def label(cfg: RunConfig) -> str:
        return f"{cfg.dataset}: {cfg.head}" + (f" on {'+'.join(cfg.fields or [])}" if sweep else "")

    cfgs = [cfg for cfg in cfgs if _buildable(cfg, label(cfg), len(cfgs) == 1)]
    if not cfgs:
        raise ConfigError("no head and field set of this sweep can be built (warnings above)")
    outs, failed = [], []
    for cfg in cfgs:
        console.rule(label(cfg))
        try:
            outs.append(run_models(cfg))
        except MemetrmError as e:  # the finished runs are still reported and written below
            if len(cfgs) == 1:
                raise
            console.print(f"[bold red]error:[/] {label(cfg)}: {e}", soft_wrap=True)
            failed.append(label(cfg))
    if not outs:
        raise ConfigError(f"every run failed: {', '.join(failed)}")
    cfgs = [o.cfg for o in outs]
    results = [o.results for o in outs]
    console.print(summary_table(results, wide))
    for o in outs:  # how far the saved probabilities are from observed rates, and before
        test = o.results["splits"][o.results["roles"]["test"]]
        console.print(f"{label(o.cfg)}: {o.results['roles']['test']} ECE (15 bins) "
                      f"{test['ece']['mean']:.3f} with {o.cfg.calibration} calibration, "
                      f"{test['ece_raw']['mean']:.3f} raw", soft_wrap=True)
    for o in outs:
        if o.cfg.save:  # the seed counted as the log counts it
            console.print(f"saved seed {o.results['best_seed'] + 1} of {o.results['seeds']}, the "
                          f"best on dev, to {o.cfg.save}", soft_wrap=True)
    record = _ensemble(outs, ensemble, save, out_dir) if ensemble else None
    if json_out:
        body: Any = results[0] if len(results) == 1 else results
        atomic_write_text(json_out, json.dumps(
            {"runs": results, "ensemble": record} if record else body, indent=2))
        console.print(f"wrote {json_out}")
    if report:
        from memetrm.evaluation.report import write_report  # matplotlib: import on use

        write_report([[Path(c.out_dir) for c in cfgs if c.out_dir]], report,
                     title=f"memetrm: {cfgs[0].dataset}")
        console.print(f"wrote {report}")
    if failed:
        raise ConfigError(f"{len(failed)} of {len(failed) + len(outs)} runs failed "
                          f"({', '.join(failed)}); the others are reported above")


def _buildable(cfg: RunConfig, label: str, alone: bool) -> bool:
    """Whether the run's head can be built; a sweep skips a combination that cannot with a
    warning, before anything trains; a single run raises."""
    from memetrm.training.runner import check_buildable

    try:
        check_buildable(cfg)
    except ConfigError as e:
        if alone:
            raise
        console.print(f"[yellow]warning:[/] skipping {label}: {e}", soft_wrap=True)
        return False
    return True


def _ensemble(outs: list, k: int, save: str | None, out_dir: Path | None) -> dict[str, Any]:
    from memetrm.evaluation.tables import ensemble_table
    from memetrm.provenance import provenance
    from memetrm.training.ensemble import save_ensemble, select_ensemble

    tcfg = outs[0].results["config"]["train"]
    sel = select_ensemble(outs, k, tcfg["threshold_metric"], outs[0].cfg.bootstrap)
    console.print(ensemble_table(sel))
    record = {k: v for k, v in sel.items() if not k.startswith("_")}
    record["provenance"] = provenance(seeds=[r.seed for o in outs for r in o.runs])
    if out_dir:
        atomic_write_text(out_dir / "ensemble.json", json.dumps(record, indent=2))
    if save:
        save_ensemble(sel, save, record["provenance"])
        console.print(f"saved the ensemble to {save}")
    return record


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("compare", context_settings={"default_map": {"head": "all"}},
                help="Train and compare several heads with the same features, seeds and "
                     "protocol (train with --heads, all by default).")(train)

"""``memetrm evaluate``: a saved model on a labelled split, at its dev-chosen threshold, with
the calibration of its probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from memetrm.cli.checks import warn_one_class
from memetrm.cli.options import (
    AllowOutside,
    BadLine,
    CacheDir,
    DataRoot,
    Device,
    JsonOut,
    MissingImages,
    Model,
    Threshold,
)
from memetrm.config import DataOptions
from memetrm.errors import ConfigError
from memetrm.progress import results
from memetrm.utils import atomic_write_text


def evaluate(
    model: Model,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset name or folder [default: the model's own].")] = None,
    split: Annotated[str | None, typer.Option(
        help="Split to score [default: the dataset's test split].")] = None,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    on_missing_image: MissingImages = None,
    on_bad_line: BadLine = None,
    allow_outside_images: AllowOutside = None,
    device: Device = None,
    threshold: Threshold = None,
    json_out: JsonOut = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write a PNG here: the ROC beside the reliability diagram.")] = None,
) -> None:
    """Score a saved model on a split at its dev-chosen threshold (or --threshold): n,
    metrics with a bootstrap CI, the expected calibration error (15 bins) of its calibrated
    and raw probabilities, and the confusion matrix. The dataset and bad-record policies the
    model was trained with apply, each under the option you type."""
    from memetrm.data import get_dataset
    from memetrm.devices import resolve_device
    from memetrm.encoders.saved import resolve_encoders
    from memetrm.evaluation.calibration import Calibrator, expected_calibration_error, reliability
    from memetrm.evaluation.saved import evaluate_scores
    from memetrm.features import load_features
    from memetrm.serving.predictor import load_model
    from memetrm.training.engine import predict

    dev = resolve_device(device)
    head, meta, chosen = load_model(model, dev)
    saved = meta.get("run_config") or {}
    # the model's bad-record policies apply unless typed, as a config file's would; this
    # machine's folders and leave to read outside the dataset folder never come from a model
    policies = {"on_missing_image": on_missing_image, "on_bad_line": on_bad_line}
    data = DataOptions(data_root, cache_dir, allow_outside_images=bool(allow_outside_images),
                       **{k: (saved.get(k) or "error") if v is None else v
                          for k, v in policies.items()})
    dataset = dataset or meta.get("dataset") or saved.get("dataset")
    if not dataset:
        raise ConfigError(f"{model}: the model does not name its dataset; pass --dataset")
    split = split or get_dataset(dataset, data.data_root, on_bad_line=data.on_bad_line,
                                 allow_outside_images=data.allow_outside_images).roles()["test"]
    fs = load_features(dataset, split, resolve_encoders(meta, model)[meta["encoder"]], meta["fields"],
                       tokens=meta.get("tokens", False), data=data, device=str(dev))
    raw = predict(head, fs)["prob"].cpu().numpy().astype(float)
    prob = Calibrator.from_config(meta, str(model / "config.json"))(raw)
    thr = chosen if threshold is None else threshold
    y = fs.labels.cpu().numpy()
    try:
        report = evaluate_scores(y, prob, thr, meta.get("labels") or ["negative", "positive"])
    except ConfigError as e:
        raise ConfigError(f"{dataset}/{split}: {e}") from None
    report.update(calibration=meta.get("calibrator") or {"method": "none"},
                  ece=expected_calibration_error(y, prob),
                  ece_raw=expected_calibration_error(y, raw), reliability=reliability(y, prob))
    source = "chosen on dev" if threshold is None else "set by --threshold"
    results.print(metrics_table(report, f"{model} on {dataset}/{split}", source))
    results.print(confusion_table(report))
    warn_one_class(prob, thr, f"{dataset}/{split}", manual=threshold is not None)
    if plot:
        from memetrm.evaluation.report import plot_scores  # matplotlib: import on use

        plot_scores(y, prob, raw, thr, plot, f"{model.name} on {dataset}/{split}")
    if json_out:
        atomic_write_text(json_out, json.dumps(
            {"model": str(model), "dataset": dataset, "split": split, **report}, indent=2))


def metrics_table(report: dict[str, Any], what: str, source: str) -> Table:
    table = Table(title=f"{what}: n = {report['n']}, threshold {report['threshold']:.3f} ({source})")
    for col in ("metric", "value", "95% bootstrap CI"):
        table.add_column(col)
    for m, v in report["metrics"].items():
        table.add_row(m, f"{v['value']:.3f}", f"[{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")
        if m == "accuracy":
            table.add_row("  majority-class rate", f"{report['majority_rate']:.3f}", "")
    table.add_row("ECE (15 bins)", f"{report['ece']:.3f}",
                  f"raw score: {report['ece_raw']:.3f} ({report['calibration']['method']})")
    return table


def confusion_table(report: dict[str, Any]) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in report["labels"]:
        table.add_column(name, justify="right")
    for name, row in zip(report["labels"], report["confusion"], strict=True):
        table.add_row(name, *map(str, row))
    return table


def register(app: typer.Typer) -> None:
    app.command()(evaluate)

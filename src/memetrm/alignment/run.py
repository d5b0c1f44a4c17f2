"""One alignment experiment end to end: features -> train -> held-out evaluation -> saved run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memetrm.alignment.evaluate import evaluate_alignment
from memetrm.alignment.objectives import AlignConfig
from memetrm.alignment.trainer import alignment_config, train_alignment, write_alignment_dir
from memetrm.data import get_dataset
from memetrm.data.registry import MissingImagePolicy
from memetrm.encoders import DEFAULT_ENCODER
from memetrm.features import load_features


def resolve_splits(dataset: str, data_root: str | Path | None = None) -> tuple[str, str, str]:
    """(train, dev, test) names; jsonl folders may call their dev split ``val`` or ``dev``."""
    ds = get_dataset(dataset, data_root)
    have = ds.splits()
    dev = next((s for s in (ds.dev_split, "val", "dev") if s in have), ds.dev_split)
    return ds.train_split, dev, ds.test_split


def run_alignment(dataset: str, out: Path, cfg: AlignConfig, encoder: str = DEFAULT_ENCODER,
                  data_root: str | Path | None = None,
                  on_missing_image: MissingImagePolicy = "skip",
                  log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train on the train split, select the epoch on dev, report on test; returns the metrics.

    ``out`` receives projections, config, ``metrics.json``, ``history.json`` and (MERU) the
    ``specificity.png`` plot in one atomic write.
    """
    train_split, dev_split, test_split = resolve_splits(dataset, data_root)
    fields = [cfg.image_field, cfg.text_field]
    sets = {s: load_features(dataset, s, encoder, fields, data_root=data_root,
                             on_missing_image=on_missing_image)
            for s in (train_split, dev_split, test_split)}
    model, history = train_alignment(sets[train_split], sets[dev_split], cfg, log=log)
    config = alignment_config(model, dataset=dataset, encoder=encoder, splits={
        "train": train_split, "dev": dev_split, "test": test_split},
        n_pairs={s: len(fs) for s, fs in sets.items()},
        skipped_missing_images={s: fs.meta.get("skipped_missing_images", [])
                                for s, fs in sets.items()})
    metrics, png = evaluate_alignment(model, config, sets[test_split], dataset, test_split,
                                      data_root)
    metrics = {"objective": cfg.objective, "dataset": dataset, "encoder": encoder,
               "best_dev_mean_recall": max((h.get("dev_mean_recall", 0.0) for h in history),
                                           default=0.0),
               **metrics}
    files = {"metrics.json": json.dumps(metrics, indent=2).encode(),
             "history.json": json.dumps(history, indent=2).encode()}
    if png is not None:
        files["specificity.png"] = png
    write_alignment_dir(model, out, config, files)
    return metrics

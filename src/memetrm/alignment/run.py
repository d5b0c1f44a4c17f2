"""One alignment experiment end to end: features -> train -> held-out evaluation -> saved run."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memetrm.alignment.evaluate import evaluate_alignment
from memetrm.alignment.objectives import AlignConfig
from memetrm.alignment.trainer import align_train_config, save_alignment, train_alignment
from memetrm.config import DataOptions
from memetrm.data import get_dataset
from memetrm.data.base import MissingImagePolicy
from memetrm.encoders import DEFAULT_ENCODER
from memetrm.features import load_features
from memetrm.training.engine import TrainConfig


def run_alignment(dataset: str, out: Path, cfg: AlignConfig, encoder: str = DEFAULT_ENCODER,
                  data_root: str | Path | None = None,
                  on_missing_image: MissingImagePolicy = "skip",
                  log: Callable[[dict[str, Any]], None] | None = None,
                  tcfg: TrainConfig | None = None, device: str = "auto") -> dict[str, Any]:
    """Train on the train split, select the epoch on dev, report on test; returns the metrics.

    ``out`` receives projections, config, ``metrics.json``, ``history.json`` and (MERU) the
    ``specificity.png`` plot in one atomic write.
    """
    tcfg = tcfg or align_train_config()
    roles = get_dataset(dataset, data_root).roles()
    fields = [cfg.image_field, cfg.text_field]
    data = DataOptions(str(data_root) if data_root else None, on_missing_image=on_missing_image)
    sets = {s: load_features(dataset, s, encoder, fields, data=data, device=device)
            for s in dict.fromkeys(roles.values())}
    model, history = train_alignment(sets[roles["train"]], sets[roles["dev"]], cfg, tcfg, log=log,
                                     device=device)
    meta = {"dataset": dataset, "encoder": encoder, "splits": roles,
            "n_pairs": {s: len(fs) for s, fs in sets.items()},
            "skipped_missing_images": {s: fs.meta.get("skipped_missing_images", [])
                                       for s, fs in sets.items()}}
    metrics, png = evaluate_alignment(model, meta, sets[roles["test"]], dataset,
                                      roles["test"], data_root)
    metrics = {"objective": cfg.objective, "dataset": dataset, "encoder": encoder,
               "best_dev_mean_recall": max((h.get("dev_score", 0.0) for h in history), default=0.0),
               **metrics}
    files = {"metrics.json": json.dumps(metrics, indent=2).encode(),
             "history.json": json.dumps(history, indent=2).encode()}
    if png is not None:
        files["specificity.png"] = png
    save_alignment(model, out, files, train=dataclasses.asdict(tcfg), **meta)
    return metrics

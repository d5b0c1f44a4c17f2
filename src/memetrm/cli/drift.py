"""``memetrm drift``: do new memes still look like the model's training memes?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from memetrm.cli.options import CacheDir, DataRoot, Device, MissingImages, Model
from memetrm.config import DataOptions
from memetrm.errors import ConfigError, DataError
from memetrm.evaluation.drift import ALPHA
from memetrm.progress import console
from memetrm.utils import atomic_write_text, plural


def drift(
    model: Model,
    input: Annotated[Path, typer.Option(
        help="New memes: jsonl (id, img, text), a folder of images, or Parquet.")],
    output: Annotated[Path, typer.Option(help="Folder for drift.json and drift.png.")] = Path("drift"),
    reference: Annotated[Path | None, typer.Option(
        help="Memes to compare with, in the same formats [default: the model's training "
             "split].")] = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0,
                                         help="KS p-value below which a field is flagged.")] = ALPHA,
    data_root: DataRoot = None,
    cache_dir: CacheDir = None,
    on_missing_image: MissingImages = None,
    device: Device = None,
) -> None:
    """Compare new memes with the training set: per field, a KS test of their similarity to the
    training centroid and the centroids' cosine distance; the model's score distribution the
    same way. Writes drift.json and a plot."""
    from memetrm.evaluation.drift import drift_summary, plot_drift
    from memetrm.serving.predictor import Predictor

    if not input.exists():
        raise DataError(f"{input}: no such file or folder")
    predictor = Predictor(model, device=device or "auto")
    new, new_scores = _embed(predictor, input)
    if reference is not None:
        ref, ref_scores = _embed(predictor, reference)
        what = str(reference)
    else:
        ref, ref_scores, what = _training_set(predictor, data_root, cache_dir, on_missing_image)
    summary = drift_summary(ref, new, ref_scores, new_scores, alpha)
    summary = {"model": predictor.model_id, "reference": what, "input": str(input), **summary}
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "drift.json", json.dumps(summary, indent=2))
    plot_drift(summary, ref, new, ref_scores, new_scores, output / "drift.png")
    for name, s in [*summary["fields"].items(), ("score", summary["score"])]:
        extra = f", centroid distance {s['centroid_distance']:.3f}" if "centroid_distance" in s else ""
        console.print(f"{name}: KS {s['ks']:.3f} (p = {s['p_value']:.3g}){extra}"
                      + ("  [bold red]drifted[/]" if s["drifted"] else ""))
    console.print(f"-> {output / 'drift.json'}, {output / 'drift.png'}")


def _embed(predictor, source: Path, batch_size: int = 64
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each field's pooled features and the model's score, for the memes of ``source``; bad
    rows are left out and counted."""
    import torch

    from memetrm.data.images import open_image
    from memetrm.errors import MemetrmError
    from memetrm.serving.batch import iter_inputs

    feats: dict[str, list[np.ndarray]] = {}
    scores: list[np.ndarray] = []
    bad: list[str] = []
    chunk = []

    def flush() -> None:
        batch = predictor.features(chunk)
        with torch.inference_mode():
            scores.append(predictor.head.eval().predict(batch)["prob"].float().cpu().numpy())
        for f in predictor.fields:
            feats.setdefault(f, []).append(batch[f].float().cpu().numpy())
        chunk.clear()

    for item in iter_inputs(source):
        try:
            if item.error:
                raise DataError(item.error)
            image = open_image(item.image, name=item.id) if item.image is not None else None
            chunk.append(predictor.prepare(image, item.texts, lists=False))
        except MemetrmError as e:
            bad.append(f"{item.id}: {e}")
            continue
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    if bad:
        console.print(f"{plural(len(bad), 'meme')} of {source} left out: {bad[:5]}", markup=False)
    if len(scores) == 0 or sum(len(s) for s in scores) < 2:
        raise DataError(f"{source}: fewer than 2 memes to compare")
    return {f: np.concatenate(v) for f, v in feats.items()}, np.concatenate(scores)


def _training_set(predictor, data_root, cache_dir, on_missing_image
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    from memetrm.data import get_dataset
    from memetrm.features import load_features
    from memetrm.training.engine import predict

    meta = predictor.config
    saved = meta.get("run_config") or {}
    dataset = meta.get("dataset") or saved.get("dataset")
    if not dataset:
        raise ConfigError(f"{predictor.model_dir}: the model does not name its dataset; "
                          "pass --reference")
    split = get_dataset(dataset, data_root).roles()["train"]
    data = DataOptions(data_root, cache_dir, on_missing_image or saved.get("on_missing_image", "error"))
    fs = load_features(dataset, split, meta["encoder"], meta["fields"],
                       tokens=meta.get("tokens", False), data=data, device=str(predictor.device))
    scores = predict(predictor.head, fs)["prob"].float().cpu().numpy()
    return ({f: fs.tensors[f].float().cpu().numpy() for f in predictor.fields}, scores,
            f"{dataset}/{split}")


def register(app: typer.Typer) -> None:
    app.command()(drift)

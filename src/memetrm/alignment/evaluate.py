"""Held-out evaluation of an alignment: retrieval R@k beside chance, zero-shot prompts, specificity.

``evaluate_alignment_dir(run_dir, dataset, split)`` is the entry point for other commands.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memetrm.alignment.metrics import retrieval_metrics
from memetrm.alignment.objectives import AlignModel
from memetrm.alignment.trainer import load_alignment, pair_tensors
from memetrm.config import DataOptions
from memetrm.data import get_dataset
from memetrm.data.validation import read_jsonl
from memetrm.features import FeatureSet, load_features
from memetrm.layers import lorentz as L

#: Index = label. Used when a dataset has binary labels and no ``zeroshot.json`` of its own.
BINARY_PROMPTS = ("a harmless meme", "a hateful meme")
#: Optional file in a jsonl dataset folder: ``{"field": <row key>, "prompts": {class: prompt}}``.
ZEROSHOT_FILE = "zeroshot.json"


@dataclass
class ZeroShotTask:
    """Class prompts and, per row of the split, the class index (-1 = not part of the task)."""

    classes: list[str]
    prompts: list[str]
    labels: torch.Tensor


def zero_shot_task(dataset: str, split: str, fs: FeatureSet,
                   data_root: str | Path | None = None) -> ZeroShotTask | None:
    """The dataset's own prompts (``zeroshot.json``), else hateful/harmless on binary labels."""
    root = get_dataset(dataset, data_root).root
    spec_path = root / ZEROSHOT_FILE
    if spec_path.is_file():
        spec = json.loads(spec_path.read_text())
        classes = list(spec["prompts"])
        rows = {str(o["id"]): o.get(spec["field"]) for _, o in read_jsonl(root / f"{split}.jsonl")}
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index.get(rows.get(i), -1) for i in fs.ids])
        if not (labels >= 0).any():
            return None
        return ZeroShotTask(classes, [spec["prompts"][c] for c in classes], labels)
    if torch.isnan(fs.labels).all():
        return None
    labels = torch.nan_to_num(fs.labels, nan=-1).long()
    return ZeroShotTask(["harmless", "hateful"], list(BINARY_PROMPTS), labels)


def zero_shot_metrics(model: AlignModel, img_emb: torch.Tensor, prompt_emb: torch.Tensor,
                      task: ZeroShotTask) -> dict[str, Any]:
    """Each image takes the class of its most similar prompt, in the model's own geometry."""
    keep = task.labels >= 0
    y = task.labels[keep]
    sim = model.similarity(img_emb[keep], prompt_emb)
    pred = sim.argmax(1)
    k = len(task.classes)
    counts = torch.bincount(y, minlength=k).float()
    per_class = [((pred == c) & (y == c)).sum().item() / counts[c].item()
                 for c in range(k) if counts[c] > 0]
    out: dict[str, Any] = {
        "n": int(keep.sum()),
        "classes": task.classes,
        "accuracy": (pred == y).float().mean().item(),
        "majority_baseline": (counts.max() / counts.sum()).item(),
        "balanced_accuracy": sum(per_class) / len(per_class),
        "chance_balanced": 1 / len(per_class),
        "predicted_counts": torch.bincount(pred, minlength=k).tolist(),
    }
    if k == 2 and 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(y.cpu().numpy(), (sim[:, 1] - sim[:, 0]).cpu().numpy()))
    return out


def encode_prompts(encoder: str, prompts: list[str]) -> torch.Tensor:
    """Pooled text-tower embeddings of the prompts (the encoder is built only for this)."""
    from memetrm.encoders import create_encoder

    return create_encoder(encoder).encode_texts(prompts).pooled.float().cpu()


def specificity(model: AlignModel, txt_emb: torch.Tensor, img_emb: torch.Tensor,
                texts: list[str]) -> tuple[dict[str, float | None], bytes]:
    """MERU's claim, measured: do longer (more specific) texts sit farther from the origin?

    Returns the Spearman correlation of word count with distance from the origin, and a PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    curv = model.curv.item()
    d_txt = L.dist_to_origin(txt_emb, curv).cpu().numpy()
    d_img = L.dist_to_origin(img_emb, curv).cpu().numpy()
    words = [len(t.split()) for t in texts]
    # undefined (None) when every text has the same length
    rho = float(spearmanr(words, d_txt).statistic) if len(set(words)) > 1 else None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.scatter(words, d_txt, s=8, alpha=0.5, label="texts")
    ax.axhline(float(d_img.mean()), color="C1", ls="--", label="mean over images")
    ax.set_xscale("log")
    ax.set_xlabel("text length (words, log scale)")
    ax.set_ylabel("Lorentz distance from origin")
    ax.set_title(f"MERU specificity: Spearman rho = {rho if rho is None else round(rho, 3)} "
                 f"(n = {len(words)})")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    stats = {"spearman_words_vs_text_dist": rho, "mean_text_dist": float(d_txt.mean()),
             "mean_image_dist": float(d_img.mean())}
    return stats, buf.getvalue()


@torch.no_grad()
def evaluate_alignment(model: AlignModel, config: dict[str, Any], fs: FeatureSet,
                       dataset: str, split: str,
                       data_root: str | Path | None = None) -> tuple[dict[str, Any], bytes | None]:
    """Retrieval + zero-shot (+ specificity plot for MERU) on one held-out split."""
    model.eval()
    img, txt = pair_tensors(fs, model.cfg)
    img_emb, txt_emb = model.encode_image(img), model.encode_text(txt)
    scores = model.retrieval_scores(img_emb, txt_emb)
    metrics: dict[str, Any] = {"split": split, "retrieval": retrieval_metrics(*scores)}
    task = zero_shot_task(dataset, split, fs, data_root)
    if task is not None:
        prompt_emb = model.encode_text(encode_prompts(config["encoder"], task.prompts))
        metrics["zero_shot"] = {"prompts": task.prompts,
                                **zero_shot_metrics(model, img_emb, prompt_emb, task)}
    png = None
    if model.hyperbolic:
        recs = {r.id: r for r in get_dataset(dataset, data_root).records(split)}
        texts = [recs[i].texts[model.cfg.text_field] for i in fs.ids]
        metrics["specificity"], png = specificity(model, txt_emb, img_emb, texts)
        metrics["curvature"] = model.curv.item()
    return metrics, png


def evaluate_alignment_dir(path: str | Path, dataset: str | None = None, split: str = "test",
                           data_root: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a saved ``memetrm align`` run (by default on the dataset it was trained on)."""
    model, config = load_alignment(path)
    dataset = dataset or config["dataset"]
    fs = load_features(dataset, split, config["encoder"],
                       [model.cfg.image_field, model.cfg.text_field],
                       data=DataOptions(data_root, on_missing_image="skip"))
    return evaluate_alignment(model, config, fs, dataset, split, data_root)[0]

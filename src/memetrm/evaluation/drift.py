"""Drift: are new memes still like the ones a model was trained on?

Per field, each meme's embedding is compared with the training centroid (cosine similarity): the
distributions of that similarity on the training memes and on the new ones are compared with a
two-sample Kolmogorov-Smirnov test, and the centroids themselves by their cosine distance. The
model's scores are compared the same way. A field whose KS p-value falls below ``alpha`` is
flagged: its memes no longer look like the training memes, and the model's threshold (chosen on
memes like those) may no longer hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: p-value below which a distribution counts as drifted
ALPHA = 0.01


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def centroid_similarity(reference: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``vectors`` to the centroid of ``reference``'s rows."""
    centroid = _unit(_unit(reference).mean(0))
    return _unit(vectors) @ centroid


def _ks(a: np.ndarray, b: np.ndarray, alpha: float) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    res = ks_2samp(a, b)
    return {"ks": float(res.statistic), "p_value": float(res.pvalue),
            "drifted": bool(res.pvalue < alpha), "mean_reference": float(np.mean(a)),
            "mean_new": float(np.mean(b))}


def drift_summary(reference: dict[str, np.ndarray], new: dict[str, np.ndarray],
                  reference_scores: np.ndarray, new_scores: np.ndarray,
                  alpha: float = ALPHA) -> dict[str, Any]:
    """Per field (embeddings (N, D) by field name) and for the model's scores: KS test of the
    distributions, plus the centroid distance for the fields."""
    fields = {}
    for name, ref in reference.items():
        ref_sim, new_sim = centroid_similarity(ref, ref), centroid_similarity(ref, new[name])
        distance = 1.0 - float(_unit(_unit(ref).mean(0)) @ _unit(_unit(new[name]).mean(0)))
        fields[name] = {**_ks(ref_sim, new_sim, alpha), "centroid_distance": distance}
    scores = _ks(np.asarray(reference_scores), np.asarray(new_scores), alpha)
    drifted = [f for f, s in fields.items() if s["drifted"]] + (["score"] if scores["drifted"] else [])
    return {"n_reference": len(reference_scores), "n_new": len(new_scores), "alpha": alpha,
            "fields": fields, "score": scores, "drifted": drifted}


def plot_drift(summary: dict[str, Any], reference: dict[str, np.ndarray],
               new: dict[str, np.ndarray], reference_scores: np.ndarray,
               new_scores: np.ndarray, path: Path) -> None:
    """One panel per field (similarity to the training centroid) and one for the scores:
    training memes against new ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"{name}: similarity to the training centroid",
               centroid_similarity(ref, ref), centroid_similarity(ref, new[name]),
               summary["fields"][name]) for name, ref in reference.items()]
    panels.append(("model score", np.asarray(reference_scores), np.asarray(new_scores),
                   summary["score"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, ref, cur, stats) in zip(axes[0], panels, strict=True):
        lo, hi = float(min(ref.min(), cur.min())), float(max(ref.max(), cur.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 30)
        ax.hist(ref, bins=bins, density=True, alpha=0.55, label=f"training (n={len(ref)})")
        ax.hist(cur, bins=bins, density=True, alpha=0.55, label=f"new (n={len(cur)})")
        flag = " DRIFT" if stats["drifted"] else ""
        ax.set_title(f"{title}\nKS {stats['ks']:.2f}, p={stats['p_value']:.2g}{flag}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

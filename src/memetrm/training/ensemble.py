"""Ensembles across configurations (heads, fields, encoders), chosen on dev only.

Each configuration enters as its seed ensemble (the mean of its seeds' raw probabilities, what
the saved ensemble head computes). The K with the best dev AUROC are averaged with equal
weights; a calibrator is fitted and the decision threshold chosen on the ensemble's dev
probabilities. Test labels are read only to score the chosen ensemble.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from memetrm.encoders.saved import saved_encoder_meta
from memetrm.evaluation.calibration import CONFIG_KEY, Calibrator
from memetrm.evaluation.metrics import auroc
from memetrm.evaluation.tables import run_name
from memetrm.heads import Head, create_head, save_pretrained
from memetrm.training.runner import RunOutput, dev_scores, dev_threshold, ensemble_metrics


def config_name(out: RunOutput) -> str:
    return run_name(out.results)


def _mean_probs(out: RunOutput, split: str) -> dict[str, float]:
    ids = out.feats[split].ids
    p = np.mean([r.outputs[split]["prob_raw"].numpy() for r in out.runs], axis=0)
    return dict(zip(ids, p.tolist(), strict=True))


def select_ensemble(outs: list[RunOutput], k: int, metric: str, n_boot: int) -> dict[str, Any]:
    """The K configurations with the best seed-ensemble dev AUROC, averaged; metrics on every
    split they share (examples common to all members, e.g. when some skip missing images)."""
    dev_split = outs[0].results["roles"]["dev"]
    ranked = sorted(outs, key=lambda o: -o.results["ensemble"]["splits"][dev_split]["auroc"]["mean"])
    chosen = ranked[:k]
    splits = [s for s in chosen[0].runs[0].outputs if all(s in o.runs[0].outputs for o in chosen)]
    probs, labels = {}, {}
    for s in splits:
        per = [_mean_probs(o, s) for o in chosen]
        ids = [i for i in per[0] if all(i in p for p in per)]
        y = dict(zip(chosen[0].feats[s].ids, chosen[0].feats[s].labels.tolist(), strict=True))
        probs[s] = np.mean([[p[i] for i in ids] for p in per], axis=0)
        labels[s] = np.array([y[i] for i in ids])
    cal = Calibrator.fit(chosen[0].cfg.calibration, labels[dev_split], probs[dev_split],
                         f"{dev_split} (ensemble)")
    raw = probs
    probs = {s: cal(p) for s, p in raw.items()}
    thr = dev_threshold(labels[dev_split], probs[dev_split], metric, f"{dev_split} (ensemble)")
    return {
        "members": [config_name(o) for o in chosen],
        "ranking": [{"config": config_name(o),
                     "dev_auroc": o.results["ensemble"]["splits"][dev_split]["auroc"]["mean"]}
                    for o in ranked],
        "threshold": thr, "roles": outs[0].results["roles"],
        "splits": {s: {**ensemble_metrics(labels[s], probs[s], thr, n_boot), "n": len(labels[s])}
                   for s in splits},
        "dev_auroc_check": auroc(labels[dev_split], probs[dev_split]),
        "calibrator": cal.to_dict(),
        "_chosen": chosen,
        "_dev_scores": dev_scores(dev_split, labels[dev_split].astype(int).tolist(), raw[dev_split]),
    }


def save_ensemble(selection: dict[str, Any], path: str | Path, provenance: dict[str, Any]) -> Path:
    """One model directory: every seed of every chosen configuration as a member."""
    chosen: list[RunOutput] = selection["_chosen"]
    members, heads, weights = [], [], []
    for o in chosen:
        for r in o.runs:
            head: Head = r.fit.head  # type: ignore[assignment]
            members.append({"head": head.name, "config": _config_dict(head),
                            "fields": list(head.input_dims)})
            heads.append(head)
            weights.append(1.0 / (len(chosen) * len(o.runs)))
    input_dims = {f: d for h in heads for f, d in h.input_dims.items()}
    token_dims = {f: d for h in heads for f, d in h.token_dims.items()}
    ens = create_head("ensemble", input_dims, token_dims or None, members=members, weights=weights)
    for target, head in zip(ens.members, heads, strict=True):
        target.load_state_dict(head.state_dict())  # weights, fitted values and memory ids
    first = chosen[0]
    return save_pretrained(
        ens, path, card=None, fields=list(input_dims),
        tokens=bool(token_dims), threshold=selection["threshold"], dataset=first.cfg.dataset,
        labels=first.results["label_names"], members=selection["members"],
        **{CONFIG_KEY: selection["calibrator"]}, dev_scores=selection["_dev_scores"],
        dev_auroc=selection["splits"][selection["roles"]["dev"]]["auroc"]["mean"],
        provenance=provenance, **saved_encoder_meta(first.cfg.encoder, list(input_dims), path))


def _config_dict(head: Head) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(head.cfg)

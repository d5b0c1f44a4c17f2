"""The learned-space ensemble is chosen on dev_seen from every stored run, never from a cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import learned_space
from benchmarks.learned_space import DEV, TEST, UNSEEN, dev_ensemble


def _run(dev_auroc: float) -> dict:
    return {"ensemble": {"splits": {DEV: {"auroc": {"mean": dev_auroc}}}}}


def _predictions(root: Path, key: str, signal: float, rng: np.random.Generator) -> None:
    """Per-seed probabilities for each split: labels plus noise, ``signal`` sets how much."""
    out = {}
    for split in (DEV, TEST, UNSEEN):
        y = (np.arange(120) % 2).astype(int)
        probs = [np.clip(signal * y + rng.random(120), 0, None).tolist() for _ in range(2)]
        out[split] = {"ids": [f"{split}-{i}" for i in range(120)], "labels": y.tolist(),
                      "probs": probs}
    (root / key).mkdir(parents=True)
    (root / key / "predictions.json").write_text(json.dumps(out))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(learned_space, "prediction_dir", lambda: tmp_path)
    return tmp_path


def test_members_come_from_the_best_stored_runs_on_dev(cache: Path) -> None:
    rng = np.random.default_rng(0)
    runs = {"a": _run(0.70), "b": _run(0.75), "c": _run(0.72), "d": _run(0.60)}
    for key, signal in (("a", 0.6), ("b", 0.8), ("c", 0.7), ("d", 0.1)):
        _predictions(cache, key, signal, rng)
    ens = dev_ensemble(runs, most=3, stored=None, n_boot=0)
    assert ens is not None
    assert set(ens["dev_auroc_by_size"]) == {2, 3}
    # the ranking is by the stored dev AUROC: b, c, a; d is never a candidate
    assert ens["members"] in (["b", "c"], ["b", "c", "a"])
    assert set(ens["splits"]) == {DEV, TEST, UNSEEN}


def test_a_candidate_without_cached_predictions_keeps_the_stored_ensemble(cache: Path) -> None:
    rng = np.random.default_rng(1)
    runs = {"a": _run(0.70), "b": _run(0.75), "c": _run(0.72)}
    _predictions(cache, "a", 0.6, rng)
    _predictions(cache, "c", 0.6, rng)  # "b", the best on dev, is not cached here
    stored = {"members": ["b", "c"], "splits": {}}
    assert dev_ensemble(runs, most=3, stored=stored, n_boot=0) is stored


def test_each_trm_contrast_is_the_difference_of_two_stored_runs() -> None:
    from benchmarks.render.learned_space import contrast_table

    def run(seeds: int, dev: float, test: float, unseen: float) -> dict:
        return {"seeds": seeds, "splits": {s: {"auroc": {"mean": v}}
                                           for s, v in ((DEV, dev), (TEST, test), (UNSEEN, unseen))}}

    runs = {"trm-retrieval-tc": run(5, 0.70, 0.71, 0.65),
            "trm-retrieval-k0-tc": run(5, 0.66, 0.68, 0.66)}
    text = "\n".join(contrast_table(runs))
    assert "| 8 neighbours against none | 5 vs 5 | +0.040 | +0.030 | -0.010 |" in text
    assert "recursion" not in text  # its one-pass run is not stored: no row
    assert contrast_table({}) == []

"""Selection never reads the test labels: permuting them changes no choice, only test scores."""

from __future__ import annotations

import json
import random
from pathlib import Path

from memetrm.config import RunConfig
from memetrm.training.runner import run

from . import fakes  # noqa: F401  (registers the test-fake encoder)


def write_dataset(root: Path, test_labels: list[int]) -> Path:
    """Texts whose word counts carry the label, noisily; the test labels are given."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 60), ("dev", 30), ("test", len(test_labels))):
        rows = []
        for i in range(n):
            y = test_labels[i] if split == "test" else i % 2
            words = " ".join(rng.choice(["bad", "a", "meme", "cat"]) for _ in range(3 + 4 * y))
            rows.append({"id": f"{split}{i}", "text": f"{words} {i}", "label": y})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_permuting_test_labels_changes_no_selection(tmp_path: Path) -> None:
    labels = [i % 2 for i in range(30)]
    shuffled = labels[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != labels and sorted(shuffled) == sorted(labels)
    out = {}
    for name, y in (("original", labels), ("permuted", shuffled)):
        cfg = RunConfig(dataset=str(write_dataset(tmp_path / name, y)), encoder="test-fake",
                        head="mlp", seeds=3, fields=["text"], cache_dir=str(tmp_path / "cache"),
                        train={"epochs": 6, "lr": 3e-3}, bootstrap=0,
                        save=str(tmp_path / f"{name}-model"))
        out[name] = run(cfg)
    a, b = out["original"], out["permuted"]
    assert a["best_epochs"] == b["best_epochs"]
    assert a["thresholds"] == b["thresholds"]
    assert a["best_seed"] == b["best_seed"]
    assert a["splits"]["dev"] == b["splits"]["dev"]
    saved = [json.loads((tmp_path / f"{n}-model" / "config.json").read_text()) for n in out]
    assert saved[0]["seed"] == saved[1]["seed"] and saved[0]["dev_auroc"] == saved[1]["dev_auroc"]
    assert (tmp_path / "original-model" / "model.safetensors").read_bytes() == \
        (tmp_path / "permuted-model" / "model.safetensors").read_bytes()
    # the control: the test labels did reach the test metrics
    assert a["splits"]["test"]["auroc"]["values"] != b["splits"]["test"]["auroc"]["values"]

"""``memetrm drift``: new memes unlike the training memes are flagged, per field and by score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import RunConfig
from memetrm.evaluation.drift import drift_summary
from memetrm.training.runner import run

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset


@pytest.mark.slow
def test_drift_flags_memes_unlike_the_training_set(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(20)])
    run(RunConfig(dataset=str(root), encoder="test-fake", head="mlp", seeds=1, fields=["text"],
                  cache_dir=str(tmp_path / "c"), bootstrap=0, train={"epochs": 2},
                  save=str(tmp_path / "m")))
    (tmp_path / "new.jsonl").write_text("".join(
        json.dumps({"id": f"n{i}", "text": "zzz " * (20 + i)}) + "\n" for i in range(40)))
    outs = {}
    for name, source in (("new", tmp_path / "new.jsonl"), ("same", root / "train.jsonl")):
        r = CliRunner().invoke(app, ["drift", "--model", str(tmp_path / "m"), "--input", str(source),
                                     "--output", str(tmp_path / name), "--cache-dir",
                                     str(tmp_path / "c"), "--device", "cpu"])
        assert r.exit_code == 0, r.output
        outs[name] = json.loads((tmp_path / name / "drift.json").read_text())
        assert (tmp_path / name / "drift.png").stat().st_size > 0
    new, same = outs["new"], outs["same"]
    assert new["reference"].endswith("/train") and new["n_reference"] == 60 and new["n_new"] == 40
    assert new["fields"]["text"]["drifted"] and "text" in new["drifted"]
    assert new["fields"]["text"]["centroid_distance"] > 10 * same["fields"]["text"]["centroid_distance"]
    assert same["drifted"] == [] and same["fields"]["text"]["ks"] == 0.0


def test_drift_summary_on_shifted_embeddings() -> None:
    rng = np.random.default_rng(0)
    ref = {"image": rng.normal(size=(300, 8)) + 3.0}
    near = {"image": rng.normal(size=(200, 8)) + 3.0}
    far = {"image": rng.normal(size=(200, 8)) + np.array([3.0] * 4 + [-3.0] * 4)}
    scores = rng.uniform(size=300)
    calm = drift_summary(ref, near, scores, rng.uniform(size=200))
    shifted = drift_summary(ref, far, scores, rng.uniform(size=200) ** 4)
    assert calm["drifted"] == [] and shifted["drifted"] == ["image", "score"]
    distance = {k: s["fields"]["image"]["centroid_distance"] for k, s in
                (("calm", calm), ("shifted", shifted))}
    assert distance["shifted"] > 0.5 > distance["calm"]

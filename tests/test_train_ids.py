"""``train_ids``: fitting on a listed subset of the training memes (e.g. those a tuned tower
never saw), and a clear error for an id the split lacks."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import RunConfig
from memetrm.training.runner import load_run_features

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset


def test_training_rows_are_the_held_out_ids_of_a_tuning_json(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(10)])
    held = [f"train{i}" for i in range(0, 60, 3)]
    (tmp_path / "tuning.json").write_text(json.dumps({"held_out_ids": held, "tuned_ids": []}))
    cfg = RunConfig(dataset=str(root), encoder="test-fake", fields=["text"],
                    cache_dir=str(tmp_path / "c"), train_ids=str(tmp_path / "tuning.json"))
    feats, _, roles = load_run_features(cfg)
    assert feats[roles["train"]].ids == held
    assert len(feats[roles["dev"]].ids) == 30  # other splits untouched


def test_an_unknown_training_id_exits_2_naming_the_file_and_the_id(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(10)])
    ids = tmp_path / "ids.txt"
    ids.write_text("train1\ntrain2\nnot-a-meme\n")
    res = CliRunner().invoke(app, [
        "train", "--dataset", str(root), "--encoder", "test-fake", "--fields", "text",
        "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "--seeds", "1",
        "--train-ids", str(ids), "--set", "train.epochs=1"])
    assert res.exit_code == 2, res.output
    assert "ids.txt" in res.output and "not-a-meme" in res.output

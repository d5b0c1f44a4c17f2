"""A memory head's labelled memes: built from train, grown by ``memory add`` without
retraining, bad rows refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import RunConfig
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.serving.memory import add_to_memory
from memetrm.serving.predictor import Predictor
from memetrm.training.runner import run

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset

#: fitted settings that let the memory's vote decide, whatever dev chose
VOTE_DECIDES = {"retrieval": {"alpha_": 4.0}, "rgcl": {"alpha_": 4.0, "logit_weight_": 0.0}}


@pytest.mark.parametrize("head_name", list(VOTE_DECIDES))
def test_memory_is_built_from_train_and_memory_add_changes_a_prediction(
        tmp_path: Path, head_name: str) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    res = run(RunConfig(dataset=str(root), encoder="test-fake", head=head_name, seeds=1,
                        fields=["text"], cache_dir=str(tmp_path / "c"), bootstrap=0,
                        train={"epochs": 3, "lr": 3e-3}, save=str(tmp_path / "m")))
    cal = res["calibration"][0]
    assert {"k", "temperature", "alpha"} <= set(cal)
    head, config = from_pretrained(tmp_path / "m")
    assert len(head.memory_ids) == len(head.bank) == 60  # the train split
    assert "memory_ids" not in json.dumps(config)  # ids live with the weights
    config["fitted"][""].update(VOTE_DECIDES[head_name])
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    meme = {"text": "cat cat cat"}
    before = Predictor(tmp_path / "m", device="cpu").predict([None], [meme])[0]
    assert len(before["neighbours"]) == head.k_
    flip = 0 if before["prob"] >= 0.5 else 1
    (tmp_path / "add.jsonl").write_text("".join(
        json.dumps({"id": f"new{i}", "label": flip, **meme}) + "\n" for i in range(head.k_)))
    assert add_to_memory(tmp_path / "m", tmp_path / "add.jsonl", device="cpu") == 60 + head.k_
    after = Predictor(tmp_path / "m", device="cpu").predict([None], [meme])[0]
    assert (after["prob"] - before["prob"]) * (1 if flip else -1) > 0.05
    assert all(n["id"].startswith("new") and n["label"] == flip for n in after["neighbours"])


def test_memory_add_refuses_bad_rows_and_changes_nothing(tmp_path: Path) -> None:
    head = create_head("retrieval", {"text": 16})
    head.remember({"text": torch.randn(4, 16), "label": torch.tensor([0., 1., 0., 1.])}, list("abcd"))
    save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["text"], threshold=0.5)
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "add.jsonl").write_text('{"id": "x", "text": "hi", "label": 1}\n'
                                        '{"id": "y", "text": "hi", "label": 3}\n'
                                        '{"id": "a", "text": "hi", "label": 0}\n')
    res = CliRunner().invoke(app, ["memory", "add", "--model", str(tmp_path / "m"),
                                   "--input", str(tmp_path / "add.jsonl"), "--device", "cpu"])
    assert res.exit_code == 2
    assert "id y: label must be 0 or 1" in res.output and "id a is already in the memory" in res.output
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before

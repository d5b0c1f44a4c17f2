"""Command-line conventions: results on stdout and diagnostics on stderr, warnings as one line
shown once, counts in the right number, batch rows that explain themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.heads import create_head, list_heads, save_pretrained
from memetrm.provenance import command_line
from memetrm.serving.batch import predict_batch
from memetrm.serving.predictor import Predictor

from . import fakes  # noqa: F401  (registers the test-fake encoder)
from .test_selection import write_dataset

runner = CliRunner()


def test_list_prints_its_results_on_stdout() -> None:
    res = subprocess.run([sys.executable, "-m", "memetrm.cli.main", "list"], capture_output=True,
                         text=True, env=os.environ, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "trm-act" in res.stdout and "minilm-effnet" in res.stdout and res.stderr == ""


def test_list_heads_verbose_prints_its_table_on_stdout() -> None:
    res = runner.invoke(app, ["list", "heads", "-v"])
    assert res.exit_code == 0 and "trm-act" in res.stdout and res.stderr == ""


def test_a_python_warning_is_one_line_without_its_source(tmp_path: Path) -> None:
    model = save_pretrained(create_head("mlp", {"text": 5}, hidden=4), tmp_path / "m",
                            encoder="test-fake", fields=["text"], threshold=0.5)
    res = runner.invoke(app, ["predict", "--model", str(model), "--text", "hi", "--runtime", "onnx"])
    lines = [line for line in res.stderr.splitlines() if "runtime" in line]
    assert lines[0].startswith("warning: this model was trained on features from the torch "
                               "runtime of test-fake; scoring with onnx"), res.stderr
    assert ".py:" not in res.stderr and "UserWarning" not in res.stderr


def test_a_warning_every_head_meets_is_shown_once_and_a_lone_seed_is_one(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    res = runner.invoke(app, ["train", "--dataset", str(root), "--encoder", "test-fake",
                              "--heads", "mlp,linear", "--fields", "text", "--seeds", "1",
                              "--cache-dir", str(tmp_path / "c"), "--set", "train.epochs=1",
                              "--out-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    small = [line for line in res.stderr.splitlines() if "has only 30 examples" in line]
    assert len(small) == 2, res.stderr  # dev and test, each once for both heads
    assert res.stderr.count("note: the dev split has 30 examples") == 1
    res = runner.invoke(app, ["train", "--dataset", str(root), "--encoder", "test-fake",
                              "--head", "mlp", "--fields", "text", "--seeds", "1",
                              "--cache-dir", str(tmp_path / "c"), "--set", "train.epochs=1",
                              "--save", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    assert f"saved seed 1 of 1, the best on dev, to {tmp_path / 'model'}" in res.stderr
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Metrics over 1 seed (mean" in card and "This is seed 1 of 1 (train.seed=0)" in card


def test_batch_rows_of_a_memory_head_name_their_neighbours(tmp_path: Path) -> None:
    head = create_head("retrieval", {"text": 5})
    head.remember({"text": torch.randn(4, 5), "label": torch.tensor([0., 1., 0., 1.])}, list("abcd"))
    head.set_fitted(k_=2, temperature_=0.1, alpha_=1.0)
    model = save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["text"],
                            threshold=0.5)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"id": "t", "text": "hi"}\n{"id": "g", "img": "gone.png", "text": "hi"}\n')
    summary = predict_batch(Predictor(model, device="cpu"), src, out, progress=False)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(rows["t"]["neighbours"]) == 2 and {n["id"] for n in rows["t"]["neighbours"]} <= set("abcd")
    assert str(tmp_path / "gone.png") in rows["g"]["error"]
    assert str(summary) == "1 scored, 1 error, 0 already done, 0 duplicate ids skipped"


def test_provenance_records_commands_relative_to_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    python = [str(root / ".venv/bin/python")]
    module = command_line([str(root / "benchmarks/heads.py"), "--data-root", str(tmp_path / "data"),
                           f"--runs={root / 'runs'}", "--seeds", "5"],
                          [*python, "-u", "-m", "benchmarks.heads"], root)
    assert module == "python -m benchmarks.heads --data-root ../data --runs=runs --seeds 5"
    program = command_line([str(root / ".venv/bin/memetrm"), "train", "--save", str(root / "m x")],
                           [*python, str(root / ".venv/bin/memetrm")], root)
    assert program == "memetrm train --save 'm x'"
    assert command_line([str(root / "b.py")], [*python, str(root / "b.py")], root) == "python b.py"


def test_the_readme_counts_the_heads_the_registry_has() -> None:
    from benchmarks.render.heads import REGISTRY, head_counts

    root = Path(__file__).resolve().parents[1]
    registry = json.loads((root / REGISTRY).read_text())  # python -m benchmarks.heads --render-only
    assert registry["all"] == list_heads(all_only=True)
    assert sorted(registry["all"] + registry["by_name"]) == list_heads()
    assert head_counts(registry) in (root / "README.md").read_text()

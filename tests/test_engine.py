"""The engine trains, selects on dev, and checkpoints round-trip through safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memetrm.config import load_run_config
from memetrm.errors import ConfigError
from memetrm.features import FeatureSet
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.training import TrainConfig, fit, predict


def synthetic(n: int, seed: int, tokens: bool = False) -> FeatureSet:
    """Label = sign of an image-text interaction, so unimodal shortcuts fail."""
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(n, 12, generator=g), torch.randn(n, 8, generator=g)
    y = ((img[:, 0] * txt[:, 0] + 0.3 * img[:, 1]) > 0).float()
    t = {"image": img, "text": txt}
    if tokens:
        t |= {"image.tokens": img.view(n, 3, 4), "image.mask": torch.ones(n, 3, dtype=torch.bool),
              "text.tokens": txt.view(n, 2, 4), "text.mask": torch.ones(n, 2, dtype=torch.bool)}
    return FeatureSet([str(i) for i in range(n)], t, y)


def test_fit_learns_interaction() -> None:
    tr, dev = synthetic(512, 0), synthetic(256, 1)
    head = create_head("mlp", tr.input_dims)
    res = fit(head, tr, dev, TrainConfig(epochs=25, lr=3e-3, batch_size=64, patience=0))
    assert res.dev_score > 0.85
    assert res.history[res.best_epoch]["dev_score"] == res.dev_score


def matching_tokens(n: int, seed: int) -> FeatureSet:
    """Label 1 iff one of the text tokens equals one of the image tokens (from a codebook).

    Mean-pooled vectors barely show it; attending from text tokens to image tokens does.
    """
    g = torch.Generator().manual_seed(seed)
    book = torch.nn.functional.normalize(torch.randn(32, 8, generator=g), dim=-1)
    img_ids = torch.randint(0, 32, (n, 4), generator=g)
    txt_ids = torch.randint(0, 32, (n, 3), generator=g)
    y = torch.rand(n, generator=g) < 0.5
    txt_ids[y, 0] = img_ids[y, torch.randint(0, 4, (int(y.sum()),), generator=g)]
    y = (txt_ids.unsqueeze(-1) == img_ids.unsqueeze(1)).any(-1).any(-1).float()
    img, txt = book[img_ids], book[txt_ids]
    t = {"image": img.mean(1), "text": txt.mean(1),
         "image.tokens": img, "image.mask": torch.ones(n, 4, dtype=torch.bool),
         "text.tokens": txt, "text.mask": torch.ones(n, 3, dtype=torch.bool)}
    return FeatureSet([str(i) for i in range(n)], t, y)


def test_cross_attention_finds_token_matches() -> None:
    tr, dev = matching_tokens(1024, 0), matching_tokens(256, 1)
    head = create_head("cross-attention", tr.input_dims, tr.token_dims, d_model=32, heads=2,
                       hidden=32, dropout=0.0)
    res = fit(head, tr, dev, TrainConfig(epochs=30, lr=3e-3, batch_size=64, patience=0))
    mlp = fit(create_head("mlp", tr.input_dims, hidden=64), tr, dev,
              TrainConfig(epochs=30, lr=3e-3, batch_size=64, patience=0))
    assert res.dev_score > 0.78 and res.dev_score > mlp.dev_score + 0.05


def test_linear_cannot_learn_pure_interaction() -> None:
    """Guards the test above: the task really needs fusion."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    y = ((a[:, 0] * b[:, 0]) > 0).float()
    fs = FeatureSet([str(i) for i in range(400)], {"image": a, "text": b}, y)
    res = fit(create_head("linear", fs.input_dims), fs, fs, TrainConfig(epochs=10, lr=1e-2))
    assert res.dev_score < 0.65


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    fs = synthetic(64, 0)
    head = create_head("mlp", fs.input_dims, hidden=32)
    save_pretrained(head, tmp_path / "ckpt", threshold=0.4, encoder="x", fields=["image", "text"])
    loaded, meta = from_pretrained(tmp_path / "ckpt")
    assert meta["threshold"] == 0.4 and meta["config"]["hidden"] == 32
    assert torch.allclose(predict(head, fs)["prob"], predict(loaded, fs)["prob"])
    assert not list(tmp_path.glob(".ckpt*"))  # atomic: no temp dirs left


def test_unknown_head_option_is_named() -> None:
    with pytest.raises(ConfigError, match="no option"):
        create_head("mlp", {"a": 3}, hiden=4)


def test_config_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("head: trm\nseeds: 3\ntrain:\n  lr: 0.01\n")
    cfg = load_run_config(p, ["train.lr=1e-4", "head_cfg.hidden=64"], {"seeds": 2})
    assert (cfg.head, cfg.seeds, cfg.train["lr"], cfg.head_cfg["hidden"]) == ("trm", 2, 1e-4, 64)
    with pytest.raises(ConfigError, match="unknown config key"):
        load_run_config(None, ["nope=1"])


def test_head_training_uses_one_thread_unless_asked(monkeypatch) -> None:
    seen = []

    def record(row: dict) -> None:
        seen.append(torch.get_num_threads())

    tr = synthetic(64, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("MEMETRM_THREADS", raising=False)
        fit(create_head("mlp", tr.input_dims), tr, None, TrainConfig(epochs=1), on_epoch=record)
        monkeypatch.setenv("MEMETRM_THREADS", "2")  # what --threads 2 sets
        fit(create_head("mlp", tr.input_dims), tr, None, TrainConfig(epochs=1), on_epoch=record)
        fit(create_head("mlp", tr.input_dims), tr, None, TrainConfig(epochs=1, threads=1),
            on_epoch=record)
        assert torch.get_num_threads() == 2  # restored after each fit
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2, 1]

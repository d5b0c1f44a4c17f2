"""Alignment objectives, metrics, checkpoints, the ``align`` command and the hyperbolic head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memetrm.alignment import (
    AlignConfig,
    AlignModel,
    align_train_config,
    load_alignment,
    save_alignment,
    train_alignment,
)
from memetrm.alignment.evaluate import BINARY_PROMPTS, ZeroShotTask, zero_shot_metrics
from memetrm.alignment.metrics import retrieval_metrics
from memetrm.alignment.trainer import dev_score
from memetrm.cli.main import app
from memetrm.features import FeatureSet
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.training import TrainConfig, fit

from . import fakes  # noqa: F401  (registers the test-fake encoder)


def paired(n: int, seed: int, image_dim: int = 32, text_dim: int = 24) -> FeatureSet:
    """Texts are a fixed linear view of their image plus noise, so pairs are learnable."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(image_dim, text_dim, generator=torch.Generator().manual_seed(99))
    img = torch.randn(n, image_dim, generator=g)
    txt = img @ w / image_dim**0.5 + 0.1 * torch.randn(n, text_dim, generator=g)
    return FeatureSet([str(i) for i in range(n)], {"image": img, "text": txt},
                      torch.full((n,), float("nan")))


def test_retrieval_metrics_perfect_constant_and_reversed() -> None:
    n = 20
    perfect = retrieval_metrics(torch.eye(n), torch.eye(n))
    assert perfect["i2t_R@1"] == perfect["t2i_R@1"] == 1.0
    assert perfect["chance_R@5"] == pytest.approx(5 / n)
    # ties count against the model: a constant scorer must not look perfect
    flat = retrieval_metrics(torch.zeros(n, n), torch.zeros(n, n))
    assert flat["i2t_R@10"] == 0.0
    worst = retrieval_metrics(-torch.eye(n), -torch.eye(n))
    assert worst["t2i_R@10"] == 0.0


@pytest.mark.parametrize("objective", ["clip", "meru", "itm"])
def test_objectives_learn_retrieval_far_above_chance(objective: str) -> None:
    cfg = AlignConfig(objective=objective, embed_dim=32)
    tcfg = align_train_config(epochs=25, batch_size=64, lr=3e-3)
    model, history = train_alignment(paired(512, 0), paired(64, 1), cfg, tcfg)
    assert history[-1]["loss"] < history[0]["loss"]
    # the engine kept the epoch with the best dev mean recall
    assert dev_score(model, paired(64, 1)) == pytest.approx(max(h["dev_score"] for h in history))
    test = paired(64, 2)
    with torch.no_grad():
        img = model.encode_image(test.tensors["image"])
        txt = model.encode_text(test.tensors["text"])
        m = retrieval_metrics(*model.retrieval_scores(img, txt))
    assert m["i2t_R@1"] > 0.5 and m["t2i_R@1"] > 0.5, m  # chance is 1/64
    if objective == "meru":
        assert 0.1 <= model.curv.item() <= 10.0
        assert model.image_lift.log_alpha.item() <= 0 and model.text_lift.log_alpha.item() <= 0


def test_meru_clamps_in_forward_and_entailment_loss() -> None:
    model = AlignModel(AlignConfig(objective="meru", embed_dim=8), 6, 5)
    with torch.no_grad():
        model.curvature.log_curv.fill_(5.0)
        model.image_lift.log_alpha.fill_(1.0)
        model.log_logit_scale.fill_(10.0)
    img = model.encode_image(torch.randn(8, 6))  # forward projects the scalars back into range
    assert model.curv.item() == pytest.approx(10.0)
    assert model.image_lift.log_alpha.item() == 0.0
    assert model.logit_scale.item() == pytest.approx(100.0)
    loss, parts = model.loss(img, model.encode_text(torch.randn(8, 5)))
    assert torch.isfinite(loss) and parts["entailment"] >= 0
    loss.backward()
    grad = model.curvature.log_curv.grad
    assert torch.isfinite(grad) and grad != 0


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    cfg = AlignConfig(objective="meru", embed_dim=16)
    model, _ = train_alignment(paired(64, 0), None, cfg, align_train_config(epochs=2))
    save_alignment(model, tmp_path / "run", {"metrics.json": b"{}"}, encoder="test-fake")
    loaded, config = load_alignment(tmp_path / "run")
    x = paired(8, 3)
    with torch.no_grad():
        a = model.similarity(model.encode_image(x.tensors["image"]),
                             model.encode_text(x.tensors["text"]))
        b = loaded.similarity(loaded.encode_image(x.tensors["image"]),
                              loaded.encode_text(x.tensors["text"]))
    assert torch.allclose(a, b) and config["align"]["objective"] == "meru"


def test_zero_shot_metrics_against_known_answers() -> None:
    model = AlignModel(AlignConfig(objective="clip"), 2, 2)
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    img = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    task = ZeroShotTask(["a", "b"], ["pa", "pb"], torch.tensor([0, 1, 1, -1]))
    m = zero_shot_metrics(model, img, prompts, task)
    assert m["n"] == 3 and m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["majority_baseline"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(1.0)


def test_align_command_end_to_end(tiny_jsonl_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMETRM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "align", "--dataset", str(tiny_jsonl_dataset), "--encoder", "test-fake",
        "--objective", "meru", "--epochs", "3", "--batch-size", "8", "--embed-dim", "8",
        "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    assert metrics["split"] == "test" and metrics["retrieval"]["n"] == 12
    assert metrics["retrieval"]["chance_R@1"] == pytest.approx(1 / 12)
    # binary labels and no zeroshot.json: hateful vs harmless prompts, in the Lorentz geometry
    zs = metrics["zero_shot"]
    assert zs["n"] == 12 and zs["prompts"] == list(BINARY_PROMPTS)
    assert {"model.safetensors", "config.json", "metrics.json",
            "specificity.png"} <= {p.name for p in out.iterdir()}
    assert (out / "specificity.png").read_bytes()[:4] == b"\x89PNG"


def test_hyperbolic_head_fits_and_roundtrips(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> FeatureSet:
        y = (torch.arange(n) % 2).float()
        img = torch.randn(n, 12, generator=g) + 1.5 * y.unsqueeze(1)
        txt = torch.randn(n, 6, generator=g)
        return FeatureSet([str(i) for i in range(n)], {"image": img, "text": txt}, y)

    train, dev = split(256), split(64)
    head = create_head("hyperbolic", train.input_dims, embed_dim=8, hidden=32)
    logits = head(dev.batch())
    assert logits.shape == (64,)
    result = fit(head, train, dev, TrainConfig(epochs=15, batch_size=32, lr=3e-3, patience=0))
    assert result.dev_score > 0.95
    save_pretrained(result.head, tmp_path / "h")
    loaded, _ = from_pretrained(tmp_path / "h")
    result.head.eval()
    assert torch.allclose(loaded(dev.batch()), result.head(dev.batch()), atol=1e-5)
    assert 0.1 <= loaded.curvature().item() <= 10.0

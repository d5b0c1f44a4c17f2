"""The contract every registered head keeps, checked for each name in the registry (as timm's
``test_models.py`` does over ``list_models()``): a new head is tested without a new test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memetrm.features import FeatureSet
from memetrm.heads import create_head, from_pretrained, list_heads, save_pretrained
from memetrm.training import TrainConfig, fit, predict

DIMS = {"image": 12, "text": 10}
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none here")])]


def toy(n: int, seed: int) -> FeatureSet:
    """Separable by a direction in each field; tokens are noisy copies of the pooled vectors."""
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(n, 12, generator=g), torch.randn(n, 10, generator=g)
    y = (img[:, 0] - img[:, 1] + txt[:, 0] > 0).float()
    t = {"image": img, "text": txt}
    for f, x, length in (("image", img, 4), ("text", txt, 3)):
        t[f"{f}.tokens"] = x.unsqueeze(1) + 0.1 * torch.randn(n, length, x.shape[1], generator=g)
        mask = torch.ones(n, length, dtype=torch.bool)
        mask[: n // 4, -1] = False  # some padding
        t[f"{f}.mask"] = mask
    return FeatureSet([str(i) for i in range(n)], t, y)


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_head(name, DIMS, DIMS)


@pytest.fixture(scope="module")
def data() -> tuple[FeatureSet, FeatureSet]:
    return toy(256, 0), toy(64, 1)


@pytest.mark.parametrize("name", list_heads())
def test_forward_shape_predict_keys_and_determinism(name: str, data) -> None:
    head = build(name).eval()
    batch = data[1].batch(slice(0, 8))
    with torch.no_grad():
        assert head(batch).shape == (8,)
    out = head.predict(batch)
    assert "prob" in out and out["prob"].shape == (8,)
    assert ((out["prob"] >= 0) & (out["prob"] <= 1)).all()
    for key, value in out.items():
        assert value.shape[0] == 8, key
    again = build(name).eval().predict(batch)
    assert out.keys() == again.keys()
    for key in out:
        assert torch.equal(out[key], again[key]), key


@pytest.mark.parametrize("name", list_heads())
def test_save_load_gives_identical_predictions(name: str, data, tmp_path: Path) -> None:
    head = build(name).eval()
    save_pretrained(head, tmp_path / name)
    loaded, config = from_pretrained(tmp_path / name)
    assert config["head"] == name and type(loaded) is type(head)
    before, after = predict(head, data[1]), predict(loaded, data[1])
    for key in before:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list_heads())
def test_a_few_steps_lower_the_loss(name: str, device: str, data) -> None:
    train, dev = data
    head = build(name)
    batch = train.batch(device=device)

    def loss() -> float:
        head.eval()
        with torch.no_grad():
            return head.loss(head(batch), batch["label"]).item()

    head.to(device)
    before = loss()
    result = fit(head, train, dev, TrainConfig(epochs=3, batch_size=64, lr=3e-3, patience=0),
                 device=device)
    after = loss()
    assert after < before, (before, after)
    assert next(result.head.parameters()).device.type == device
    out = predict(result.head, dev)
    assert out["prob"].device.type == "cpu" and torch.isfinite(out["prob"]).all()

"""Hate-CLIPper fusion: shapes, unit-norm projections, and that the logit is an interaction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from memetrm.errors import ConfigError
from memetrm.heads import create_head

DIMS = {"image": 12, "text": 10}


def batch(b: int = 5, seed: int = 0, fields: dict[str, int] = DIMS) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f: torch.randn(b, d, generator=g) for f, d in fields.items()}


@pytest.mark.parametrize("name,width", [("hateclipper-align", 256), ("hateclipper-cross", 32 * 32)])
def test_shapes(name, width):
    head = create_head(name, DIMS).eval()
    x = batch()
    assert head.fuse(x).shape == (5, width)
    assert head(x).shape == (5,)
    assert head.predict(x)["prob"].shape == (5,)


def test_fused_features_are_products_of_unit_projections():
    torch.manual_seed(0)
    x = batch()
    for fusion in ("align", "cross"):
        head = create_head(f"hateclipper-{fusion}", DIMS, map_dim=8).eval()
        p = head.project(x)
        assert torch.allclose(p["image"].norm(dim=-1), torch.ones(5))
        i = F.normalize(head.proj["image"](x["image"]), dim=-1)
        t = F.normalize(head.proj["text"](x["text"]), dim=-1)
        expected = i * t if fusion == "align" else (i[:, :, None] * t[:, None, :]).flatten(1)
        assert torch.allclose(head.fuse(x), expected)


def _fit_and_score(name: str, fields: list[str], **cfg) -> float:
    """Test AUROC of a head trained on an XOR of modalities: hateful iff image and text
    "agree" in sign along a hidden direction, so either modality alone says nothing."""
    g = torch.Generator().manual_seed(0)
    n = 400
    x = {"image": torch.randn(n, 12, generator=g), "text": torch.randn(n, 10, generator=g)}
    label = ((x["image"][:, 0] > 0) == (x["text"][:, 0] > 0)).float()
    torch.manual_seed(0)
    head = create_head(name, {f: DIMS[f] for f in fields}, **cfg)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    train = {**{f: x[f][:300] for f in fields}, "label": label[:300]}
    for _ in range(60):
        opt.zero_grad()
        head.loss(head(train), train["label"]).backward()
        opt.step()
    prob = head.eval().predict({f: x[f][300:] for f in fields})["prob"]
    return roc_auc_score(label[300:], prob)


def test_align_learns_a_label_no_unimodal_model_can():
    assert _fit_and_score("hateclipper-align", ["image", "text"], map_dim=16, layers=0,
                          dropout=0.0) > 0.9
    for field in ("image", "text"):  # the control: an MLP on either modality alone
        assert _fit_and_score("mlp", [field], hidden=32, dropout=0.0) < 0.65, field


def test_extra_fields_pair_with_the_image():
    dims = {"text": 10, "image": 12, "caption": 10}
    head = create_head("hateclipper-align", dims, map_dim=8).eval()
    assert head.anchor == "image" and head.partners == ["text", "caption"]
    x = batch(fields=dims)
    fused = head.fuse(x)
    assert fused.shape == (5, 16)
    p = head.project(x)
    assert torch.allclose(fused[:, 8:], p["image"] * p["caption"])
    assert head(x).shape == (5,)


def test_validation():
    with pytest.raises(ConfigError):
        create_head("hateclipper-align", {"image": 12})
    with pytest.raises(ConfigError):
        create_head("hateclipper-align", DIMS, fusion="concat")

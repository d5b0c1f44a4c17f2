"""Caption views: every caption of a meme as a mean field or a per-epoch random draw; one
given caption, by its base name, scores a meme with a view model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memetrm.cli.main import app
from memetrm.config import DataOptions
from memetrm.data.fields import client_fields, expand_views, view_base
from memetrm.errors import ConfigError
from memetrm.features import FeatureSet, load_features
from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.predictor import Predictor, load_model

from . import fakes  # noqa: F401  (registers test-fake)


def _load(root: Path, cache: Path, split: str, fields: list[str], **kw) -> FeatureSet:
    return load_features(str(root), split, "test-fake", fields, data=DataOptions(cache_dir=str(cache)),
                         **kw)


def test_view_fields_expand_to_every_caption_variant() -> None:
    have = {"text", "caption", "caption_2", "caption_10", "caption_3"}
    assert expand_views(["text", "caption_mean"], have) == [
        "text", "caption", "caption_2", "caption_3", "caption_10"]
    assert view_base("caption_random") == "caption" and view_base("text") == "text"


def test_caption_mean_is_the_mean_of_every_caption(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    each = _load(tiny_jsonl_dataset, tmp_path, "train", ["caption", "caption_2"])
    mean = _load(tiny_jsonl_dataset, tmp_path, "train", ["text", "caption_mean"])
    assert mean.fields == ["text", "caption_mean"] and not mean.views
    expected = (each.tensors["caption"] + each.tensors["caption_2"]) / 2
    assert torch.allclose(mean.tensors["caption_mean"], expected)
    assert not torch.allclose(each.tensors["caption"], expected)  # the captions differ


def test_random_view_draws_one_caption_per_row_in_training_only(tiny_jsonl_dataset: Path,
                                                                tmp_path: Path) -> None:
    each = _load(tiny_jsonl_dataset, tmp_path, "train", ["caption", "caption_2"])
    fs = _load(tiny_jsonl_dataset, tmp_path, "train", ["text", "caption_random"])
    variants = torch.stack([each.tensors["caption"], each.tensors["caption_2"]], 1)
    assert torch.equal(fs.views["caption_random"], variants)
    # prediction passes (no shuffle) read the mean
    assert torch.allclose(next(fs.batches(len(fs)))["caption_random"], variants.mean(1))
    # training passes: row i's variant v is the vector (i, v), so a batch shows what was drawn
    n = 20
    rows = torch.arange(n, dtype=torch.float)
    views = torch.stack([torch.stack([rows, torch.full((n,), float(v))], 1) for v in range(2)], 1)
    toy = FeatureSet([str(i) for i in range(n)], {"c": views.mean(1)}, torch.zeros(n), views={"c": views})
    gen = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(3):
        drawn = torch.cat([b["c"] for b in toy.batches(6, shuffle=True, generator=gen)])
        assert sorted(drawn[:, 0].tolist()) == rows.tolist()  # every row once, one variant each
        epochs.append(dict(zip(drawn[:, 0].tolist(), drawn[:, 1].tolist(), strict=True)))
    assert {v for e in epochs for v in e.values()} == {0.0, 1.0}  # both captions are drawn
    assert epochs[0] != epochs[1]  # and redrawn every epoch


def test_views_survive_subset_and_concat(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    train = _load(tiny_jsonl_dataset, tmp_path, "train", ["caption_random"])
    dev = _load(tiny_jsonl_dataset, tmp_path, "dev", ["caption_random"])
    both = FeatureSet.concat([train, dev])
    assert both.views["caption_random"].shape[0] == len(train) + len(dev)
    sub = both.subset([0, len(train)])
    assert torch.equal(sub.views["caption_random"][1], dev.views["caption_random"][0])


def test_views_refuse_token_features(tiny_jsonl_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pooled features only"):
        _load(tiny_jsonl_dataset, tmp_path, "train", ["caption_mean"], tokens=True)


@pytest.fixture
def mean_model(tmp_path: Path) -> Path:
    """A text + caption_mean model (the Hateful Memes recipe) on the test-fake encoder."""
    torch.manual_seed(0)
    head = create_head("mlp", {"text": 5, "caption_mean": 5}, hidden=8)
    return save_pretrained(head, tmp_path / "model", encoder="test-fake",
                           fields=["text", "caption_mean"], tokens=False, threshold=0.5)


def _own_mean(model: Path, text: str, caption: str) -> float:
    """The model's score with one caption standing for the mean of every caption."""
    head, _, _ = load_model(model, "cpu")
    enc = fakes.FakeEncoder()
    batch = {"text": enc.encode_texts([text]).pooled, "caption_mean": enc.encode_texts([caption]).pooled}
    return float(head.predict(batch)["prob"][0])


def test_view_fields_are_sent_by_their_base_name() -> None:
    assert client_fields(["image@clip", "text+caption_mean", "caption_random", "text"]) == [
        "image", "text", "caption"]


def test_caption_mean_model_scores_one_meme_from_the_cli(mean_model: Path) -> None:
    res = CliRunner().invoke(app, ["predict", "--model", str(mean_model), "--text", "love you",
                                   "--caption", "a man in a field", "--json"])
    assert res.exit_code == 0, res.output
    prob = json.loads(res.stdout)["prob"]
    assert prob == pytest.approx(_own_mean(mean_model, "love you", "a man in a field"), abs=1e-6)


def test_caption_mean_model_advertises_and_takes_caption_over_http(mean_model: Path) -> None:
    from tests.test_serving import FakeOCR

    with TestClient(create_app(Predictor(mean_model, ocr=FakeOCR()))) as c:
        assert c.get("/v1/model").json()["fields"] == ["text", "caption"]
        body = c.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
        assert set(body["content"]["application/json"]["schema"]["properties"]) == {
            "image", "text", "caption"}
        r = c.post("/v1/predict", json={"text": "love you", "caption": "a man in a field"})
    assert r.status_code == 200, r.text
    assert r.json()["prob"] == pytest.approx(_own_mean(mean_model, "love you", "a man in a field"),
                                             abs=1e-6)

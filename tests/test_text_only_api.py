"""The HTTP API scores a meme from its texts alone for a model that reads no image."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.predictor import Predictor

from .test_serving import FakeEncoder, FakeOCR, make_predictor, png_bytes


def text_caption_client(tmp_path: Path) -> TestClient:
    head = create_head("mlp", {"text": 2, "caption": 2}, hidden=8)
    save_pretrained(head, tmp_path / "cap", encoder="fake", fields=["text", "caption"],
                    threshold=0.5)
    return TestClient(create_app(Predictor(tmp_path / "cap", encoder=FakeEncoder(),
                                           ocr=FakeOCR())))


def test_a_text_caption_model_scores_a_meme_without_an_image(tmp_path: Path) -> None:
    with text_caption_client(tmp_path) as c:
        texts = {"text": "look how many people love you", "caption": "a man in a field"}
        form = c.post("/v1/predict", data=texts)
        as_json = c.post("/v1/predict", json=texts)
        with_image = c.post("/v1/predict", data=texts,
                            files={"image": ("m.png", png_bytes(), "image/png")})
        assert form.status_code == as_json.status_code == with_image.status_code == 200, form.text
        assert form.json()["prob"] == as_json.json()["prob"] == with_image.json()["prob"]
        missing = c.post("/v1/predict", data={"text": "only text"})
        assert missing.status_code == 422 and "caption" in missing.json()["detail"]


def test_an_image_model_still_requires_the_image(tmp_path: Path) -> None:
    with TestClient(create_app(make_predictor(tmp_path))) as c:
        r = c.post("/v1/predict", data={"text": "hi"})
        assert r.status_code == 422 and "image" in r.json()["detail"]
        r = c.post("/v1/predict", json={"text": "hi"})
        assert r.status_code == 422 and "image" in r.json()["detail"]


def test_a_rejected_upload_names_the_allowed_types_in_plain_words(tmp_path: Path) -> None:
    with TestClient(create_app(make_predictor(tmp_path))) as c:
        r = c.post("/v1/predict", files={"image": ("x.png", b"not an image", "image/png")})
        assert r.status_code == 415 and "image/png, " in r.json()["detail"]
        assert "[" not in r.json()["detail"]

"""The page scores a meme from its texts alone for a model that reads no image; a dropped meme
still gives its text by OCR, and a caption view model takes one caption."""

from __future__ import annotations

import httpx
import pytest

from tests.test_browser import SHOTS, chromium, pytestmark, serve  # noqa: F401  (fixtures)


def test_text_caption_model_scores_texts_alone(serve, chromium) -> None:  # noqa: F811
    server = serve(["text", "caption"], ["not hateful", "hateful"])
    page = chromium.new_page(viewport={"width": 1000, "height": 800})
    page.goto(server + "/")
    page.wait_for_selector("#field-caption", state="visible")
    page.fill("#text", "look how many people love you")
    page.fill("#field-caption", "a man standing in an empty field")
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "page-text-only.png"), full_page=True)
    expected = httpx.post(f"{server}/v1/predict", timeout=30, data={
        "text": "look how many people love you",
        "caption": "a man standing in an empty field"}).json()
    assert "reads no image" in page.inner_text("#drop")  # there only to read the text by OCR
    assert page.inner_text("#error") == ""
    assert float(page.inner_text("#score")) == pytest.approx(expected["prob"], abs=1e-3)


def test_caption_mean_model_takes_one_described_caption(serve, chromium) -> None:  # noqa: F811
    server = serve(["text", "caption_mean"], ["not hateful", "hateful"])
    page = chromium.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#field-caption", state="visible")
    assert "one sentence describing the picture" in page.inner_text("#extra")
    page.fill("#text", "look how many people love you")
    page.fill("#field-caption", "a man standing in an empty field")
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    expected = httpx.post(f"{server}/v1/predict", timeout=30, json={
        "text": "look how many people love you",
        "caption": "a man standing in an empty field"}).json()
    assert page.inner_text("#error") == ""
    assert float(page.inner_text("#score")) == pytest.approx(expected["prob"], abs=1e-3)


def test_a_dropped_meme_gives_its_text_to_a_model_reading_no_image(serve, chromium,  # noqa: F811
                                                                   tmp_path) -> None:
    from tests.test_predictor import text_image

    server = serve(["text", "caption"], ["not hateful", "hateful"])
    page = chromium.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#field-caption", state="visible")
    page.set_input_files("#file", str(text_image(tmp_path / "m.png", "HI")))
    page.fill("#field-caption", "a man standing in an empty field")
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    expected = httpx.post(f"{server}/v1/predict", timeout=30, data={
        "text": "text read by ocr", "caption": "a man standing in an empty field"}).json()
    assert page.inner_text("#ocr") == "text read by ocr"  # FakeOCR's reading
    assert float(page.inner_text("#score")) == pytest.approx(expected["prob"], abs=1e-3)


def test_an_error_clears_the_previous_verdict(serve, chromium, tmp_path) -> None:  # noqa: F811
    from tests.test_predictor import text_image

    server = serve(["image", "text"], ["not hateful", "hateful"])
    page = chromium.new_page()
    page.goto(server + "/")
    page.locator("#model", has_text="threshold").wait_for()
    page.set_input_files("#file", str(text_image(tmp_path / "m.png", "HI")))
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png",
                                   "buffer": b"not an image"})
    page.click("#submit")
    page.wait_for_selector("#error:not(:empty)")
    assert not page.is_visible("#result")

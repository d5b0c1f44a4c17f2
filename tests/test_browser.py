"""The web page in real headless Chromium against a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.predictor import Predictor
from tests.test_predictor import text_image
from tests.test_serving import FakeEncoder, FakeOCR

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian chromium: apt-get install -y chromium"),
]


SHOTS = Path(__file__).resolve().parents[1] / "runs" / "screenshots"  # git-ignored


@pytest.fixture
def serve(tmp_path: Path, trace_head: str, live_server) -> Callable[[list[str], list[str]], str]:
    """Serve a model reading ``fields`` (fake encoder, traced head); returns its URL."""

    def start(fields: list[str], labels: list[str]) -> str:
        torch.manual_seed(0)
        model = tmp_path / "-".join(fields)
        dims = {"image": 3, "text": 2, "caption": 2, "caption_mean": 2}
        save_pretrained(create_head(trace_head, {f: dims[f] for f in fields}, steps=5), model,
                        encoder="fake", fields=fields, tokens=False, threshold=0.5,
                        dataset="a test set", labels=labels)
        app = create_app(Predictor(model, encoder=FakeEncoder(), ocr=FakeOCR()))
        return live_server(app, log_level="warning")

    return start


@pytest.fixture
def chromium() -> Iterator:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("width", [1280, 400])
def test_upload_shows_score_ocr_and_trace(serve, chromium, tmp_path: Path, width: int) -> None:
    server = serve(["image", "text"], ["not offensive", "offensive"])
    meme = text_image(tmp_path / "meme.png", "HELLO BROWSER")
    with open(meme, "rb") as f:
        expected = httpx.post(f"{server}/v1/predict", files={"image": f}, timeout=30).json()

    page = chromium.new_page(viewport={"width": width, "height": 900})
    external: list[str] = []
    local = (server, "blob:" + server, "data:")  # the preview is a same-origin blob
    page.on("request", lambda r: r.url.startswith(local) or external.append(r.url))
    page.goto(server + "/")
    page.locator("#model", has_text="threshold").wait_for()  # CSP forbids eval'd predicates
    model_line, title = page.inner_text("#model"), page.inner_text("#title")
    page.set_input_files("#file", str(meme))
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    score, label = float(page.inner_text("#score")), page.inner_text("#label")
    ocr = page.inner_text("#ocr")
    dots = page.locator("#trace-chart circle").count()
    # rendered height of a tick label on the chart, in CSS pixels
    tick_px = page.evaluate(
        "document.querySelector('#trace-chart text').getBoundingClientRect().height")
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"page-{width}px.png"
    page.screenshot(path=str(shot), full_page=True)

    page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png",
                                   "buffer": b"not an image"})
    page.click("#submit")
    page.wait_for_selector("#error:not(:empty)")
    error = page.inner_text("#error")

    assert "a test set" in model_line and "image, text" in model_line
    assert title == "Is this meme offensive?" and label == expected["label_name"]
    assert score == pytest.approx(expected["prob"], abs=1e-3)
    assert ocr == "text read by ocr"
    assert dots == len(expected["trace"]) == 5
    assert tick_px >= 11, tick_px  # readable on a 400 px phone screen too
    assert error.startswith("415")
    assert shot.stat().st_size > 5_000
    assert external == [], f"the page fetched something external: {external}"


def test_caption_model_gets_a_caption_field(serve, chromium, tmp_path: Path) -> None:
    server = serve(["text", "caption"], ["not hateful", "hateful"])
    page = chromium.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#field-caption", state="visible")
    page.set_input_files("#file", str(text_image(tmp_path / "m.png", "HI")))
    page.fill("#text", "some meme text")
    page.fill("#field-caption", "a dog on a beach")
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    expected = httpx.post(f"{server}/v1/predict", timeout=30,
                          files={"image": ("m.png", (tmp_path / "m.png").read_bytes())},
                          data={"text": "some meme text", "caption": "a dog on a beach"}).json()
    assert float(page.inner_text("#score")) == pytest.approx(expected["prob"], abs=1e-3)
    assert page.inner_text("#error") == ""

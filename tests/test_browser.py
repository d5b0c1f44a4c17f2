"""The web page in real headless Chromium against a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, trace_head: str) -> Iterator[str]:
    """A uvicorn server in a thread (fake encoder, traced head); stopped after the test."""
    torch.manual_seed(0)
    save_pretrained(create_head(trace_head, {"image": 3, "text": 2}, steps=5), tmp_path / "m",
                    encoder="fake", fields=["image", "text"], tokens=False, threshold=0.5)
    app = create_app(Predictor(tmp_path / "m", encoder=FakeEncoder(), ocr=FakeOCR()))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_upload_shows_score_ocr_and_trace(server: str, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    meme = text_image(tmp_path / "meme.png", "HELLO BROWSER")
    with open(meme, "rb") as f:
        expected = httpx.post(f"{server}/v1/predict", files={"image": f}, timeout=30).json()

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            external: list[str] = []
            local = (server, "blob:" + server, "data:")  # the preview is a same-origin blob
            page.on("request", lambda r: r.url.startswith(local) or external.append(r.url))
            page.goto(server + "/")
            page.set_input_files("#file", str(meme))
            page.click("#submit")
            page.wait_for_selector("#result", state="visible", timeout=15_000)
            score = float(page.inner_text("#score"))
            ocr = page.inner_text("#ocr")
            dots = page.locator("#trace-chart circle").count()
            page.screenshot(path=str(tmp_path / "browser.png"), full_page=True)

            page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png",
                                           "buffer": b"not an image"})
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            error = page.inner_text("#error")
        finally:
            browser.close()

    assert score == pytest.approx(expected["prob"], abs=1e-3)
    assert ocr == "text read by ocr"
    assert dots == len(expected["trace"]) == 5
    assert error.startswith("415")
    assert (tmp_path / "browser.png").stat().st_size > 5_000
    assert external == [], f"the page fetched something external: {external}"

"""The page says who answered, in words beside the score: the model, or a known-meme list (real
headless Chromium against a live server on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memetrm.heads import create_head, save_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.hashing import pdq
from memetrm.serving.hashlist import MODEL_LIST, Entry, HashList
from memetrm.serving.predictor import Predictor
from tests.test_browser import CHROMIUM, chromium  # noqa: F401  (the browser fixture)
from tests.test_hashing import scene
from tests.test_serving import FakeEncoder, FakeOCR

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian chromium: apt-get install -y chromium"),
]


def test_page_says_whether_the_model_or_a_list_answered(tmp_path: Path, live_server,
                                                        chromium) -> None:  # noqa: F811
    torch.manual_seed(0)
    model = save_pretrained(create_head("linear", {"image": 3, "text": 2}), tmp_path / "m",
                            encoder="fake", fields=["image", "text"], tokens=False,
                            threshold=0.5)
    HashList([Entry(pdq(scene(1)), 1, "case-7", "cats rule")]).write(model / MODEL_LIST)
    predictor = Predictor(model, encoder=FakeEncoder(), ocr=FakeOCR())
    server = live_server(create_app(predictor), log_level="warning")
    scene(1).save(tmp_path / "meme.png")

    page = chromium.new_page()
    page.goto(server + "/")
    page.locator("#model", has_text="threshold").wait_for()
    page.set_input_files("#file", str(tmp_path / "meme.png"))
    said = []
    for text, ends in [("Cats rule", "text agrees)"), ("other words", "(entry case-7)")]:
        page.fill("#text", text)
        page.click("#submit")
        page.locator("#source", has_text=ends).wait_for()  # CSP forbids eval'd predicates
        said.append(page.inner_text("#source"))
    assert said == [
        "Answered by known meme case-7 on list hashes.csv (picture at distance 0, text agrees)",
        f"Answered by model {predictor.model_id}; picture on list hashes.csv at distance 0; "
        "text differs (entry case-7)"]

"""The page shows each answer's action and why, and offers the policy's communities."""

from __future__ import annotations

from pathlib import Path

import httpx

from memetrm.serving.app import create_app
from tests.test_browser import SHOTS, chromium, pytestmark  # noqa: F401  (fixtures)
from tests.test_policy import model, policy_file, predictor  # noqa: F401  (fixtures)


def test_page_shows_the_action_and_takes_a_community(model: Path, tmp_path: Path,  # noqa: F811
                                                     chromium, live_server) -> None:  # noqa: F811
    server = live_server(create_app(predictor(model, policy_file(tmp_path))), log_level="warning")
    page = chromium.new_page(viewport={"width": 400, "height": 900})
    page.goto(server + "/")
    page.wait_for_selector("#field-community", state="visible")
    page.fill("#text", "a meme for the kids")
    page.select_option("#field-community", "strict")
    page.click("#submit")
    page.wait_for_selector("#result", state="visible", timeout=15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "page-policy-400.png"), full_page=True)
    assert page.inner_text("#action-name") == "remove"
    assert "community 'strict'" in page.inner_text("#action-reason")
    assert "raw score" in page.inner_text("#meta")
    page.select_option("#field-community", "")
    page.click("#submit")
    expected = httpx.post(f"{server}/v1/predict", timeout=30,
                          data={"text": "a meme for the kids"}).json()
    page.locator("#action-reason", has_text=expected["action_reason"]["words"]).wait_for()
    assert page.inner_text("#action-name") == expected["action"]

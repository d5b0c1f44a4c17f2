"""The moderator's loop in a real browser (headless Chromium, live server on 127.0.0.1): a meme
scored on the page is routed to review, shown on /review with its precedents, decided with a
token (an audit row, the list and the memory updated), and the same meme is then answered from
the list, which the page says."""

from __future__ import annotations

from pathlib import Path

import pytest

from memetrm.heads import from_pretrained
from memetrm.serving.app import create_app
from memetrm.serving.policy import PolicyFile
from memetrm.serving.predictor import Predictor
from memetrm.serving.review import ReviewStore, memory_id
from tests.test_browser import CHROMIUM, chromium  # noqa: F401  (the browser fixture)
from tests.test_hashing import scene
from tests.test_review import ALICE, TOKENS, retrieval_model

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian chromium: apt-get install -y chromium"),
]


@pytest.mark.parametrize("width", [1280, 400])
def test_scored_routed_shown_decided_then_answered_from_the_list(
        tmp_path: Path, live_server, chromium, width: int) -> None:  # noqa: F811
    model = retrieval_model(tmp_path / "m")
    # a policy that sends every score the model gives to review: the real routing, by action
    (tmp_path / "policy.yaml").write_text("actions: {remove: 1.0, review: 0.0}\n")
    store = ReviewStore(str(tmp_path / "review.db"))
    predictor = Predictor(model, device="cpu", policy=PolicyFile.read(tmp_path / "policy.yaml"))
    url = live_server(create_app(predictor, review=store, review_tokens=TOKENS),
                      log_level="warning")
    scene(3).save(tmp_path / "meme.png")
    page = chromium.new_page(viewport={"width": width, "height": 900})

    def score() -> str:
        page.goto(url + "/")
        page.locator("#model", has_text="threshold").wait_for()
        page.set_input_files("#file", str(tmp_path / "meme.png"))
        page.fill("#text", "Some words on it")
        page.click("#submit")
        page.locator("#source", has_text="Answered by").wait_for()
        return page.inner_text("#source")

    assert "Answered by model" in score()
    [item] = store.queue()
    page.goto(url + "/review")
    page.fill("#token", ALICE)
    page.click("#sign-in")
    page.locator(f"#queue-item-{item['id']}").click()
    page.locator("#precedents .precedent").first.wait_for()
    assert page.locator("#precedents .precedent").count() == len(item["precedents"]) > 0
    assert "review" in page.inner_text("#item-action") and "No match" in page.inner_text("#list-match")
    page.screenshot(path=str(tmp_path / f"review-{width}.png"), full_page=True)
    page.fill("#note", "a slur in the caption")
    page.click("#decide-violating")
    page.locator("#message", has_text="Recorded: violating").wait_for()
    page.locator("#appeal").wait_for()  # decided: the page offers an appeal instead
    [row] = store.audit()
    assert (row["reviewer"], row["decision"], row["note"]) == (
        "alice", "violating", "a slur in the caption")
    assert memory_id(item["id"]) in from_pretrained(model)[0].memory_ids
    page.screenshot(path=str(tmp_path / f"decided-{width}.png"), full_page=True)

    key = memory_id(item["id"])
    for _ in range(50):  # the server reloads its folder within a second
        if f"known meme {key}" in score():
            break
    assert page.inner_text("#source").startswith(f"Answered by known meme {key} on list hashes.csv")
    page.screenshot(path=str(tmp_path / f"listed-{width}.png"), full_page=True)

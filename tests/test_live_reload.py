"""A running server follows its model folder: ``memory add`` and ``hashes add`` reach it within
5 s as a new revision (head and hash list together), named by the config's revision, while the
requests sent meanwhile are all answered."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from memetrm.cli.main import app as cli
from memetrm.heads import create_head, save_pretrained
from memetrm.modelstore import CONFIG_NAME, REVISION_KEY, read_config
from memetrm.serving.app import create_app
from memetrm.serving.hashing import pdq
from memetrm.serving.hashlist import MODEL_LIST, Entry, HashList
from memetrm.serving.predictor import Predictor

from . import fakes  # noqa: F401  (registers the test-fake encoder the model names)
from .test_hashing import scene

#: how soon a write must be served
PICKUP_S = 5.0


def revision_id(model: Path) -> str:
    return f"{model.name}@{read_config(model)[REVISION_KEY][:12]}"


@pytest.fixture
def served(tmp_path: Path, live_server) -> tuple[Path, str]:
    """A retrieval model (image + text, fake encoder) served on loopback; texts are always
    sent, so no OCR runs."""
    torch.manual_seed(0)
    head = create_head("retrieval", {"image": 6, "text": 5})
    head.remember({"image": torch.randn(4, 6), "text": torch.randn(4, 5),
                   "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}, ["a", "b", "c", "d"])
    model = save_pretrained(head, tmp_path / "m", encoder="test-fake", fields=["image", "text"],
                            tokens=False, threshold=0.5)
    url = live_server(create_app(Predictor(model, device="cpu")), log_level="error")
    return model, url


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    scene(seed).save(buf, "PNG")
    return buf.getvalue()


def predict(url: str, seed: int, text: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"image": ("m.png", png(seed), "image/png")},
                      data={"text": text}, timeout=30)


@pytest.fixture
def traffic(served: tuple[Path, str]) -> Iterator[list[int]]:
    """Predictions sent back to back while the test runs: their status codes."""
    codes: list[int] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            codes.append(predict(served[1], 4, "steady traffic").status_code)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield codes
    stop.set()
    thread.join(30)


def within(seconds: float, check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` holds; fails after ``seconds``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not picked up within {seconds:g} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_memory_add_reaches_a_running_server(tmp_path: Path, served: tuple[Path, str],
                                             traffic: list[int]) -> None:
    model, url = served
    before = httpx.get(f"{url}/health").json()["model"]
    assert before == revision_id(model)
    scene(3).save(tmp_path / "new.png")
    (tmp_path / "add.jsonl").write_text(json.dumps(
        {"id": "new", "img": "new.png", "text": "fresh", "label": 1}) + "\n")
    r = CliRunner().invoke(cli, ["memory", "add", "--model", str(model), "--input",
                                 str(tmp_path / "add.jsonl"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    after = revision_id(model)
    assert after != before
    within(PICKUP_S, lambda: httpx.get(f"{url}/health").json()["model"] == after)
    body = predict(url, 1, "fresh").json()
    assert body["model"] == after and body["source"]["words"] == f"model {after}"
    assert traffic and set(traffic) == {200}  # nothing dropped while the head was swapped


def test_a_new_revision_brings_its_hash_list(served: tuple[Path, str],
                                            traffic: list[int]) -> None:
    """The watcher reloads the folder's own list with its head when ``config.json`` is replaced,
    as every writer of the folder does last; /metrics follows."""
    model, url = served
    assert predict(url, 1, "listed meme").json()["source"]["kind"] == "model"
    HashList([Entry(pdq(scene(1)), 1, "case-7", "listed meme")]).write(model / MODEL_LIST)
    shutil.copy(model / CONFIG_NAME, model / ".config.new")
    os.replace(model / ".config.new", model / CONFIG_NAME)  # the same revision, republished
    within(PICKUP_S, lambda: predict(url, 1, "listed meme").json()["source"]["kind"] == "list")
    assert "memetrm_hash_list_entries 1.0" in httpx.get(f"{url}/metrics").text
    assert traffic and set(traffic) == {200}


def test_hashes_add_reaches_a_running_server(tmp_path: Path, served: tuple[Path, str],
                                             traffic: list[int]) -> None:
    """Needs ``hashes add`` to publish the folder as a new revision (``config.json`` replaced
    last), as every writer of the folder does."""
    model, url = served
    assert predict(url, 1, "listed meme").json()["source"]["kind"] == "model"
    scene(1).save(tmp_path / "k.png")
    (tmp_path / "known.jsonl").write_text(json.dumps(
        {"id": "case-7", "label": 1, "img": "k.png", "text": "Listed meme"}) + "\n")
    r = CliRunner().invoke(cli, ["hashes", "add", "--model", str(model), "--input",
                                 str(tmp_path / "known.jsonl")])
    assert r.exit_code == 0, r.output
    within(PICKUP_S, lambda: predict(url, 1, "listed meme").json()["source"]["kind"] == "list")
    assert httpx.get(f"{url}/health").json()["model"] == revision_id(model)
    assert "memetrm_hash_list_entries 1.0" in httpx.get(f"{url}/metrics").text
    assert traffic and set(traffic) == {200}

"""Shared fixtures: tiny generated datasets (images included) and the real shared data."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(
    os.environ.get("MEMETRM_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use tiny tensors: a second OpenMP thread only adds contention on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_image(path: Path, seed: int, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def tiny_jsonl_dataset(tmp_path: Path) -> Path:
    """A Hateful-Memes-format folder: train/dev/test jsonl, PNG images and captions.jsonl."""
    root = tmp_path / "tiny_memes"
    words = ["cat", "dog", "love", "hate", "sun", "rain", "happy", "angry"]
    caps = []
    for split, n in [("train", 24), ("dev", 12), ("test", 12)]:
        rows = []
        for i in range(n):
            rid = f"{split}{i:03d}"
            label = i % 2
            make_image(root / "img" / f"{rid}.png", seed=zlib.crc32(rid.encode()))
            rows.append({"id": rid, "img": f"img/{rid}.png", "label": label,
                         "text": f"{words[i % 8]} meme number {i} {'bad' if label else 'good'}"})
            caps.append({"id": rid, "captions": [f"a picture of a {words[(i + 3) % 8]}", "x"]})
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "captions.jsonl").write_text("\n".join(json.dumps(c) for c in caps) + "\n")
    return root


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "multioff").is_dir() or not (SHARED_DATA / "hateful_memes").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA.resolve()} (set MEMETRM_DATA)")
    return SHARED_DATA


@pytest.fixture
def trace_head(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registers the traced test head as ``test-trace`` for one test only."""
    from memetrm.heads import registry

    from .fakes import TraceHead

    monkeypatch.setitem(registry._HEADS, "test-trace", registry.HeadEntry(TraceHead))
    return "test-trace"


@pytest.fixture
def live_server():
    """``start(app, **uvicorn_config) -> url``: uvicorn on 127.0.0.1 in a thread, waited for
    until it accepts connections and stopped when the test ends."""
    import socket
    import threading
    import time

    import uvicorn

    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app, **config) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        running.append((srv, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for srv, thread in running:
        srv.should_exit = True
        thread.join(10)

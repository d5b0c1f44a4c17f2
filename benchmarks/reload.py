"""How soon a running ``memetrm serve`` answers with what ``memory add`` and ``hashes add`` wrote
to its model folder, while clients keep scoring: per write, the seconds from its publication
(``config.json`` replaced) to ``/health`` naming the new revision, and the requests that failed
meanwhile.

The server (a subprocess on 127.0.0.1, the real CLI) serves a retrieval head on the offline
encoder with a fitted vote; each trial adds one generated meme with the real CLI.

    python -m benchmarks.reload [--trials 5] [--json docs/data/reload.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFont

from benchmarks.hostile import start_server
from benchmarks.render.reload import DATA, render
from benchmarks.serve import free_port
from memetrm.provenance import provenance
from memetrm.utils import atomic_write_text

CLI = [sys.executable, "-m", "memetrm.cli.main"]


def make_model(path: Path) -> Path:
    """A retrieval head on minilm-effnet with 8 remembered memes and a fitted vote."""
    import torch

    from memetrm.heads import create_head, save_pretrained

    torch.manual_seed(0)
    head = create_head("retrieval", {"image": 1280, "text": 384})
    head.remember({"image": torch.randn(8, 1280), "text": torch.randn(8, 384),
                   "label": torch.tensor([float(i % 2) for i in range(8)])},
                  [f"seed{i}" for i in range(8)])
    head.set_fitted(k_=4, temperature_=0.1, alpha_=1.0)
    return save_pretrained(head, path, encoder="minilm-effnet", fields=["image", "text"],
                           tokens=False, threshold=0.5, dataset="none (untrained benchmark head)")


def meme(path: Path, n: int) -> Path:
    """A meme with enough detail for PDQ: shapes and a caption that differ with ``n``."""
    img = Image.new("RGB", (480, 360), (30 + 7 * n % 200, 90, 160))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        x, y = (37 * (i + n)) % 400, (53 * (i * n + 3)) % 300
        draw.ellipse((x, y, x + 60 + i * 5, y + 40 + i * 3), fill=((i * 40 + n * 13) % 256, 200, 90))
    draw.text((20, 300), f"BENCHMARK MEME {n}", fill="white", font=ImageFont.load_default(size=32))
    img.save(path)
    return path


def served_revision(url: str) -> str:
    return httpx.get(f"{url}/health", timeout=5).json()["model"]


class Watcher(threading.Thread):
    """Polls ``/health`` every 20 ms, keeping the wall-clock time each new revision was seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.seen: list[tuple[float, str]] = [(time.time(), served_revision(url))]

    def run(self) -> None:
        while not self.stop.is_set():
            now = served_revision(self.url)
            if now != self.seen[-1][1]:
                self.seen.append((time.time(), now))
            time.sleep(0.02)


def trial(watcher: Watcher, model: Path, command: list[str], timeout: float = 30.0) -> float:
    """Run one write; seconds from its publication (``config.json`` replaced, the last step of
    every write) until the server names the new revision."""
    changes = len(watcher.seen)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-500:]}")
    published = (model / "config.json").stat().st_mtime
    deadline = time.monotonic() + timeout
    while len(watcher.seen) == changes:
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not pick up {command[3:5]} within {timeout:g} s")
        time.sleep(0.02)
    return watcher.seen[changes][0] - published


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--json", type=Path, default=DATA)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memetrm-reload-"))
    model = make_model(tmp / "model")
    port = free_port()
    proc = start_server(model, port)
    url = f"http://127.0.0.1:{port}"
    codes: list[int] = []
    stop = threading.Event()
    probe = meme(tmp / "probe.png", 999).read_bytes()

    def traffic() -> None:
        while not stop.is_set():
            r = httpx.post(f"{url}/v1/predict", files={"image": ("m.png", probe, "image/png")},
                           data={"text": "steady traffic"}, timeout=60)
            codes.append(r.status_code)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    watcher = Watcher(url)
    watcher.start()
    seconds: dict[str, list[float]] = {"memory add": [], "hashes add": []}
    try:
        for n in range(args.trials):
            for what, sub in (("memory add", ["memory", "add"]), ("hashes add", ["hashes", "add"])):
                rows = tmp / f"{sub[0]}-{n}.jsonl"
                rows.write_text(json.dumps({"id": f"{sub[0]}-{n}", "label": n % 2,
                                            "text": f"benchmark meme {n}",
                                            "img": str(meme(tmp / f"{sub[0]}-{n}.png", n))}) + "\n")
                seconds[what].append(trial(watcher, model, [*CLI, *sub, "--model", str(model),
                                                            "--input", str(rows)]))
                print(f"{what} {n + 1}/{args.trials}: {seconds[what][-1]:.2f} s", flush=True)
    finally:
        stop.set()
        watcher.stop.set()
        sender.join(60)
        proc.terminate()
        proc.wait(30)
    record = {
        "trials": args.trials, "load_average": os.getloadavg()[0],
        "seconds": seconds,
        "p50_s": {k: statistics.median(v) for k, v in seconds.items()},
        "max_s": {k: max(v) for k, v in seconds.items()},
        "requests": len(codes), "failed": sum(c != 200 for c in codes),
        "provenance": provenance(),
    }
    atomic_write_text(args.json, json.dumps(record, indent=1))
    render(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

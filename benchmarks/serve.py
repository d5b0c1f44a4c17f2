"""Load test of ``memetrm serve``: N concurrent clients for a fixed time against 127.0.0.1.

Starts the server in a subprocess with a real offline-encoder model (``--model DIR``, or a
freshly initialised MLP head on minilm-effnet: the encoder dominates the cost, trained or not),
then for each client count reports throughput, p50/p95/p99 latency, and the server's RSS
before and after.

    python -m benchmarks.serve [--model DIR] [--clients 1 8 32] [--duration 20] [--ocr]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks.render.serve import DATA, render
from memetrm.utils import atomic_write_text

SERVER = """
import sys, uvicorn
from memetrm.serving.app import create_app
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def make_model(path: Path) -> Path:
    import torch

    from memetrm.heads import create_head, save_pretrained

    torch.manual_seed(0)
    head = create_head("mlp", {"image": 1280, "text": 384})
    return save_pretrained(head, path, encoder="minilm-effnet", fields=["image", "text"],
                           tokens=False, threshold=0.5, dataset="none (untrained benchmark head)")


def meme_png() -> bytes:
    img = Image.new("RGB", (500, 400), (235, 235, 220))
    ImageDraw.Draw(img).text((20, 30), "WHEN THE BENCHMARK", fill="black",
                             font=ImageFont.load_default(size=40))
    ImageDraw.Draw(img).text((20, 320), "RUNS ALL NIGHT", fill="black",
                             font=ImageFont.load_default(size=40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run_load(url: str, clients: int, duration: float, image: bytes, ocr: bool) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + duration
    data = {} if ocr else {"text": "when the benchmark runs all night"}

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = http.post(url, files={"image": ("m.png", image, "image/png")}, data=data)
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "errors": errors[0], "rps": len(lat) / wall,
            **{f"p{q}": float(np.percentile(lat, q)) if len(lat) else float("nan")
               for q in (50, 95, 99)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="model dir (default: an untrained MLP head)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per client count")
    ap.add_argument("--ocr", action="store_true", help="send no text, so every request runs OCR")
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp) / "bench-mlp")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(port)])
        base = f"http://127.0.0.1:{port}"
        try:
            t0 = time.perf_counter()
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise SystemExit("server did not start")
                time.sleep(0.5)
            model_id = httpx.get(base + "/v1/model").json()["model"]
            print(f"server up in {time.perf_counter() - t0:.1f} s ({model_id})")
            image = meme_png()
            run_load(base + "/v1/predict", 1, 2.0, image, args.ocr)  # warm-up
            before = rss_mb(proc.pid)[0]
            mode = "OCR on every request" if args.ocr else "text given, no OCR"
            print(f"mode: {mode}, {args.duration:g} s per run")
            print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} "
                  f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
            runs = []
            for n in args.clients:
                r = {"clients": n, **run_load(base + "/v1/predict", n, args.duration, image,
                                              args.ocr)}
                runs.append(r)
                print(f"{n:>7} {r['requests']:>8} {r['errors']:>6} {r['rps']:>7.2f} "
                      f"{r['p50']:>8.0f} {r['p95']:>8.0f} {r['p99']:>8.0f}")
            after, peak = rss_mb(proc.pid)
            print(f"server RSS: {before:.0f} MB before load, {after:.0f} MB after "
                  f"(peak {peak:.0f} MB)")
        finally:
            proc.terminate()
            proc.wait(10)
    result = {"command": "python -m benchmarks.serve " + " ".join(sys.argv[1:]), "mode": mode,
              "duration": args.duration, "model": model_id, "runs": runs,
              "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
              "rss_before_mb": before, "rss_after_mb": after, "rss_peak_mb": peak}
    atomic_write_text(args.json, json.dumps(result, indent=2))
    if args.json == DATA:
        render()


if __name__ == "__main__":
    main()

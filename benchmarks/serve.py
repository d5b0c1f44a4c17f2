"""Load test of ``memetrm serve``: N concurrent clients for a fixed time against 127.0.0.1.

Starts the server in a subprocess with a real offline-encoder model (``--model DIR``, or a
freshly initialised MLP head on minilm-effnet: the encoder dominates the cost, trained or not),
then for each client count reports throughput, p50/p95/p99 latency, and the server's RSS
before and after.

    python -m benchmarks.serve [--model DIR] [--clients 1 8 32] [--duration 20] [--ocr]

With ``--runtimes`` it compares encoder runtimes and the repost cache side by side instead:
one server per (runtime, cache off/on), each sent MultiOFF memes with their texts, all
distinct ("fresh": every request a forward pass), and with the cache on also half reposts
(an earlier meme resized to 70 % and re-encoded as JPEG quality 50, its text retyped).

    python -m benchmarks.serve --runtimes torch onnx onnx-int8 --data-root ../shared/data \
        [--clients 1 8] [--duration 8]
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
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from benchmarks.render.serve import DATA, RUNTIMES_DATA, render, render_runtimes
from memetrm.utils import atomic_write_text

SERVER = """
import sys, uvicorn, warnings
from memetrm.serving.app import create_app
from memetrm.serving.feature_memo import FeatureMemo
from memetrm.serving.predictor import Predictor
runtime, cache = (sys.argv[3], int(sys.argv[4])) if len(sys.argv) > 3 else (None, 0)
warnings.simplefilter("ignore")
predictor = Predictor(sys.argv[1], runtime=runtime, memo=FeatureMemo(cache) if cache else None)
uvicorn.run(create_app(predictor), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
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


def run_load(url: str, clients: int, duration: float, image: bytes, ocr: bool,
             memes: Callable[[], tuple[bytes, str]] | None = None) -> dict[str, float]:
    """Closed-loop clients; ``memes()`` gives each request's (JPEG, text), else ``image``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    # the clock starts once every client is set up (an httpx client takes a while to make)
    start = [0.0]
    ready = threading.Barrier(clients + 1, action=lambda: start.__setitem__(0, time.perf_counter()))
    data = {} if ocr else {"text": "when the benchmark runs all night"}

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            ready.wait()
            while time.perf_counter() < start[0] + duration:
                body, form = ((image, data) if memes is None else
                              (lambda m: (m[0], {"text": m[1]}))(memes()))
                t = time.perf_counter()
                r = http.post(url, files={"image": ("m.jpg", body, "image/jpeg")}, data=form)
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    ready.wait()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start[0]
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "errors": errors[0], "rps": len(lat) / wall,
            **{f"p{q}": float(np.percentile(lat, q)) if len(lat) else float("nan")
               for q in (50, 95, 99)}}


def start_server(model: Path, *extra: str, cli: bool = False) -> tuple[subprocess.Popen, str]:
    """``create_app`` (``cli``: ``memetrm serve`` with options ``extra``) in a subprocess on a
    free port, returned once /health answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memetrm.cli.main", "serve", "--model", str(model), "--port",
         str(port), *extra] if cli else [sys.executable, "-c", SERVER, str(model), str(port), *extra],
        stdout=subprocess.DEVNULL if cli else None)  # `serve` logs every request there
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > 300:
            proc.kill()
            raise SystemExit("server did not start")
        time.sleep(0.5)
    print(f"server up in {time.perf_counter() - t0:.1f} s ({' '.join(extra) or 'default'})",
          flush=True)
    return proc, base


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class MemeStream:
    """Request bodies, all encoded before the load so the clients cost the CPU nothing.

    Fresh memes are MultiOFF images as published, mirrored and flipped (PDQ tells these
    apart), never sent twice to one server; with ``reposts`` that share of requests is an
    earlier meme resized to 70 % and re-encoded at JPEG quality 50, its text in capitals."""

    def __init__(self, data_root: str | None, limit: int | None = None) -> None:
        from memetrm.data import get_dataset, open_image, select_fields

        ds = get_dataset("multioff", data_root)
        records = [r for s in ds.splits()
                   for r in select_fields(ds.records(s), ["image", "text"], "skip").records][:limit]
        self.memes: list[tuple[bytes, bytes, str]] = []
        for turn in (lambda i: i, ImageOps.mirror, ImageOps.flip):
            for r in records:
                img = turn(open_image(r.image))
                small = img.resize((int(img.width * 0.7), int(img.height * 0.7)))
                self.memes.append((jpeg(img), jpeg(small, 50), r.texts["text"]))
        self.restart(0.0)

    def restart(self, reposts: float) -> None:
        """A new server: nothing sent yet."""
        self.reposts, self.sent = reposts, 0
        self.rng, self.lock = np.random.default_rng(0), threading.Lock()

    def share(self, reposts: float) -> None:
        self.reposts = reposts

    def __call__(self) -> tuple[bytes, str]:
        with self.lock:
            if self.sent and self.rng.random() < self.reposts:
                _, repost, text = self.memes[self.rng.integers(self.sent)]
                return repost, text.upper()
            if self.sent == len(self.memes):
                raise SystemExit(f"all {self.sent} distinct memes sent: shorten --duration")
            fresh, _, text = self.memes[self.sent]
            self.sent += 1
            return fresh, text


def compare_runtimes(args: argparse.Namespace, model: Path) -> None:
    """Every runtime with the cache off and on, fresh memes and (cache on) half reposts."""
    runs = []
    print(f"{'runtime':>10} {'cache':>5} {'traffic':>13} {'clients':>7} {'req/s':>7} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}", flush=True)
    stream = MemeStream(args.data_root)
    for runtime in args.runtimes:
        for cache in (0, args.cache_size):
            proc, base = start_server(model, runtime, str(cache))
            try:
                run_load(base + "/v1/predict", 1, 2.0, meme_png(), False)  # warm-up
                stream.restart(0.0)
                for reposts in (0.0, 0.5) if cache else (0.0,):
                    stream.share(reposts)
                    for n in args.clients:
                        r = {"runtime": runtime, "cache": bool(cache), "reposts": reposts,
                             "clients": n, **run_load(base + "/v1/predict", n, args.duration,
                                                      b"", False, stream)}
                        runs.append(r)
                        print(f"{runtime:>10} {'on' if cache else 'off':>5} "
                              f"{'half reposts' if reposts else 'fresh':>13} {n:>7} "
                              f"{r['rps']:>7.1f} {r['p50']:>7.0f} {r['p95']:>7.0f} "
                              f"{r['p99']:>7.0f} {r['errors']:>6}", flush=True)
                metrics = httpx.get(base + "/metrics").text
                runs[-1]["memo_metrics"] = [line for line in metrics.splitlines()
                                            if line.startswith("memetrm_feature_memo_lookups")]
            finally:
                proc.terminate()
                proc.wait(10)
    result = {"command": "python -m benchmarks.serve " + " ".join(sys.argv[1:]),
              "duration": args.duration, "runs": runs,
              "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}"}
    atomic_write_text(RUNTIMES_DATA, json.dumps(result, indent=2))
    render_runtimes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="model dir (default: an untrained MLP head)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per client count")
    ap.add_argument("--ocr", action="store_true", help="send no text, so every request runs OCR")
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    ap.add_argument("--runtimes", nargs="+", help="compare these runtimes, cache off/on")
    ap.add_argument("--data-root", default=None, help="MultiOFF memes for --runtimes")
    ap.add_argument("--cache-size", type=int, default=4096)
    args = ap.parse_args()

    if args.runtimes:
        with tempfile.TemporaryDirectory() as tmp:
            compare_runtimes(args, args.model or make_model(Path(tmp) / "bench-mlp"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp) / "bench-mlp")
        proc, base = start_server(model)
        try:
            model_id = httpx.get(base + "/v1/model").json()["model"]
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

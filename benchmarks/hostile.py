"""Hostile clients against ``memetrm serve`` (a subprocess on 127.0.0.1, the real CLI settings):

- poisoned batches: bursts of good requests plus one invalid one (a lone surrogate), counting
  good requests that did not get 200;
- slow clients: N connections trickling their headers for a while, with ``/health`` probed
  meanwhile: the share of probes answered 200 within 1 s;
- a degenerate image: a 4,000,000 x 10 PNG (117 KB) and the server's RSS growth.

    python -m benchmarks.hostile [--model DIR] [--json runs/hostile.json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.render.hostile import DATA, render
from benchmarks.serve import free_port, make_model, meme_png, rss_mb
from memetrm.utils import atomic_write_text


def start_server(model: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "memetrm.cli.main", "serve", "--model", str(model),
           "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start")


def poisoned_bursts(url: str, bursts: int = 3, good: int = 12) -> dict:
    image = base64.b64encode(meme_png()).decode()
    bodies = [json.dumps({"image": image, "text": f"an ordinary meme {i}"}) for i in range(good)]
    bad = '{"image": "' + image + '", "text": "\\ud800"}'  # a lone surrogate, as raw JSON
    failed_good, bad_codes = 0, []
    with ThreadPoolExecutor(good + 1) as pool:
        for _ in range(bursts):
            futs = [pool.submit(httpx.post, f"{url}/v1/predict", content=b,
                                headers={"content-type": "application/json"}, timeout=120)
                    for b in [*bodies, bad]]
            codes = [f.result().status_code for f in futs]
            failed_good += sum(c != 200 for c in codes[:good])
            bad_codes.append(codes[good])
    return {"bursts": bursts, "good_per_burst": good, "good_failed": failed_good,
            "bad_status": bad_codes}


def slow_clients(url: str, port: int, n: int = 64, seconds: float = 15.0) -> dict:
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():  # reconnect when the server cuts the connection off
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
                    while not stop.is_set():
                        s.sendall(b"X")
                        time.sleep(0.5)
            except OSError:
                time.sleep(0.1)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    probes = ok = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        probes += 1
        with contextlib.suppress(httpx.HTTPError):
            ok += httpx.get(f"{url}/health", timeout=1.0).status_code == 200
        time.sleep(0.25)
    stop.set()
    for t in threads:
        t.join(5)
    return {"clients": n, "seconds": seconds, "probes": probes, "ok_within_1s": ok,
            "share_ok": ok / probes}


def degenerate_png(url: str, pid: int) -> dict:
    buf = io.BytesIO()
    Image.new("L", (4_000_000, 10), 255).save(buf, "PNG", optimize=True)
    before, _ = rss_mb(pid)
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/predict", files={"image": ("strip.png", buf.getvalue(), "image/png")},
                   data={"text": "x"}, timeout=120)
    after, _ = rss_mb(pid)
    return {"png_bytes": len(buf.getvalue()), "status": r.status_code,
            "detail": r.json().get("detail"), "seconds": time.perf_counter() - t0,
            "rss_before_mb": before, "rss_after_mb": after, "rss_growth_mb": after - before}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    ap.add_argument("--slow-clients", type=int, default=64)
    ap.add_argument("--slow-seconds", type=float, default=15.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(Path(tmp) / "model")
        port = free_port()
        proc = start_server(model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            rss_start, _ = rss_mb(proc.pid)
            results = {"model": str(model), "rss_start_mb": rss_start,
                       "poisoned": poisoned_bursts(url),
                       "slow_clients": slow_clients(url, port, args.slow_clients,
                                                    args.slow_seconds),
                       "degenerate_png": degenerate_png(url, proc.pid)}
            results["rss_end_mb"], results["rss_peak_mb"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    results["command"] = "python -m benchmarks.hostile " + " ".join(sys.argv[1:])
    atomic_write_text(args.json, json.dumps(results, indent=2))
    if args.json == DATA:
        render()
    p, s, d = results["poisoned"], results["slow_clients"], results["degenerate_png"]
    print(f"poisoned bursts: {p['good_failed']} of {p['bursts'] * p['good_per_burst']} good "
          f"requests failed; the bad one got {p['bad_status']}")
    print(f"{s['clients']} slow clients for {s['seconds']:g} s: {s['ok_within_1s']}/{s['probes']} "
          f"/health probes answered 200 within 1 s ({100 * s['share_ok']:.0f}%)")
    print(f"4,000,000 x 10 PNG ({d['png_bytes']:,} bytes): {d['status']} in {d['seconds']:.2f} s, "
          f"RSS {d['rss_before_mb']:.0f} -> {d['rss_after_mb']:.0f} MB")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MEMETRM_THREADS", "1")
    sys.exit(main())

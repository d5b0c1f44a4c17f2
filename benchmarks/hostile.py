"""Hostile clients against ``memetrm serve`` (a subprocess on 127.0.0.1, the real CLI settings):

- poisoned batches: bursts of good requests plus one invalid one (a lone surrogate), counting
  good requests that did not get 200;
- slow clients: N connections trickling their headers for a while, with ``/health`` probed
  meanwhile: the share of probes answered 200 within 1 s;
- a degenerate image: a 4,000,000 x 10 PNG (117 KB) and the server's RSS growth;
- an OCR flood: N concurrent predictions of a text image with no ``text`` (so OCR runs), the
  ``/health`` probes answered within 1 s meanwhile, and the server's CPU after the last answer;
- a PNG burst: 24 concurrent 6300 x 6300 PNGs (each inside the per-image pixel budget), the
  server's peak RSS growth and ``/health`` meanwhile;
- hostile JSON: 1000-deep nesting, a 4,500-digit integer, and 6 concurrent 9.9 MB bodies of
  400,000 keys, with ``/health`` probed;
- clients that give up: N OCR predictions whose clients hang up after 2 s, the predictions
  the server counts as cancelled, and the work it still did after they left;
- trickled bodies: N clients sending a body one byte every 0.5 s, what each was answered and
  when, and when an ordinary prediction was served again;
- concurrent writers: two ``memetrm memory add`` runs of 200 memes each on one retrieval model,
  and the rows lost.

Every attack counts the server's 500s.

    python -m benchmarks.hostile [--model DIR] [--json runs/hostile.json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
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


class Probe:
    """``/health`` probed every 0.25 s in a thread while an attack runs."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - t0 if ok else float("inf"))
                time.sleep(0.25)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def summary(self) -> dict:
        ok = sum(t < 1.0 for t in self.latencies)
        return {"probes": len(self.latencies), "ok_within_1s": ok,
                "share_ok": ok / max(1, len(self.latencies)),
                "worst_s": max(self.latencies, default=0.0)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(n: int, send) -> list[int]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: send(), range(n)))


def text_png(size: tuple[int, int] = (400, 120)) -> bytes:
    from PIL import ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((10, 35), "NOBODY READS THIS", fill="black",
                             font=ImageFont.load_default(size=36))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def ocr_flood(url: str, pid: int, n: int = 60) -> dict:
    body = json.dumps({"image": base64.b64encode(text_png()).decode()})  # no text: OCR runs
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=n))
    t0 = time.perf_counter()
    with Probe(url) as probe:
        codes = burst(n, lambda: client.post(f"{url}/v1/predict", content=body, headers={
            "content-type": "application/json"}).status_code)
    seconds = time.perf_counter() - t0
    cpu0 = cpu_seconds(pid)
    time.sleep(5)
    return {"requests": n, "seconds": seconds, "codes": _count(codes), "health": probe.summary(),
            "cpu_s_in_5s_after": cpu_seconds(pid) - cpu0}


def png_burst(url: str, pid: int, n: int = 24, side: int = 6300) -> dict:
    from PIL import ImageDraw

    img = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(img).rectangle((side // 4, side // 4, side // 2, side // 2), fill="red")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    png = buf.getvalue()
    before, _ = rss_mb(pid)
    peak, stop = [before], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(rss_mb(pid)[0])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=n))
    t0 = time.perf_counter()
    with Probe(url) as probe:
        codes = burst(n, lambda: client.post(f"{url}/v1/predict", data={"text": "x"}, files={
            "image": ("big.png", png, "image/png")}).status_code)
    seconds = time.perf_counter() - t0
    time.sleep(2)
    stop.set()
    sampler.join(5)
    after, _ = rss_mb(pid)
    return {"requests": n, "side": side, "png_bytes": len(png), "seconds": seconds,
            "codes": _count(codes), "health": probe.summary(), "rss_before_mb": before,
            "rss_peak_mb": max(peak), "rss_after_mb": after,
            "rss_peak_growth_mb": max(peak) - before}


def hostile_json(url: str, n_big: int = 6) -> dict:
    post = functools.partial(httpx.post, f"{url}/v1/predict", timeout=300,
                             headers={"content-type": "application/json"})
    image = base64.b64encode(meme_png()).decode()
    nested = post(content='{"image": "x", "text": ' + "[" * 1000 + "]" * 1000 + "}")
    digits = post(content='{"image": "x", "text": ' + "9" * 4500 + "}")
    keys = 400_000
    big = json.dumps({"image": image, **{f"k{i:07d}": i for i in range(keys)}})
    with Probe(url) as probe:
        codes = burst(n_big, lambda: post(content=big).status_code)
    return {"nested_1000_status": nested.status_code, "digits_4500_status": digits.status_code,
            "big": {"bodies": n_big, "bytes": len(big), "keys": keys, "codes": _count(codes),
                    "health": probe.summary()}}


def concurrent_memory_add(tmp: Path, rows: int = 200) -> dict:
    """Two ``memetrm memory add`` processes at once on one text-only retrieval model."""
    import torch

    from memetrm.heads import create_head, from_pretrained, save_pretrained

    torch.manual_seed(0)
    head = create_head("retrieval", {"text": 384})
    base = 100
    head.remember({"text": torch.randn(base, 384), "label": torch.randint(0, 2, (base,)).float()},
                  [f"base{i}" for i in range(base)])
    model = save_pretrained(head, tmp / "memory-model", encoder="minilm-effnet", fields=["text"],
                            tokens=False, threshold=0.5)
    procs = []
    for name in ("a", "b"):
        src = tmp / f"add-{name}.jsonl"
        src.write_text("".join(json.dumps({"id": f"{name}{i}", "label": i % 2,
                                           "text": f"meme {name} number {i}"}) + "\n"
                               for i in range(rows)))
        procs.append(subprocess.Popen([sys.executable, "-m", "memetrm.cli.main", "memory", "add",
                                       "--model", str(model), "--input", str(src),
                                       "--device", "cpu"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    codes = [p.wait(600) for p in procs]
    held = len(from_pretrained(model)[0].memory_ids)
    return {"writers": 2, "rows_each": rows, "exit_codes": codes, "expected": base + 2 * rows,
            "held": held, "rows_lost": base + 2 * rows - held}


def metric(url: str, name: str) -> float:
    """One unlabelled sample from the server's ``/metrics``."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise SystemExit(f"the server reports no {name}")


def busy_after(pid: int, limit: float = 60.0) -> float:
    """Seconds until the server's CPU falls idle (under 0.1 s in 1 s), at most ``limit``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        cpu = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - cpu < 0.1:
            return time.perf_counter() - t0 - 1.0
    return limit


def request_head(length: int) -> bytes:
    """The request line and headers of a JSON prediction of ``length`` bytes."""
    return (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def disconnects(url: str, port: int, pid: int, n: int = 48, give_up: float = 2.0) -> dict:
    """N clients send an OCR prediction at once and hang up ``give_up`` seconds later, unread."""
    body = json.dumps({"image": base64.b64encode(text_png()).decode()}).encode()  # OCR runs
    request = request_head(len(body)) + body
    cancelled = metric(url, "memetrm_cancelled_predictions_total")
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for s in conns:
        s.sendall(request)
    time.sleep(give_up)
    for s in conns:
        s.close()
    scored, cpu = metric(url, "memetrm_batch_size_sum"), cpu_seconds(pid)
    busy = busy_after(pid)
    return {"clients": n, "gave_up_after_s": give_up,
            "cancelled": metric(url, "memetrm_cancelled_predictions_total") - cancelled,
            "scored_after": metric(url, "memetrm_batch_size_sum") - scored,
            "busy_s_after": busy, "cpu_s_after": cpu_seconds(pid) - cpu}


def trickled_bodies(url: str, port: int, n: int = 70, seconds: float = 30.0) -> dict:
    """N clients each promise a 100 kB JSON body and send it one byte every 0.5 s, until the
    server answers or closes (at most ``seconds``); meanwhile an ordinary prediction every
    0.5 s, until one is served and every trickling client was answered. Times are from the
    start of the attack."""
    start = time.perf_counter()

    def trickle() -> tuple[str, float]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request_head(100_000) + b"{")
            s.settimeout(0.5)
            while time.perf_counter() - start < seconds:
                try:
                    s.sendall(b" ")
                    reply = s.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    reply = b""
                status = reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/") else "closed"
                return status, time.perf_counter() - start
        return "none", seconds

    body = json.dumps({"image": base64.b64encode(meme_png()).decode(), "text": "a meme"})
    ordinary, served = [], None
    with ThreadPoolExecutor(n) as pool:
        futs = [pool.submit(trickle) for _ in range(n)]
        time.sleep(1.0)  # every client is trickling
        while time.perf_counter() - start < seconds:
            with contextlib.suppress(httpx.HTTPError):
                ordinary.append(httpx.post(f"{url}/v1/predict", content=body, timeout=10, headers={
                    "content-type": "application/json"}).status_code)
                if ordinary[-1] == 200 and served is None:
                    served = time.perf_counter() - start
            if served is not None and all(f.done() for f in futs):
                break
            time.sleep(0.5)
        answers = [f.result() for f in futs]
    return {"clients": n, "answers": _count([status for status, _ in answers]),
            "answered_within_s": max(t for _, t in answers), "ordinary": _count(ordinary),
            "first_ordinary_200_s": served}


def _count(codes: list) -> dict[str, int]:
    return {str(c): codes.count(c) for c in sorted(set(codes))}


def _health(h: dict) -> str:
    return (f"`/health` {h['ok_within_1s']} of {h['probes']} within 1 s "
            f"({100 * h['share_ok']:.0f}%, worst {h['worst_s']:.2f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    ap.add_argument("--slow-clients", type=int, default=64)
    ap.add_argument("--slow-seconds", type=float, default=15.0)
    ap.add_argument("--ocr-requests", type=int, default=60)
    ap.add_argument("--disconnect-clients", type=int, default=48)
    ap.add_argument("--trickle-clients", type=int, default=70)
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
            results["png_burst"] = png_burst(url, proc.pid)
            results["ocr_flood"] = ocr_flood(url, proc.pid, args.ocr_requests)
            results["json"] = hostile_json(url)
            results["disconnects"] = disconnects(url, port, proc.pid, args.disconnect_clients)
            results["trickled_bodies"] = trickled_bodies(url, port, args.trickle_clients)
            results["rss_end_mb"], results["rss_peak_mb"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
        results["memory_add"] = concurrent_memory_add(Path(tmp))
    results["server_500s"] = sum(
        codes.get("500", 0) for codes in (results["ocr_flood"]["codes"],
                                          results["png_burst"]["codes"],
                                          results["json"]["big"]["codes"],
                                          results["trickled_bodies"]["answers"],
                                          results["trickled_bodies"]["ordinary"])) + sum(
        results["json"][k] == 500 for k in ("nested_1000_status", "digits_4500_status"))
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
    o, b, j, m = results["ocr_flood"], results["png_burst"], results["json"], results["memory_add"]
    print(f"OCR flood of {o['requests']}: {o['codes']}, {_health(o['health'])}, "
          f"CPU {o['cpu_s_in_5s_after']:.1f} s in the 5 s after")
    print(f"PNG burst of {b['requests']}: {b['codes']}, RSS peak growth "
          f"{b['rss_peak_growth_mb']:.0f} MB, after {b['rss_after_mb']:.0f} MB, "
          f"{_health(b['health'])}")
    print(f"JSON: nested {j['nested_1000_status']}, digits {j['digits_4500_status']}, big "
          f"{j['big']['codes']}, {_health(j['big']['health'])}")
    c, t = results["disconnects"], results["trickled_bodies"]
    print(f"{c['clients']} clients gone after {c['gave_up_after_s']:g} s: {c['cancelled']:.0f} "
          f"cancelled, {c['scored_after']:.0f} scored after, busy {c['busy_s_after']:.1f} s after")
    print(f"{t['clients']} trickled bodies: {t['answers']} within {t['answered_within_s']:.1f} s; "
          f"ordinary predictions {t['ordinary']}, the first 200 after "
          f"{t['first_ordinary_200_s']} s")
    print(f"memory add x2: exit {m['exit_codes']}, {m['rows_lost']} rows lost; "
          f"server 500s: {results['server_500s']}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MEMETRM_THREADS", "1")
    sys.exit(main())

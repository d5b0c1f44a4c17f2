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

Storage and input cases run the real CLI (``python -m memetrm.cli.main``) in child processes,
each with a timeout, recording exit codes, seconds, peak RSS and what survived: ``train
--save`` onto an ordinary folder, ``tune --out`` onto a model folder or a file, concurrent
``hashes add`` writers, a ``hashes add`` during a ``memory add``, files linked out of the model
folder, a swapped ONNX export, a changed tuned tower, a YAML alias bomb and ``/dev/zero`` as
``--config`` (under an address-space cap), and a 10 MB text in a batch. ``--src`` names the
memetrm source the children import, so one table shows a before and an after column:

    python -m benchmarks.hostile [--model DIR] [--json runs/hostile.json] [--only CASE,...]
    python -m benchmarks.hostile --only folder_wipe,dev_zero --src OLD/src --label before

``--only`` runs some cases; the numbers of the others stay as the JSON kept them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import memetrm
from benchmarks.render import load
from benchmarks.render.hostile import DATA, render, report
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


#: ``memory add`` whose write waits ``MEMETRM_BENCH_PAUSE`` seconds once the encoding is done,
#: after touching ``MEMETRM_BENCH_MARK``: the window a slow disk or a large memory leaves
#: between reading the folder and writing it, widened so that another writer lands in it
PAUSED_WRITE = """
import os, sys, time
from pathlib import Path
import memetrm.serving.memory as memory
save = memory.save_pretrained
def paused(*args, **kwargs):
    Path(os.environ["MEMETRM_BENCH_MARK"]).touch()
    time.sleep(float(os.environ["MEMETRM_BENCH_PAUSE"]))
    return save(*args, **kwargs)
memory.save_pretrained = paused
from memetrm.cli.main import main
main()
"""


class Child:
    """One run of memetrm's CLI (or ``code`` in its place) in a child process, started at once;
    ``wait()`` gives its exit code, seconds, peak RSS and last words. It is killed at
    ``timeout``, and ``mem_mb`` caps its address space (``setrlimit``) as a container would."""

    def __init__(self, ws: Workspace, *args: str, cwd: Path | None = None, timeout: float = 180,
                 mem_mb: int | None = None, code: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))

        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (read and closed by wait())
        self.root, self.timeout, self.t0 = ws.root, timeout, time.perf_counter()
        entry = ["-c", code] if code else ["-m", "memetrm.cli.main"]
        self.proc = subprocess.Popen([sys.executable, *entry, *args], cwd=cwd,
                                     env={**ws.env, **(env or {})}, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=cap if mem_mb else None)

    def wait(self) -> dict:
        timed_out = False
        while not (done := os.wait4(self.proc.pid, os.WNOHANG))[0]:
            if time.perf_counter() - self.t0 > self.timeout:
                self.proc.kill()
                done, timed_out = os.wait4(self.proc.pid, 0), True
                break
            time.sleep(0.05)
        _, status, usage = done
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.log.seek(0)
        self.output = self.log.read().decode(errors="replace")
        self.log.close()
        lines = [s.strip().replace(f"{self.root}/", "") for s in self.output.splitlines()]
        said = [s for s in lines if s.startswith("error:")] or [s for s in lines if s] or [""]
        return {"exit": self.proc.returncode, "timed_out": timed_out,
                "seconds": time.perf_counter() - self.t0, "peak_rss_mb": usage.ru_maxrss / 1024,
                "said": said[0 if said[0].startswith("error:") else -1][:300]}


class Workspace:
    """Folders and fixtures shared by the storage cases of one run. Every child runs the CLI of
    ``src`` (this checkout's, or an older commit's for the before column), and every fixture
    model is written by that CLI, so each version reads folders of its own making."""

    def __init__(self, root: Path, src: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(src), "MEMETRM_CACHE": str(root / "cache"),
                    "MEMETRM_THREADS": "1"}

    def cli(self, *args: str, **kwargs) -> dict:
        return Child(self, *args, **kwargs).wait()

    def must(self, *args: str, **kwargs) -> dict:
        """A fixture step: it must succeed, else the benchmark stops naming it."""
        out = self.cli(*args, **kwargs)
        if out["exit"] != 0:
            raise SystemExit(f"memetrm {' '.join(args)} failed: {out['said']}")
        return out

    @functools.cached_property
    def dataset(self) -> Path:
        """48 labelled memes (24 train, 12 dev, 12 test) with texts and 64 x 64 pictures."""
        root = self.root / "memes"
        for split, n in (("train", 24), ("dev", 12), ("test", 12)):
            rows = [{"id": f"{split}{i}", "label": i % 2, "img": str(picture(root, f"{split}{i}")),
                     "text": f"meme {i} of {split}, {'bad' if i % 2 else 'good'}"}
                    for i in range(n)]
            (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return root

    def predict(self, *args: str, timeout: float = 180) -> dict:
        """``predict --json`` of one meme, with the probability it printed (None if it failed)."""
        child = Child(self, "predict", *args, "--json", timeout=timeout)
        out = child.wait()
        out["prob"] = json.loads(child.output.splitlines()[-1])["prob"] if out["exit"] == 0 \
            else None
        return out

    def train_args(self, save: Path, encoder: str = "minilm-effnet",
                   head: str = "retrieval") -> list[str]:
        return ["train", "--dataset", str(self.dataset), "--encoder", encoder, "--head", head,
                "--fields", "text", "--seeds", "1", "--save", str(save)]

    @functools.cached_property
    def model(self) -> Path:
        """A retrieval model on the text field, saved by the CLI under test."""
        self.must(*self.train_args(self.root / "template"), timeout=600)  # extracts features
        return self.root / "template"

    def copy(self, name: str) -> Path:
        return Path(shutil.copytree(self.model, self.root / name, symlinks=True))

    def memes(self, prefix: str, n: int) -> Path:
        """A ``hashes add`` input of ``n`` labelled pictures with detail enough for PDQ."""
        rows = [{"id": f"{prefix}{i}", "label": i % 2,
                 "img": str(picture(self.root / "pictures", f"{prefix}{i}"))} for i in range(n)]
        source = self.root / f"{prefix}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return source

    def texts(self, prefix: str, n: int) -> Path:
        """A ``memory add`` input of ``n`` labelled texts."""
        source = self.root / f"{prefix}.jsonl"
        source.write_text("".join(json.dumps({"id": f"{prefix}{i}", "label": i % 2,
                                              "text": f"meme {prefix} number {i}"}) + "\n"
                                  for i in range(n)))
        return source

    @functools.cached_property
    def tower(self) -> Path:
        """A 2-layer BERT with a word-level vocabulary, as a sentence-transformers folder."""
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
        from transformers import BertConfig, BertModel, BertTokenizer

        hf = self.root / "tower-hf"
        hf.mkdir()
        words = sorted({w.strip(",") for line in (self.dataset / "train.jsonl").open()
                        for w in json.loads(line)["text"].split()})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
        (hf / "vocab.txt").write_text("\n".join(vocab) + "\n")
        BertTokenizer(str(hf / "vocab.txt")).save_pretrained(hf)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=32,
                             max_position_embeddings=64)).save_pretrained(hf)
        SentenceTransformer(modules=[Transformer(str(hf)), Pooling(16, pooling_mode="mean")],
                            device="cpu").save(str(self.root / "tower"))
        return self.root / "tower"

    def tune_args(self, out: Path, *extra: str) -> list[str]:
        return ["tune", "--dataset", str(self.dataset), "--tower", str(self.tower), "--out",
                str(out), "--field", "text", "--max-steps", "2", "--batch-size", "8",
                "--probe-sample", "0", *extra]


def picture(folder: Path, name: str) -> Path:
    """A 64 x 64 picture of 16 x 16 random blocks, seeded by its name (PDQ finds it detailed)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    blocks = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    path = folder / f"{name}.png"
    Image.fromarray(blocks.repeat(4, 0).repeat(4, 1)).save(path)
    return path


def ordinary_folder(path: Path) -> Path:
    path.mkdir()
    (path / "important.txt").write_text("the only copy")
    (path / "Makefile").write_text("all:\n\ttrue\n")
    return path


def survivors(path: Path) -> list[str]:
    """Which of the ordinary folder's two files are still there, unchanged."""
    return [n for n, text in (("important.txt", "the only copy"), ("Makefile", "all:\n\ttrue\n"))
            if (path / n).is_file() and (path / n).read_text() == text]


def folder_wipe(ws: Workspace) -> dict:
    """``train --save DIR`` onto a folder holding important.txt and a Makefile, and ``train
    --save .`` run inside such a folder."""
    named = ordinary_folder(ws.root / "project")
    out = {"dir": ws.cli(*ws.train_args(named))}
    here = ordinary_folder(ws.root / "cwd")
    out["dot"] = ws.cli(*ws.train_args(Path(".")), cwd=here)
    out["dir"]["kept"], out["dot"]["kept"] = survivors(named), survivors(here)
    return out


def tune_out(ws: Workspace) -> dict:
    """``tune --out`` onto an existing model folder holding a user's notes.txt, without and with
    ``--overwrite``, and onto an existing file."""
    out = {}
    for key, extra in (("plain", ()), ("overwrite", ("--overwrite",))):
        model = ws.copy(f"tune-onto-{key}")
        (model / "notes.txt").write_text("mine")
        files = {n: (model / n).read_bytes() for n in ("config.json", "model.safetensors")}
        out[key] = ws.cli(*ws.tune_args(model, *extra))
        out[key]["notes_kept"] = (model / "notes.txt").is_file()
        out[key]["model_kept"] = all((model / n).is_file() and (model / n).read_bytes() == data
                                     for n, data in files.items())
    notes = ws.root / "file-out" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("keep me")
    out["file"] = ws.cli(*ws.tune_args(notes))
    out["file"]["kept"] = notes.is_file() and notes.read_text() == "keep me"
    out["file"]["hidden_beside"] = sorted(p.name for p in notes.parent.iterdir()
                                          if p.name.startswith("."))
    return out


def listed(model: Path) -> list[str]:
    from memetrm.serving.hashlist import MODEL_LIST, HashList

    path = model / MODEL_LIST
    return [e.source_id for e in HashList.read(path).entries] if path.is_file() else []


def memory_ids(model: Path) -> list[str]:
    from memetrm.heads import from_pretrained

    return list(from_pretrained(model)[0].memory_ids)


def hash_writers(ws: Workspace, trials: int = 3, big_trials: int = 2, big: int = 100_000,
                 writers: int = 4, rows: int = 25) -> dict:
    """``writers`` concurrent ``hashes add`` of ``rows`` memes each, ``trials`` times on a model
    with no list and ``big_trials`` times on one already listing ``big`` memes."""
    sources = [ws.memes(f"w{k}-", rows) for k in range(writers)]
    seeded = ws.copy("hashes-seeded")
    if big:
        rng = np.random.default_rng(0)
        table = ws.root / "big.csv"
        with table.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["pdq", "label", "source_id"])
            out.writerows([rng.bytes(32).hex(), i % 2, f"known{i}"] for i in range(big))
        ws.must("hashes", "import", "--model", str(seeded), "--input", str(table))

    def trial(name: str, base: Path) -> dict:
        model = Path(shutil.copytree(base, ws.root / name, symlinks=True))
        before = len(listed(model))
        procs = [Child(ws, "hashes", "add", "--model", str(model), "--input", str(s))
                 for s in sources]
        codes = [p.wait()["exit"] for p in procs]
        kept = len(listed(model)) - before
        return {"exit_codes": codes, "kept": kept, "lost": writers * rows - kept}

    return {"writers": writers, "rows_each": rows, "listed_before": big,
            "plain": [trial(f"hashes-{t}", ws.model) for t in range(trials)],
            "big": [trial(f"hashes-big-{t}", seeded) for t in range(big_trials)]}


def hash_vs_memory(ws: Workspace, rows: int = 200, pause: float = 8.0) -> dict:
    """A ``hashes add`` of 3 memes run while a ``memory add`` of ``rows`` memes waits to write
    (``PAUSED_WRITE``), on a model whose list holds one meme: both must be kept."""
    model = ws.copy("hash-vs-memory")
    ws.must("hashes", "add", "--model", str(model), "--input", str(ws.memes("s", 1)))
    mark = ws.root / "memory-add-writes"
    adding = Child(ws, "memory", "add", "--model", str(model), "--input",
                   str(ws.texts("r", rows)), "--device", "cpu", code=PAUSED_WRITE,
                   env={"MEMETRM_BENCH_MARK": str(mark), "MEMETRM_BENCH_PAUSE": str(pause)})
    while not mark.exists() and adding.proc.poll() is None:
        time.sleep(0.05)
    hashes = ws.cli("hashes", "add", "--model", str(model), "--input", str(ws.memes("h", 3)))
    memory = adding.wait()
    ids = listed(model)
    return {"rows": rows, "pause_s": pause, "memory_add": memory, "hashes_add": hashes,
            "listed": ids, "hashes_kept": sum(i.startswith("h") for i in ids),
            "memory_kept": sum(i.startswith("r") for i in memory_ids(model))}


def symlinks(ws: Workspace) -> dict:
    """README.md and hashes.csv of a model replaced by links to files outside its folder; then
    ``memory add``, and for the list ``hashes add`` and ``predict`` of the outside-listed meme."""
    outside = ws.copy("outside")  # a list made by the CLI, naming one picture
    ws.must("hashes", "add", "--model", str(outside), "--input", str(ws.memes("outside", 1)))
    secret = ws.root / "secret.md"
    secret.write_text("# a card that is not the model's\n")
    out = {}
    for name, target in (("README.md", secret), ("hashes.csv", outside / "hashes.csv")):
        model = ws.copy(f"linked-{name}")
        ws.must("hashes", "add", "--model", str(model), "--input", str(ws.memes("own", 1)))
        (model / name).unlink()
        (model / name).symlink_to(target)
        before = target.read_bytes()
        case = {"memory_add": ws.cli("memory", "add", "--model", str(model), "--input",
                                     str(ws.texts(f"m-{name}", 1)), "--device", "cpu")}
        case["copied_in"] = not (model / name).is_symlink() and (model / name).is_file() and \
            (model / name).read_bytes() == before
        if name == "hashes.csv":
            (model / name).unlink(missing_ok=True)
            (model / name).symlink_to(target)
            case["hashes_add"] = ws.cli("hashes", "add", "--model", str(model), "--input",
                                        str(ws.memes("x", 1)))
            case["outside_written"] = target.read_bytes() != before
            scoring = Child(ws, "predict", "--model", str(model), "--image",
                            str(ws.root / "pictures" / "outside0.png"), "--text", "any text",
                            "--json")
            case["predict"] = scoring.wait()
            case["predict"]["outside_answered"] = '"outside0"' in scoring.output
        out[name] = case
    return out


def onnx_swap(ws: Workspace, text: str = "a meme about the benchmark") -> dict:
    """The model scored with ``--runtime onnx``, then again after its cached fp32 text export
    was swapped for the int8 one: the swapped file must be rebuilt or refused, never served."""
    def score(runtime: str) -> dict:
        return ws.predict("--model", str(ws.model), "--text", text, "--runtime", runtime,
                          timeout=420)

    ws.must("predict", "--model", str(ws.model), "--text", text, "--runtime", "onnx-int8",
            timeout=420)  # exports both files
    clean = score("onnx")
    folder = ws.root / "cache" / "onnx"
    fp32 = next(p for p in folder.glob("text-*/model.onnx") if "int8" not in p.parent.name)
    int8 = next(folder.glob(f"{fp32.parent.name}-int8-*/model.onnx")).read_bytes()
    fp32.write_bytes(int8)
    swapped = score("onnx")
    return {"clean": clean, "swapped": swapped, "int8_bytes": len(int8),
            "still_int8": fp32.read_bytes() == int8}


def tuned_digest(ws: Workspace, text: str = "meme 1 of train, bad") -> dict:
    """A model trained on a ``tuned:`` tower, scored before and after the tower's weights
    changed (as a later tune with ``--overwrite`` changes them)."""
    import torch
    from safetensors.torch import load_file, save_file

    tower = ws.root / "tuned-tower"
    ws.must(*ws.tune_args(tower))
    model = ws.root / "on-tuned"
    ws.must(*ws.train_args(model, encoder=f"tuned:{tower}", head="linear"))
    unchanged = ws.predict("--model", str(model), "--text", text)
    weights = tower / "model.safetensors"
    torch.manual_seed(0)
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in load_file(weights).items()}
    save_file(state, weights, metadata={"format": "pt"})
    return {"unchanged": unchanged,
            "changed": ws.predict("--model", str(model), "--text", text)}


#: nine levels of nine under a known key: 387,420,489 strings once expanded, from 341 bytes
ALIAS_BOMB = "fields:\n- &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"- &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def alias_bomb(ws: Workspace, mem_mb: int = 4096, timeout: float = 60) -> dict:
    """``train --config`` of a YAML alias bomb, under an address-space cap."""
    bomb = ws.root / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    return {"bytes": len(ALIAS_BOMB), "mem_cap_mb": mem_mb,
            **ws.cli("train", "--dataset", str(ws.dataset), "--config", str(bomb),
                     "--print-config", timeout=timeout, mem_mb=mem_mb)}


def dev_zero(ws: Workspace, mem_mb: int = 4096, timeout: float = 60) -> dict:
    """``train --config /dev/zero``, under an address-space cap."""
    return {"mem_cap_mb": mem_mb,
            **ws.cli("train", "--dataset", str(ws.dataset), "--config", "/dev/zero",
                     "--print-config", timeout=timeout, mem_mb=mem_mb)}


def long_text(ws: Workspace, mb: int = 10) -> dict:
    """``predict --input`` of 3 rows, the middle one's text ``mb`` MB; beside it, the same
    batch with a short middle row (the peak RSS of scoring without the long text)."""
    def batch(name: str, middle: str) -> dict:
        rows = [{"id": "first", "text": "a meme"}, {"id": "middle", "text": middle},
                {"id": "last", "text": "another meme"}]
        source, output = ws.root / f"{name}.jsonl", ws.root / f"{name}-scores.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = ws.cli("predict", "--model", str(ws.model), "--input", str(source), "--output",
                     str(output), timeout=300)
        scored = [json.loads(line) for line in output.read_text().splitlines()] \
            if output.is_file() else []
        out["rows"] = {r["id"]: "error" if r.get("error") else "scored" for r in scored}
        out["errors"] = [r["error"].replace(f"{ws.root}/", "")[:200] for r in scored
                         if r.get("error")]
        return out

    return {"mb": mb, "short": batch("short-rows", "a third meme"),
            "long": batch("long-row", "meme " * (mb * 200_000))}


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


class Server:
    """``memetrm serve`` of ``model`` on a free loopback port, for the server cases."""

    def __init__(self, model: Path) -> None:
        self.model, self.port = model, free_port()
        self.proc = start_server(model, self.port)
        self.pid, self.url = self.proc.pid, f"http://127.0.0.1:{self.port}"


def server_cases(args: argparse.Namespace) -> dict[str, Callable[[Server], dict]]:
    """The attacks on a running server, in the order they run."""
    return {
        "poisoned": lambda s: poisoned_bursts(s.url),
        "slow_clients": lambda s: slow_clients(s.url, s.port, args.slow_clients,
                                               args.slow_seconds),
        "degenerate_png": lambda s: degenerate_png(s.url, s.pid),
        "png_burst": lambda s: png_burst(s.url, s.pid),
        "ocr_flood": lambda s: ocr_flood(s.url, s.pid, args.ocr_requests),
        "json": lambda s: hostile_json(s.url),
        "disconnects": lambda s: disconnects(s.url, s.port, s.pid, args.disconnect_clients),
        "trickled_bodies": lambda s: trickled_bodies(s.url, s.port, args.trickle_clients),
    }


#: the storage and input cases, each run against the CLI of ``--src`` in child processes
STORAGE_CASES: dict[str, Callable[[Workspace], dict]] = {
    "folder_wipe": folder_wipe, "tune_out": tune_out, "hash_writers": hash_writers,
    "hash_vs_memory": hash_vs_memory, "symlinks": symlinks, "onnx_swap": onnx_swap,
    "tuned_digest": tuned_digest, "alias_bomb": alias_bomb, "long_text": long_text,
    "dev_zero": dev_zero,
}


def server_500s(r: dict) -> int:
    """The server's 500s over the attacks whose numbers are kept."""
    codes = [r.get("ocr_flood", {}).get("codes"), r.get("png_burst", {}).get("codes"),
             r.get("json", {}).get("big", {}).get("codes"),
             r.get("trickled_bodies", {}).get("answers"),
             r.get("trickled_bodies", {}).get("ordinary")]
    return sum(c.get("500", 0) for c in codes if c) + sum(
        r.get("json", {}).get(k) == 500 for k in ("nested_1000_status", "digits_4500_status"))


def commit_of(src: Path) -> str:
    """The short commit of the checkout holding ``src``, with ``+`` when it has changes."""
    git = functools.partial(subprocess.run, cwd=src, capture_output=True, text=True, check=False)
    head = git(["git", "rev-parse", "--short", "HEAD"]).stdout.strip() or "unknown"
    return head + ("+" if git(["git", "status", "--porcelain", "--", "."]).stdout else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    ap.add_argument("--only", type=lambda s: [n for n in s.split(",") if n], default=None,
                    help="comma-separated cases to run; the others keep their stored numbers")
    ap.add_argument("--src", type=Path, default=Path(memetrm.__file__).parents[1],
                    help="the memetrm source the storage cases run (an older checkout's src "
                         "fills the before column)")
    ap.add_argument("--label", choices=("before", "after"), default="after",
                    help="the column of the storage table this run fills")
    ap.add_argument("--slow-clients", type=int, default=64)
    ap.add_argument("--slow-seconds", type=float, default=15.0)
    ap.add_argument("--ocr-requests", type=int, default=60)
    ap.add_argument("--disconnect-clients", type=int, default=48)
    ap.add_argument("--trickle-clients", type=int, default=70)
    args = ap.parse_args()
    served = server_cases(args)
    known = [*served, "memory_add", *STORAGE_CASES]
    names = args.only or known
    if unknown := [n for n in names if n not in known]:
        ap.error(f"unknown case(s) {unknown}; the cases are {', '.join(known)}")
    command = "python -m benchmarks.hostile " + " ".join(sys.argv[1:])
    results = load(args.json) or {}
    with tempfile.TemporaryDirectory() as tmp:
        if attacks := [n for n in names if n in served]:
            server = Server(args.model or make_model(Path(tmp) / "model"))
            try:
                results["model"] = str(args.model) if args.model else "model"  # a temporary folder otherwise
                results["rss_start_mb"], _ = rss_mb(server.pid)
                for name in attacks:
                    results[name] = served[name](server)
                results["rss_end_mb"], results["rss_peak_mb"] = rss_mb(server.pid)
            finally:
                server.proc.terminate()
                server.proc.wait(10)
        if "memory_add" in names:
            results["memory_add"] = concurrent_memory_add(Path(tmp))
        if attacks or "memory_add" in names:
            results["server_500s"], results["command"] = server_500s(results), command
        if stored := [n for n in names if n in STORAGE_CASES]:
            ws = Workspace(Path(tmp) / "storage", args.src.resolve())
            run = {"commit": commit_of(args.src), "command": command}
            for name in stored:
                print(f"{name} ({args.label}) ...", flush=True)
                results.setdefault("storage", {}).setdefault(name, {})[args.label] = {
                    **STORAGE_CASES[name](ws), "run": run}
    atomic_write_text(args.json, json.dumps(results, indent=2))
    if args.json == DATA:
        render()
    print(report(results))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MEMETRM_THREADS", "1")
    sys.exit(main())

"""A million memes in an ``rgcl`` memory: time to add, size on disk, latency of one prediction.

Random feature vectors (the widths of MiniLM text + caption) go into an untrained ``rgcl``
head through ``Memory.add``, the call ``memetrm memory add`` makes after encoding its rows
(encoding a million memes with MiniLM would take hours on this CPU and measures the encoder,
not the memory); the head is saved as ``memory add`` saves it, loaded back, and one meme at a
time is scored with its neighbours. Each size runs in the same process, one after the other.
Writes ``docs/data/memory_scale.json``; the table in ``docs/learned_space.md`` is rendered
from it.

    python -m benchmarks.memory_scale --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.render.memory_scale import DATA, render
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.layers.memory import APPROXIMATE_AFTER
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.utils import atomic_write_text

DIMS = {"text": 384, "caption": 384}
CHUNK = 50_000


def measure(n: int, queries: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    head = create_head("rgcl", DIMS).eval()
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        batch = {f: torch.randn(rows, d, generator=gen) for f, d in DIMS.items()}
        batch["label"] = torch.randint(0, 2, (rows,), generator=gen).float()
        with torch.no_grad():
            head.add(batch, [f"m{start + i}" for i in range(rows)])
    add_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_pretrained(head, Path(tmp) / "model")
        save_seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "model").rglob("*") if p.is_file())
        t0 = time.perf_counter()
        loaded, _ = from_pretrained(Path(tmp) / "model")
        load_seconds = time.perf_counter() - t0
    latencies = []
    for i in range(queries + 5):
        meme = {f: torch.randn(1, d, generator=gen) for f, d in DIMS.items()}
        t0 = time.perf_counter()
        out = loaded.predict(meme)
        loaded.explain(out)
        if i >= 5:  # the first queries build the index
            latencies.append(time.perf_counter() - t0)
    return {"memes": n, "add_seconds": add_seconds, "save_seconds": save_seconds,
            "load_seconds": load_seconds, "bytes_on_disk": size,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * statistics.quantiles(latencies, n=20)[-1],
            "neighbours": int(out["neighbours"].shape[1]), "queries": queries}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        torch.set_num_threads(args.threads)
        rows = []
        for n in map(int, args.sizes.split(",")):
            console.print(f"{n:,} memes ...")
            rows.append(measure(n, args.queries))
            console.print(rows[-1])
        atomic_write_text(DATA, json.dumps({
            "provenance": provenance(threads=args.threads), "approximate_after": APPROXIMATE_AFTER,
            "command": f"python -m benchmarks.memory_scale --sizes {args.sizes} --threads "
                       f"{args.threads}", "rows": rows}, indent=1))
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())

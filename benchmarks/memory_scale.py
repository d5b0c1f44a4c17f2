"""A million memes in an ``rgcl`` memory: time to add, size on disk, latency of one prediction,
and the recall@10 of its neighbours against exact search.

Random feature vectors (the widths of MiniLM text + caption) go into an untrained ``rgcl``
head (a ``--dim``-wide memory) through ``Memory.add``, the call ``memetrm memory add`` makes
after encoding its rows (encoding a million memes with MiniLM would take hours on this CPU and
measures the encoder, not the memory); its index is built (``index_seconds``: exact, or HNSW
past ``APPROXIMATE_AFTER`` with ``efSearch`` calibrated), the head is saved as ``memory add``
saves it (an HNSW index beside the weights: ``index_bytes``), loaded back (``load_seconds``,
the saved index included; ``first_search_seconds``: what the first query then waits for, the
whole build when no index was saved), and one meme at a time is scored with its neighbours (``p50_ms`` wall
time; ``p50_cpu_ms`` the thread's CPU time, what a core of its own would take on a machine
that others share). ``recall_at_10`` compares those neighbours with exact search over the same
rows.

``--data gaussian`` draws every feature independently: isotropic embeddings, where the nearest
neighbours are barely nearer than the rest (the hardest case for a graph index). ``--data
clustered`` draws memes around ``n / 100`` centres (families of one template or topic, as
real memes come), with noise half the centres' spread. ``--crossover`` times exact search
against HNSW at each size, index alone (where ``APPROXIMATE_AFTER`` comes from). Each size runs
in the same process, one after the other. Writes ``docs/data/memory_scale.json`` (rows of
earlier runs with another ``--data`` are kept); the table in ``docs/learned_space.md`` is
rendered from it.

    python -m benchmarks.memory_scale --threads 1 --data gaussian
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.render.memory_scale import DATA, render
from memetrm.heads import create_head, from_pretrained, save_pretrained
from memetrm.layers import memory as memory_layer
from memetrm.layers.memory import InnerProductIndex, exact_top_k, recall_at_k
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.utils import atomic_write_text

DIMS = {"text": 384, "caption": 384}
CHUNK = 50_000
#: memes per centre, and the noise around a centre (the centres' spread is 1), of ``clustered``
PER_CENTRE, NOISE = 100, 0.5


class Memes:
    """Random feature vectors of ``data`` kind for a memory of ``n`` memes."""

    def __init__(self, data: str, n: int, gen: torch.Generator) -> None:
        self.data, self.gen = data, gen
        self.centres = ({f: torch.randn(max(n // PER_CENTRE, 1), d, generator=gen)
                         for f, d in DIMS.items()} if data == "clustered" else None)

    def __call__(self, rows: int) -> dict[str, torch.Tensor]:
        if self.centres is None:
            return {f: torch.randn(rows, d, generator=self.gen) for f, d in DIMS.items()}
        pick = torch.randint(0, len(self.centres["text"]), (rows,), generator=self.gen)
        return {f: c[pick] + NOISE * torch.randn(rows, c.shape[1], generator=self.gen)
                for f, c in self.centres.items()}


def measure(n: int, queries: int, dim: int, data: str, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    memes = Memes(data, n, gen)
    head = create_head("rgcl", DIMS, embed_dim=dim).eval()
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        batch = memes(rows)
        batch["label"] = torch.randint(0, 2, (rows,), generator=gen).float()
        with torch.no_grad():
            head.add(batch, [f"m{start + i}" for i in range(rows)])
    add_seconds = time.perf_counter() - t0
    head.set_fitted(k_=10, temperature_=0.1, alpha_=1.0, logit_weight_=1.0)  # a fitted vote
    t0 = time.perf_counter()
    head.bank.search(torch.zeros(1, dim), 1)  # builds the index
    index_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_pretrained(head, Path(tmp) / "model")
        save_seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "model").rglob("*") if p.is_file())
        index_bytes = sum(p.stat().st_size for p in (Path(tmp) / "model").glob("*.faiss"))
        del head  # a million rows take 1.5 GB: keep one copy
        t0 = time.perf_counter()
        loaded, _ = from_pretrained(Path(tmp) / "model")
        load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded.bank.search(torch.zeros(1, dim), 1)
    first_search_seconds = time.perf_counter() - t0
    latencies, cpu, keys, found = [], [], [], []
    with torch.no_grad():
        for i in range(queries + 5):
            meme = memes(1)
            t0, c0 = time.perf_counter(), time.process_time()
            out = loaded.predict(meme)
            loaded.explain(out)
            if i >= 5:  # warm-up
                latencies.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                keys.append(loaded.memory_key(meme))
                found.append(out["neighbours"])
    exact = exact_top_k(torch.cat(keys).numpy(), loaded.bank.embeddings.numpy(),
                        out["neighbours"].shape[1])
    return {"memes": n, "dim": dim, "data": data, "add_seconds": add_seconds,
            "save_seconds": save_seconds, "load_seconds": load_seconds, "bytes_on_disk": size,
            "index_seconds": index_seconds, "index_bytes": index_bytes,
            "first_search_seconds": first_search_seconds, "index": loaded.bank._index.params,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * statistics.quantiles(latencies, n=20)[-1],
            "p50_cpu_ms": 1000 * statistics.median(cpu),
            "recall_at_10": recall_at_k(torch.cat(found).numpy(), exact),
            "neighbours": int(out["neighbours"].shape[1]), "queries": queries,
            "load_average": round(os.getloadavg()[0], 2)}


def crossover(n: int, queries: int, dim: int, data: str, seed: int = 0) -> dict:
    """p50 of one query on the exact index and on HNSW (index alone), and HNSW's recall@10."""
    gen = torch.Generator().manual_seed(seed)
    memes, head = Memes(data, n, gen), create_head("rgcl", DIMS, embed_dim=dim).eval()
    with torch.no_grad():
        keys = torch.cat([head.memory_key(memes(min(CHUNK, n - s))) for s in range(0, n, CHUNK)])
        q = head.memory_key(memes(queries))
    row: dict = {"memes": n, "dim": dim, "load_average": round(os.getloadavg()[0], 2)}
    for kind, limit in (("exact", n), ("hnsw", 0)):
        t0 = time.perf_counter()
        index = InnerProductIndex(keys, approximate_after=limit)
        build = time.perf_counter() - t0
        times, cpu = [], []
        for i in range(len(q)):
            t0, c0 = time.perf_counter(), time.process_time()
            index.search(q[i:i + 1], 10)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        row[kind] = {"build_seconds": build, "p50_ms": 1000 * statistics.median(times),
                     "p50_cpu_ms": 1000 * statistics.median(cpu),
                     "recall_at_10": recall_at_k(index.search(q, 10)[1].numpy(),
                                                 exact_top_k(q.numpy(), keys.numpy(), 10)),
                     **index.params}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dim", type=int, default=384, help="width of the memory's embeddings")
    ap.add_argument("--data", choices=["gaussian", "clustered"], default="gaussian")
    ap.add_argument("--crossover", default="", help="sizes to time exact against HNSW at")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        torch.set_num_threads(args.threads)
        kept = json.loads(DATA.read_text()) if DATA.is_file() else {}
        runs = [run for run in kept.get("runs", []) if run["data"] != args.data or not args.sizes]
        command = (f"python -m benchmarks.memory_scale --sizes {shlex.quote(args.sizes)} --threads "
                   f"{args.threads} --dim {args.dim} --data {args.data}"
                   + f" --crossover {args.crossover}" * bool(args.crossover))
        machine = f"{os.cpu_count()} CPU cores"
        rows: list[dict] = []
        cross: dict = ({"command": command, "data": args.data, "machine": machine, "rows": []}
                       if args.crossover else kept.get("crossover"))
        run = {"provenance": provenance(threads=args.threads), "command": command,
               "data": args.data, "machine": machine, "rows": rows}

        def save() -> None:
            """After every size, so a run stopped at its time limit keeps what it measured."""
            atomic_write_text(DATA, json.dumps({
                "approximate_after": memory_layer.APPROXIMATE_AFTER,
                "recall_floor": memory_layer.RECALL_FLOOR,
                "runs": sorted([*runs, run] if args.sizes else runs, key=lambda r: r["data"]),
                "crossover": cross}, indent=1))

        for n in map(int, filter(None, args.crossover.split(","))):
            console.print(f"{n:,} memes, exact against HNSW ...")
            cross["rows"].append(crossover(n, args.queries, args.dim, args.data))
            console.print(cross["rows"][-1])
            save()
        for n in map(int, filter(None, args.sizes.split(","))):
            console.print(f"{n:,} memes ...")
            rows.append(measure(n, args.queries, args.dim, args.data))
            console.print(rows[-1])
            save()
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())

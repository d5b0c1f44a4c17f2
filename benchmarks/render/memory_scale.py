"""The memory-scale tables of docs/learned_space.md, from docs/data/memory_scale.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/memory_scale.json"), Path("docs/learned_space.md")


def index(params: dict[str, Any]) -> str:
    if params["kind"] == "exact":
        return "exact"
    return (f"HNSW {params['links']} links, efSearch {params['ef_search']} (held-out recall "
            f"{params['held_out_recall']:.3f})")


def run_block(run: dict[str, Any]) -> str:
    head = ["memes in memory", "width", "index", "time to add", "index build",
            "size on disk (index)", "load", "first search after load",
            "p50 one prediction + neighbours (CPU)", "p50 wall", "p95 wall", "recall@10 vs exact"]
    rows = [[f"{r['memes']:,}", str(r["dim"]), index(r["index"]), f"{r['add_seconds']:.1f} s",
             f"{r['index_seconds']:.1f} s",
             f"{r['bytes_on_disk'] / 2**20:,.0f} MiB ({r.get('index_bytes', 0) / 2**20:,.0f})",
             f"{r['load_seconds']:.1f} s", f"{1000 * r['first_search_seconds']:.1f} ms",
             f"{r['p50_cpu_ms']:.2f} ms",
             f"{r['p50_ms']:.2f} ms", f"{r['p95_ms']:.2f} ms",
             f"{r['recall_at_10']:.3f}"] for r in run["rows"]]
    return "\n".join([f"**{run['data']} memes.** `{run['command']}` ({run['machine']}; load "
                      "average at each row: " + ", ".join(f"{r['load_average']:.1f}"
                                                          for r in run["rows"]) + "):", "",
                      markdown_table(head, rows, "rrlrrrrrrrrr")])


def crossover_block(cross: dict[str, Any]) -> str:
    head = ["memes", "exact p50 (CPU)", "HNSW p50 (CPU)", "HNSW efSearch", "HNSW recall@10",
            "HNSW build", "load average"]
    rows = [[f"{c['memes']:,}", f"{c['exact']['p50_cpu_ms']:.2f} ms",
             f"{c['hnsw']['p50_cpu_ms']:.2f} ms",
             str(c["hnsw"]["ef_search"]), f"{c['hnsw']['recall_at_10']:.3f}",
             f"{c['hnsw']['build_seconds']:.1f} s", f"{c['load_average']:.1f}"]
            for c in cross["rows"]]
    return "\n".join([f"**Exact against HNSW** ({cross['data']} memes, the index alone, one query "
                      f"on one thread): `{cross['command']}` ({cross['machine']}):", "",
                      markdown_table(head, rows, "rrrrrrr")])


def markdown(data: dict[str, Any] | None) -> str:
    if not data:
        return "Not run yet: `python -m benchmarks.memory_scale`."
    return "\n\n".join(
        [f"Exact inner-product search (faiss `IndexFlatIP`) up to {data['approximate_after']:,} "
         f"memes, HNSW past that with efSearch the smallest reaching recall@10 "
         f">= {data['recall_floor']} on held-out rows.",
         *map(run_block, data["runs"]),
         *([crossover_block(data["crossover"])] if data.get("crossover") else [])])


def render(data: Path = DATA) -> None:
    replace_block(DOC, "memory_scale", markdown(load(data)))

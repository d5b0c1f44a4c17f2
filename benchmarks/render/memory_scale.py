"""The memory-scale table of docs/learned_space.md, from docs/data/memory_scale.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/memory_scale.json"), Path("docs/learned_space.md")


def markdown(data: dict[str, Any] | None) -> str:
    if not data:
        return "Not run yet: `python -m benchmarks.memory_scale`."
    head = ["memes in memory", "time to add", "size on disk", "load",
            "p50 one prediction + neighbours", "p95"]
    rows = [[f"{r['memes']:,}", f"{r['add_seconds']:.1f} s", f"{r['bytes_on_disk'] / 2**20:,.0f} MiB",
             f"{r['load_seconds']:.1f} s", f"{r['p50_ms']:.2f} ms", f"{r['p95_ms']:.2f} ms"]
            for r in data["rows"]]
    return (f"`{data['command']}`: exact inner-product search (faiss `IndexFlatIP`) up to "
            f"{data['approximate_after']:,} memes, HNSW past that.\n\n"
            + markdown_table(head, rows, "rrrrrr"))


def render(data: Path = DATA) -> None:
    replace_block(DOC, "memory_scale", markdown(load(data)))

"""The hash-list scale table of docs/serving.md, from docs/data/hash_scale.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/hash_scale.json"), Path("docs/serving.md")


def kind(row: dict[str, Any]) -> str:
    if row["kind"] == "flat":
        return "scan"
    return f"multi-hash {row['chunks']} x {row['bits']} bits, {row['flips']} flip(s)"


def markdown(data: dict[str, Any] | None) -> str:
    if not data:
        return "Not run yet: `python -m benchmarks.hash_scale`."
    head = ["hashes", "distance", "index", "build (CPU)", "memory", "lookups/s (one core)",
            "lookups/s (wall)", "recall of planted", "false matches"]
    rows = [[f"{r['hashes']:,}", str(r["distance"]), kind(r), f"{r['build_cpu_s']:.1f} s",
             f"{r['bytes'] / 2**20:,.0f} MiB", f"{r['lookups_per_s']:,.0f}",
             f"{r['lookups_per_wall_s']:,.0f}", f"{r['recall']:.3f}",
             f"{r['false_matches']} of {r['fresh']:,}"] for r in data["rows"]]
    text = [f"`{data['command']}` ({data['machine']}; load average at each row: "
            + ", ".join(f"{r['load_average']:.1f}" for r in data["rows"]) + "):", "",
            markdown_table(head, rows, "rrlrrrrrr")]
    if data["crossover"]:
        sizes = sorted({r["hashes"] for r in data["crossover"]})
        cells = {(r["hashes"], r["distance"]): r for r in data["crossover"]}
        distances = sorted({r["distance"] for r in data["crossover"]})
        names = {"flat": "scan", "multi_hash": "multi-hash"}
        text += ["", "Scan against multi-hash, lookups/s on one core (per CPU second), and the "
                 "kind the index picks from its cost model:", "",
                 markdown_table(["hashes", *(f"{h} within {d}" for d in distances
                                             for h in ("scan", "multi-hash", "picked"))],
                                [[f"{n:,}", *(cell for d in distances for cell in (
                                    f"{cells[n, d]['flat']:,.0f}",
                                    f"{cells[n, d]['multi_hash']:,.0f}",
                                    names[cells[n, d]['chosen']]))] for n in sizes],
                                "r" * (1 + 3 * len(distances)))]
    return "\n".join(text)


def render(data: Path = DATA) -> None:
    replace_block(DOC, "hash-scale", markdown(load(data)))

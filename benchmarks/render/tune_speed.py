"""The tuning-cost table of docs/learned_space.md, from docs/data/tune_speed.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/tune_speed.json"), Path("docs/learned_space.md")


def markdown(data: dict[str, Any] | None) -> str:
    if not data:
        return "Not run yet: `python -m benchmarks.tune_speed --data-root ../shared/data`."
    head = ["configuration", "trainable parameters", "memes / s", "minutes per epoch (8,500 memes)"]
    rows = [[r["label"], f"{r['trainable_params']:,}", f"{r['rows_per_second']:.1f}",
             f"{r['seconds_per_epoch'] / 60:.1f}"] for r in data["rows"]]
    return (f"`{data['command']}` (batch {data['batch_size']}, CPU threads "
            f"{data['provenance']['threads']}, a shared 2-core machine):\n\n"
            + markdown_table(head, rows, "lrrr"))


def render(data: Path = DATA) -> None:
    replace_block(DOC, "tune_speed", markdown(load(data)))

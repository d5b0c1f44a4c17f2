"""The extraction table per encoder runtime in docs/serving.md, from docs/data/extract.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table
from memetrm.utils import plural

DATA, DOC = Path("docs/data/extract.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    """Pure-forward vs end-to-end images/s for each runtime the last run measured."""
    r = load(data)
    if not r:
        return
    rows = [[rt, f"{v['forward']:.1f}", f"{v['end_to_end']:.1f}",
             f"{v['end_to_end'] / v['forward']:.2f}"] for rt, v in r["runtimes"].items()]
    replace_block(DOC, "extract-runtimes", "\n".join([
        f"`{r['command']}` ({r['images']} MultiOFF images, batch {r['batch']}, "
        f"{plural(r['workers'], 'decode worker')}, {plural(r['threads'], 'thread')}; "
        f"{r['machine']}):", "",
        markdown_table(["runtime", "forward img/s", "end-to-end img/s", "ratio (target >= 0.70)"],
                       rows, "lrrr")]))

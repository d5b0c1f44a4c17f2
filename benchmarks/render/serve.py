"""The load table in docs/serving.md, from docs/data/serve.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/serve.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    """The load table in docs/serving.md, from the JSON the last run wrote."""
    r = load(data)
    if not r:
        return
    rows = [[str(x["clients"]), str(x["requests"]), str(x["errors"]), f"{x['rps']:.2f}",
             *(f"{x[f'p{q}']:.0f}" for q in (50, 95, 99))] for x in r["runs"]]
    table = markdown_table(["clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"],
                           rows, "rrrrrrr")
    replace_block(DOC, "serve-load", "\n".join([
        f"`{r['command']}` ({r['mode']}, {r['duration']:g} s per client count; model "
        f"`{r['model']}`; {r['machine']}):", "", table, "",
        f"Server RSS: {r['rss_before_mb']:.0f} MB before the load, {r['rss_after_mb']:.0f} MB "
        f"after (peak {r['rss_peak_mb']:.0f} MB)."]))

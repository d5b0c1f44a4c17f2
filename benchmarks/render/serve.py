"""The load tables in docs/serving.md, from docs/data/serve.json (one server, several client
counts) and docs/data/serve_runtimes.json (encoder runtime x repost cache)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/serve.json"), Path("docs/serving.md")
RUNTIMES_DATA = Path("docs/data/serve_runtimes.json")


def render(data: Path = DATA) -> None:
    """The load tables in docs/serving.md, from the JSON the last runs wrote."""
    render_runtimes()
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


def render_runtimes(data: Path = RUNTIMES_DATA) -> None:
    """The runtime x cache table in docs/serving.md."""
    r = load(data)
    if not r:
        return
    rows = [[x["runtime"], "on" if x["cache"] else "off",
             "half reposts" if x["reposts"] else "fresh", str(x["clients"]), f"{x['rps']:.1f}",
             *(f"{x[f'p{q}']:.0f}" for q in (50, 95, 99)), str(x["errors"])] for x in r["runs"]]
    table = markdown_table(["runtime", "cache", "memes", "clients", "req/s", "p50 ms", "p95 ms",
                            "p99 ms", "errors"], rows, "lllrrrrrr")
    replace_block(DOC, "serve-runtimes", "\n".join([
        f"`{r['command']}` ({r['duration']:g} s per row; {r['machine']}):", "", table]))

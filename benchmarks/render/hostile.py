"""The hostile-client table in docs/serving.md, from docs/data/hostile.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/hostile.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    """The hostile-client table in docs/serving.md, from the JSON the last run wrote."""
    r = load(data)
    if not r:
        return
    p, s, d = r["poisoned"], r["slow_clients"], r["degenerate_png"]
    rows = [
        ["poisoned batches: bursts of good requests + one lone-surrogate text",
         f"{p['good_failed']} of {p['bursts'] * p['good_per_burst']} good requests failed; "
         f"the bad one got {', '.join(map(str, sorted(set(p['bad_status']))))}"],
        [f"{s['clients']} slow clients trickling headers for {s['seconds']:g} s",
         f"{s['ok_within_1s']} of {s['probes']} `/health` probes answered 200 within 1 s "
         f"({100 * s['share_ok']:.0f}%)"],
        [f"a 4,000,000 x 10 PNG ({d['png_bytes']:,} bytes)",
         f"{d['status']} in {d['seconds']:.2f} s; server RSS {d['rss_before_mb']:.0f} -> "
         f"{d['rss_after_mb']:.0f} MB"],
    ]
    replace_block(DOC, "hostile", f"`{r['command']}` (server: `memetrm serve`, model "
                  f"`{Path(r['model']).name}`):\n\n" + markdown_table(["attack", "result"], rows))

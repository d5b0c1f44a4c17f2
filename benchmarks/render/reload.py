"""How soon a running server follows writes to its folder, in docs/serving.md, from
docs/data/reload.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block

DATA, DOC = Path("docs/data/reload.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    r = load(data)
    if not r:
        return
    each = "; ".join(f"`{what}` {r['p50_s'][what]:.2f} s at the median, {r['max_s'][what]:.2f} s "
                     "at worst" for what in r["seconds"])
    replace_block(DOC, "reload", (
        f"`{r['provenance']['command']}` (a retrieval head on minilm-effnet, {r['trials']} writes "
        f"of each kind, load average {r['load_average']:.1f}): from a write's publication "
        f"(`config.json` replaced) to `/health` naming the new revision, {each}. "
        f"{r['requests']} predictions were sent meanwhile, {r['failed']} failed."))

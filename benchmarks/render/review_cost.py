"""The review database's cost per served request, in docs/serving.md, from
docs/data/review_cost.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block

DATA, DOC = Path("docs/data/review_cost.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    r = load(data)
    if not r:
        return
    replace_block(DOC, "review-cost", (
        f"`{r['command'].strip()}` ({r['requests']} requests per app, {r['image_kb']} KB JPEG "
        f"memes, {r['model']}; {r['machine']}): queueing a meme for review adds "
        f"{r['added_p50_ms']:.2f} ms to a request (median of the paired differences; p50 "
        f"{r['p50_ms_plain']:.1f} ms without the queue, {r['p50_ms_queued']:.1f} ms with it). The "
        f"database write alone takes {r['write_p50_ms']:.2f} ms at the median and "
        f"{r['write_p95_ms']:.2f} ms at p95 (target: p50 at most {r['target_ms']:g} ms)."))

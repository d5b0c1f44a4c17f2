"""The PDQ repost recall / false-match table in docs/serving.md, from docs/data/near_dup.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/near_dup.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    """Recall per repost transform and false matches, at each distance the last run measured.

    The distances come from the JSON (``memetrm.serving.hashing`` needs PIL, and its package
    torch); the first is the match distance ``PDQ_DISTANCE``, as ``benchmarks.near_dup`` orders
    them, and the one ``matched_pairs`` was listed at."""
    r = load(data)
    if not r:
        return
    distances = [int(t) for t in r["false"]]
    rows = [[name, f"{v['median_distance']:.0f}", *(f"{v[str(t)]:.3f}" for t in distances)]
            for name, v in r["recall"].items()]
    rows.append([f"false matches ({r['pairs']:,} distinct pairs)", "",
                 *(f"{r['false'][str(t)]['rate']:.5f} ({r['false'][str(t)]['pairs']})"
                   for t in distances)])
    table = markdown_table(["repost transform", "median distance",
                            *(f"recall at <= {t}" for t in distances)], rows,
                           "l" + "r" * (1 + len(distances)))
    pairs = r["matched_pairs"]
    far = [p for p in pairs if p[2] > 16]
    replace_block(DOC, "near-dup", "\n".join([
        f"`{r['command']}` ({r['images']} MultiOFF images, {r['low_quality']} below PDQ quality "
        f"50 and never matched; PDQ {r['hash_ms']:.1f} ms per image; {r['machine']}):", "",
        table, "",
        f"Distances of the {len(pairs)} distinct pairs within {distances[0]} bits: "
        + ", ".join(str(p[2]) for p in pairs) + ". Those above 16 bits: "
        + (", ".join(f"{a} / {b} ({d})" for a, b, d in far) if far else "none") + "."]))

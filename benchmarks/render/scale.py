"""The batch-scoring table in docs/scale.md, from docs/data/scale.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/scale.json"), Path("docs/scale.md")


def render(data: Path = DATA) -> None:
    """The engine table and the 1M-meme estimate in docs/scale.md."""
    r = load(data)
    if not r:
        return
    local = r["engines"]["local"]["items_per_s"]
    rows = [[name, f"{e['items_per_s']:.2f}", f"{e['items_per_s'] / local:.2f}x",
             f"{e['seconds']:.1f}", str(e["errors"])] for name, e in r["engines"].items()]
    est = r["estimate_1m"]
    replace_block(DOC, "scale", "\n".join([
        f"`{r['command']}`: {r['items']} memes ({r['machine']}).", "",
        markdown_table(["engine", "items/s (model loads included)", "vs local", "seconds",
                        "error rows"], rows, "lrrrr"),
        "", "Ray and local outputs: " + "; ".join(
            f"{name}: same ids {e['vs_local']['same_ids']}, same errors "
            f"{e['vs_local']['same_errors']}, max |prob difference| "
            f"{e['vs_local']['max_abs_prob_diff']:.1e}"
            for name, e in r["engines"].items() if "vs_local" in e) + ".",
        "", f"Estimate (not measured): 1M memes at the measured per-worker rate of "
            f"{est['per_worker_items_per_s']:.2f} items/s take {est['hours_per_worker']:.1f} "
            "worker-hours; N workers (CPU processes or GPUs) divide that by N if scaling stays "
            "linear, which holds while image decoding and the input store keep up. A GPU worker "
            "is far faster than a CPU one: measure it with `--gpus-per-worker 1` on your node."]))

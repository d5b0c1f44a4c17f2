"""Cost of contrastive text-tower tuning (``memetrm tune``) on this machine, per epoch.

Each configuration runs ``--steps`` optimizer steps on Hateful Memes training memes (the meme
as one sequence, ``text [SEP] caption``, padded per batch) with no dev scoring, and the
measured rows per second give the cost of one epoch over the 8,500 training memes. All rows
run in one process one after the other, so they share the machine's load; the ratios between
them are the result, the absolute seconds depend on that load. Writes
``docs/data/tune_speed.json``; the table in ``docs/learned_space.md`` is rendered from it.

    python -m benchmarks.tune_speed --data-root ../shared/data --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.render.tune_speed import DATA, render
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.training.tune import TuneConfig, tune_text_tower
from memetrm.utils import atomic_write_text

TRAIN_MEMES = 8500
ROWS = [
    ("MiniLM-L6, full tuning", {"tower": "all-MiniLM-L6-v2"}),
    ("MiniLM-L6, LoRA r=8", {"tower": "all-MiniLM-L6-v2", "lora_rank": 8}),
    ("MiniLM-L6, top 2 of 6 layers", {"tower": "all-MiniLM-L6-v2", "train_layers": 2}),
    ("mpnet-base, LoRA r=8", {"tower": "all-mpnet-base-v2", "lora_rank": 8}),
]


def from_run(path: Path) -> dict:
    """A row from the ``tuning.json`` of a real ``memetrm tune`` run (all its epochs)."""
    s = json.loads((path / "tuning.json").read_text())
    cfg = s["config"]
    mode = (f"LoRA r={cfg['lora_rank']}" if cfg["lora_rank"] else
            f"top {cfg['train_layers']} layers" if cfg["train_layers"] else "full tuning")
    label = (f"{cfg['tower']}, {mode}, a real {cfg['epochs']}-epoch run on {s['train_memes']:,} "
             f"memes ({s['steps']} steps)")
    return {"label": label, "settings": cfg, "steps": s["steps"],
            "trainable_params": s["trainable_params"], "rows_per_second": s["rows_per_second"],
            "seconds_per_epoch": TRAIN_MEMES / s["rows_per_second"],
            "threads": s["provenance"]["threads"]}


def measure(data_root: str | None, steps: int, batch_size: int, only: list[str]) -> dict:
    rows = []
    for label, over in ROWS:
        if only and not any(o in label for o in only):
            continue
        console.rule(label)
        cfg = TuneConfig(max_steps=steps, batch_size=batch_size, probe=False, **over)
        with tempfile.TemporaryDirectory() as out:
            s = tune_text_tower("hateful_memes", Path(out) / "tower", cfg, data_root=data_root,
                                log=console.print)
        rows.append({"label": label, "settings": over, "steps": s["steps"],
                     "trainable_params": s["trainable_params"],
                     "rows_per_second": s["rows_per_second"],
                     "seconds_per_epoch": TRAIN_MEMES / s["rows_per_second"]})
    return {"provenance": provenance(threads=torch.get_num_threads()), "batch_size": batch_size,
            "command": f"python -m benchmarks.tune_speed --threads {torch.get_num_threads()} "
                       f"--steps {steps}", "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated substrings of row labels")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="also report a finished memetrm tune run's folder (its tuning.json)")
    ap.add_argument("--run-only", action="store_true",
                    help="with --from-run: measure nothing, add the run to the stored rows")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        torch.set_num_threads(args.threads)
        data = (measure(args.data_root, args.steps, args.batch_size,
                        [o for o in args.only.split(",") if o])
                if not args.run_only else json.loads(DATA.read_text()))
        if args.from_run:
            row = from_run(args.from_run)
            data["rows"] = [row] + [r for r in data["rows"] if r["label"] != row["label"]]
            if "--from-run" not in data["command"]:
                data["command"] += " --from-run DIR"
        atomic_write_text(DATA, json.dumps(data, indent=1))
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())

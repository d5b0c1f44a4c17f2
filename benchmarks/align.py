"""Alignment benchmark: every objective on MultiOFF and Open Clip Art -> docs/alignment.md.

    python -m benchmarks.align [--data-root ../shared/data] [--openclipart DIR] [--out runs/align]

Keeps the numbers in docs/data/alignment.json and rewrites only the generated block of the
doc, so the prose around it stays.
Prepares the Open Clip Art folder first if it is missing (needs ``apt-get install
openclipart-svg``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.render.align import DATA, render
from memetrm.alignment import AlignConfig, align_train_config, run_alignment
from memetrm.data.openclipart import DEFAULT_OUT, prepare_openclipart
from memetrm.utils import atomic_write_text

OBJECTIVES = ("clip", "meru", "itm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="holds multioff/ (default: MEMETRM_DATA)")
    ap.add_argument("--openclipart", type=Path, default=DEFAULT_OUT.expanduser())
    ap.add_argument("--out", type=Path, default=Path("runs/align"))
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    t0 = time.perf_counter()
    if not (args.openclipart / "train.jsonl").is_file():
        prepare_openclipart(out=args.openclipart)
    datasets = {"MultiOFF": "multioff", "Open Clip Art": str(args.openclipart)}
    runs = []
    for name, dataset in datasets.items():
        for objective in OBJECTIVES:
            run_dir = args.out / f"{name.lower().replace(' ', '-')}-{objective}"
            print(f"== {name} / {objective} -> {run_dir}", flush=True)
            m = run_alignment(dataset, run_dir, AlignConfig(objective=objective),
                              data_root=args.data_root, on_missing_image="skip",
                              tcfg=align_train_config(epochs=args.epochs))
            runs.append({**m, "name": name, "run_dir": str(run_dir)})
            r = m["retrieval"]
            print(f"   i2t R@1 {r['i2t_R@1']:.3f}  t2i R@1 {r['t2i_R@1']:.3f}  "
                  f"(chance {r['chance_R@1']:.3f})"
                  + (f"  zero-shot acc {m['zero_shot']['accuracy']:.3f}" if "zero_shot" in m
                     else ""), flush=True)
    atomic_write_text(DATA, json.dumps({
        "command": "python -m benchmarks.align " + " ".join(sys.argv[1:]),
        "seconds": time.perf_counter() - t0, "epochs": args.epochs,
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads", "runs": runs}, indent=2))
    render()


if __name__ == "__main__":
    main()

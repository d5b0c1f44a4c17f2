"""Alignment benchmark: every objective on MultiOFF and Open Clip Art -> docs/alignment.md.

    python benchmarks/align.py [--data-root ../shared/data] [--openclipart DIR] [--out runs/align]

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

from memetrm.alignment import AlignConfig, align_train_config, run_alignment
from memetrm.data.openclipart import DEFAULT_OUT, prepare_openclipart
from memetrm.evaluation.report import replace_block
from memetrm.utils import atomic_write_text

DOC, DATA = Path("docs/alignment.md"), Path("docs/data/alignment.json")
OBJECTIVES = ("clip", "meru", "itm")


def fmt(x: float) -> str:
    return f"{x:.3f}"


def results_block(data: dict) -> str:
    runs = data["runs"]
    lines = [f"Produced by `{data['command']}` in {data['seconds'] / 60:.1f} min on CPU "
             f"({data['machine']}); encoder `minilm-effnet`, seed 0, {data['epochs']} epochs, "
             "epoch chosen on the dev split by mean R@k, numbers on the test split.", "",
             "### Retrieval (test split; chance = k/N)", "",
             "| dataset | objective | N | i→t R@1 | R@5 | R@10 | t→i R@1 | R@5 | R@10 "
             "| chance R@1 / R@5 / R@10 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in runs:
        r = m["retrieval"]
        lines.append(
            f"| {m['name']} | {m['objective']} | {int(r['n'])} | "
            + " | ".join(fmt(r[f"{d}_R@{k}"]) for d in ("i2t", "t2i") for k in (1, 5, 10))
            + f" | {' / '.join(fmt(r[f'chance_R@{k}']) for k in (1, 5, 10))} |")
    lines += ["", "### Zero-shot classification of images from text prompts", "",
              "Geometry: cosine for `clip`/`itm` (ITM uses its contrastive space here), negative "
              "Lorentz distance for `meru`.", "",
              "| dataset | objective | classes | N | accuracy | majority baseline "
              "| balanced acc. | chance (balanced) | AUROC |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in runs:
        z = m.get("zero_shot")
        if z:
            lines.append(
                f"| {m['name']} | {m['objective']} | {len(z['classes'])} | {z['n']} | "
                f"{fmt(z['accuracy'])} | {fmt(z['majority_baseline'])} | "
                f"{fmt(z['balanced_accuracy'])} | {fmt(z['chance_balanced'])} | "
                f"{fmt(z['auroc']) if 'auroc' in z else '–'} |")
    lines += ["", "### MERU: distance from the origin vs text length", "",
              "| dataset | learned curvature | Spearman(words, d₀(text)) | mean d₀ text "
              "| mean d₀ image | plot |", "|---|---:|---:|---:|---:|---|"]
    for m in runs:
        s = m.get("specificity")
        if s:
            rho = s["spearman_words_vs_text_dist"]
            lines.append(
                f"| {m['name']} | {fmt(m['curvature'])} | {'–' if rho is None else fmt(rho)} | "
                f"{fmt(s['mean_text_dist'])} | {fmt(s['mean_image_dist'])} | "
                f"`{m['run_dir']}/specificity.png` |")
    return "\n".join(lines)


def render(data: Path = DATA) -> None:
    """The results section of docs/alignment.md, from the JSON the last run wrote."""
    if data.is_file():
        replace_block(DOC, "alignment", results_block(json.loads(data.read_text())))


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
        "command": "python benchmarks/align.py " + " ".join(sys.argv[1:]),
        "seconds": time.perf_counter() - t0, "epochs": args.epochs,
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads", "runs": runs}, indent=2))
    render()


if __name__ == "__main__":
    main()

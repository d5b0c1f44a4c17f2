"""The alignment section of docs/alignment.md, from docs/data/alignment.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block

DOC, DATA = Path("docs/alignment.md"), Path("docs/data/alignment.json")


def fmt(x: float) -> str:
    return f"{x:.3f}"


def results_block(data: dict[str, Any]) -> str:
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
    r = load(data)
    if r:
        replace_block(DOC, "alignment", results_block(r))
